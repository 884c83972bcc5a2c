{{/*
What is particular to the admin service; the library chart (polyframe-lib) does the rest.
The same environment, secret files and commands as `make up` gives the service
(tools/polyframe-dev/src/polyframe_dev/services.py), with cluster addresses. The static
files are collected into the image at build time (ADMIN_STATIC_ROOT is set there).
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

{{/* ADMIN_* settings of every container of the service. */}}
{{- define "admin-django.env" -}}
{{- $secrets := include "polyframe-lib.secretsDir" . -}}
- name: ADMIN_ENVIRONMENT
  value: {{ .Values.environment | quote }}
- name: ADMIN_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: ADMIN_INSTRUMENTATION
  value: {{ .Values.instrumentation | quote }}
- name: ADMIN_DRILLS
  value: {{ .Values.drills | quote }}
- name: ADMIN_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "polyframe-lib.databaseSecretName" . }}
      key: {{ .Values.database.existingSecretKey }}
- name: ADMIN_SECRET_KEY_FILE
  value: {{ $secrets }}/secret-key
- name: ADMIN_SERVICE_SECRET_FILE
  value: {{ $secrets }}/service-secret
- name: ADMIN_TRUSTED_SERVICES_FILE
  value: {{ $secrets }}/trusted-services.json
- name: ADMIN_USERS_URL
  value: {{ tpl .Values.peers.usersUrl . | quote }}
- name: ADMIN_ORDERS_URL
  value: {{ tpl .Values.peers.ordersUrl . | quote }}
- name: ADMIN_ALLOWED_HOSTS
  value: {{ include "admin-django.allowedHosts" . | quote }}
- name: ADMIN_CSRF_TRUSTED_ORIGINS
  value: {{ .Values.csrfTrustedOrigins | toJson | quote }}
{{- if ne (toString .Values.secureCookies) "auto" }}
- name: ADMIN_SECURE_COOKIES
  value: {{ .Values.secureCookies | toString | quote }}
{{- end }}
# gunicorn (admin_django.gunicorn_conf): bind address, one worker process per pod, its threads.
- name: ADMIN_BIND
  value: "0.0.0.0:{{ .Values.server.port }}"
- name: ADMIN_WORKERS
  value: "1"
- name: ADMIN_THREADS
  value: {{ .Values.server.threads | quote }}
- name: FORWARDED_ALLOW_IPS
  value: {{ include "polyframe-lib.forwardedAllowIps" . | quote }}
{{- end -}}

{{/* The prefix of the service's settings (`ADMIN_…`). */}}
{{- define "admin-django.prefix" -}}ADMIN{{- end -}}

{{/* The secret files under /etc/polyframe/secrets: {secret, key, path}. */}}
{{- define "admin-django.secretFiles" -}}
- secret: {{ include "polyframe-lib.secretName" . }}
  key: secret-key
  path: secret-key
- secret: {{ include "polyframe-lib.credentialsSecretName" . }}
  key: {{ .Values.credentials.serviceSecretKey }}
  path: service-secret
- secret: {{ include "polyframe-lib.credentialsSecretName" . }}
  key: {{ .Values.credentials.trustedServicesKey }}
  path: trusted-services.json
{{- end -}}

{{/* Keys this chart generates (kept across upgrades): key -> kind. */}}
{{- define "admin-django.generatedSecrets" -}}
{{- if not .Values.secrets.existingSecret }}
secret-key: djangoKey
{{- end }}
{{- if not .Values.credentials.existingSecret }}
{{ .Values.credentials.serviceSecretKey }}: token
{{ .Values.credentials.trustedServicesKey }}: emptyMap
{{- end }}
{{- end -}}

{{/*
The admin service in the call graph (ARCHITECTURE.md): the producers' outbox dispatchers
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
