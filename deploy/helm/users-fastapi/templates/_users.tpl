{{/*
What is particular to the users service; the library chart (polyframe-lib) does the rest.
The same environment, secret files and commands as `make up` gives the service
(tools/polyframe-dev/src/polyframe_dev/services.py), with cluster addresses.
*/}}

{{/* USERS_* settings of every container of the service. */}}
{{- define "users-fastapi.env" -}}
{{- $secrets := include "polyframe-lib.secretsDir" . -}}
- name: USERS_ENVIRONMENT
  value: {{ .Values.environment | quote }}
- name: USERS_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: USERS_INSTRUMENTATION
  value: {{ .Values.instrumentation | quote }}
- name: USERS_DRILLS
  value: {{ .Values.drills | quote }}
- name: USERS_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "polyframe-lib.databaseSecretName" . }}
      key: {{ .Values.database.existingSecretKey }}
- name: USERS_JWT_PRIVATE_KEY_FILE
  value: {{ $secrets }}/jwt-private-key.pem
- name: USERS_SERVICE_SECRET_FILE
  value: {{ $secrets }}/service-secret
- name: USERS_TRUSTED_SERVICES_FILE
  value: {{ $secrets }}/trusted-services.json
- name: USERS_ADMIN_URL
  value: {{ tpl .Values.peers.adminUrl . | quote }}
# uvicorn's own options (the image's entry point reads UVICORN_*): one worker process per pod.
- name: UVICORN_HOST
  value: "0.0.0.0"
- name: UVICORN_PORT
  value: {{ .Values.server.port | quote }}
- name: UVICORN_WORKERS
  value: "1"
- name: UVICORN_FORWARDED_ALLOW_IPS
  value: {{ include "polyframe-lib.forwardedAllowIps" . | quote }}
- name: UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN
  value: {{ .Values.server.gracefulShutdownSeconds | quote }}
{{- end -}}

{{/* The prefix of the service's settings (`USERS_…`). */}}
{{- define "users-fastapi.prefix" -}}USERS{{- end -}}

{{/* The secret files under /etc/polyframe/secrets: {secret, key, path}. */}}
{{- define "users-fastapi.secretFiles" -}}
- secret: {{ include "polyframe-lib.secretName" . }}
  key: jwt-private-key
  path: jwt-private-key.pem
- secret: {{ include "polyframe-lib.credentialsSecretName" . }}
  key: {{ .Values.credentials.serviceSecretKey }}
  path: service-secret
- secret: {{ include "polyframe-lib.credentialsSecretName" . }}
  key: {{ .Values.credentials.trustedServicesKey }}
  path: trusted-services.json
{{- end -}}

{{/* Keys this chart generates (kept across upgrades): key -> kind. */}}
{{- define "users-fastapi.generatedSecrets" -}}
{{- if not .Values.secrets.existingSecret }}
jwt-private-key: rsa
{{- end }}
{{- if not .Values.credentials.existingSecret }}
{{ .Values.credentials.serviceSecretKey }}: token
{{ .Values.credentials.trustedServicesKey }}: emptyMap
{{- end }}
{{- end -}}

{{/*
The users service in the call graph (ARCHITECTURE.md): legacy-flask asks whether a user is
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
