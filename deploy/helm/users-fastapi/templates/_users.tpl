{{/*
What is particular to the users service and not in its manifest; the library chart
(polyframe-lib) does the rest. Its environment and secret files are _manifest.tpl, generated
from services/users-fastapi/service.yaml (which `make up` reads too) by `make generate`.
*/}}

{{/*
The users service in the call graph (docs/architecture.md, "Who calls whom"): legacy-flask asks whether a user is
active and reads the JWKS, admin-django acts for staff; the outbox dispatcher delivers
audit events to admin-django. The web Service is routed by the ingress (/api/users).
*/}}
{{- define "users-fastapi.callGraph" -}}
web:
  routed: true
  callers:
    - {name: legacy-flask, component: web}
    - {name: admin-django, component: web}
  callees: []
outbox:
  callees:
    - {name: admin-django, component: web}
{{- end -}}
