{{/*
What is particular to the orders service; the library chart (polyframe-lib) does the rest.
The same environment, secret files and commands as `make up` gives the service
(tools/polyframe-dev/src/polyframe_dev/services.py), with cluster addresses.
*/}}

{{/* ORDERS_* settings of every container of the service. */}}
{{- define "legacy-flask.env" -}}
{{- $secrets := include "polyframe-lib.secretsDir" . -}}
- name: ORDERS_ENVIRONMENT
  value: {{ .Values.environment | quote }}
- name: ORDERS_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: ORDERS_INSTRUMENTATION
  value: {{ .Values.instrumentation | quote }}
- name: ORDERS_DRILLS
  value: {{ .Values.drills | quote }}
- name: ORDERS_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "polyframe-lib.databaseSecretName" . }}
      key: {{ .Values.database.existingSecretKey }}
- name: ORDERS_USERS_URL
  value: {{ tpl .Values.peers.usersUrl . | quote }}
- name: ORDERS_ADMIN_URL
  value: {{ tpl .Values.peers.adminUrl . | quote }}
- name: ORDERS_SERVICE_SECRET_FILE
  value: {{ $secrets }}/service-secret
- name: ORDERS_TRUSTED_SERVICES_FILE
  value: {{ $secrets }}/trusted-services.json
# gunicorn (legacy_flask.gunicorn_conf): bind address, one worker process per pod, its threads.
- name: ORDERS_BIND
  value: "0.0.0.0:{{ .Values.server.port }}"
- name: ORDERS_WORKERS
  value: "1"
- name: ORDERS_THREADS
  value: {{ .Values.server.threads | quote }}
- name: FORWARDED_ALLOW_IPS
  value: {{ include "polyframe-lib.forwardedAllowIps" . | quote }}
{{- end -}}

{{/* The prefix of the service's settings (`ORDERS_…`). */}}
{{- define "legacy-flask.prefix" -}}ORDERS{{- end -}}

{{/* The secret files under /etc/polyframe/secrets: {secret, key, path}. */}}
{{- define "legacy-flask.secretFiles" -}}
- secret: {{ include "polyframe-lib.credentialsSecretName" . }}
  key: {{ .Values.credentials.serviceSecretKey }}
  path: service-secret
- secret: {{ include "polyframe-lib.credentialsSecretName" . }}
  key: {{ .Values.credentials.trustedServicesKey }}
  path: trusted-services.json
{{- end -}}

{{/* Keys this chart generates (kept across upgrades): key -> kind. */}}
{{- define "legacy-flask.generatedSecrets" -}}
{{- if not .Values.credentials.existingSecret }}
{{ .Values.credentials.serviceSecretKey }}: token
{{ .Values.credentials.trustedServicesKey }}: emptyMap
{{- end }}
{{- end -}}

{{/*
The orders service in the call graph (ARCHITECTURE.md): it asks users-fastapi whether a
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
