{{/*
What is particular to the orders service and not in its manifest; the library chart
(polyframe-lib) does the rest. Its environment and secret files are _manifest.tpl, generated
from services/legacy-flask/service.yaml (which `make up` reads too) by `make generate`.
*/}}

{{/*
The orders service in the call graph (docs/architecture.md, "Who calls whom"): it asks users-fastapi whether a
user is active and reads its JWKS; admin-django acts for staff (any user's orders, refunds);
the outbox dispatcher delivers audit events to admin-django. Routed at /api/orders.
*/}}
{{- define "legacy-flask.callGraph" -}}
web:
  routed: true
  callers:
    - {name: admin-django, component: web}
  callees:
    - {name: users-fastapi, component: web}
outbox:
  callees:
    - {name: admin-django, component: web}
{{- end -}}
