{{/*
What is particular to the admin service and not in its manifest; the library chart
(polyframe-lib) does the rest. Its environment and secret files are _manifest.tpl, generated
from services/admin-django/service.yaml (which `make up` reads too) by `make generate`.
The static files are collected into the image at build time (ADMIN_STATIC_ROOT is set there).
*/}}

{{/*
The host names Django accepts: the ingress's (allowedHosts) and the Service's own names (peers
and the `helm test` pod call it by them). Not the pod's IP: kubelet's probes and Prometheus come
by IP, but /healthz, /readyz and /metrics are answered by the kit's outermost middleware, before
Django's host check (service_kit.django.OPERATIONAL_VIEWS), and Prometheus scrapes gunicorn's
master on port `metrics`, which is not Django at all.
*/}}
{{- define "admin-django.allowedHosts" -}}
{{- $fullname := include "polyframe-lib.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- $hosts := concat .Values.allowedHosts (list $fullname (printf "%s.%s" $fullname $ns) (printf "%s.%s.svc" $fullname $ns) (printf "%s.%s.svc.cluster.local" $fullname $ns)) -}}
{{- $hosts | uniq | toJson -}}
{{- end -}}

{{/*
The admin service in the call graph (docs/architecture.md, "Who calls whom"): the producers' outbox dispatchers
deliver audit events to it; it calls users-fastapi and legacy-flask for the support console,
acting for a staff member. Routed at /admin and /api/audit.
*/}}
{{- define "admin-django.callGraph" -}}
web:
  routed: true
  callers:
    - {name: users-fastapi, component: outbox}
    - {name: legacy-flask, component: outbox}
  callees:
    - {name: users-fastapi, component: web}
    - {name: legacy-flask, component: web}
# The demo-staff Job (demoStaff.enabled) only reaches the database.
seed: {}
{{- end -}}
