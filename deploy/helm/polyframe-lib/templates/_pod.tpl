{{/*
Pieces every pod of a service shares: the restricted security context, the environment,
the mounted secret files, the writable /tmp.
*/}}

{{/* Pod-level security context: Pod Security Standard "restricted". */}}
{{- define "polyframe-lib.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.runAsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level security context: Pod Security Standard "restricted", read-only root. */}}
{{- define "polyframe-lib.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Where the secret files are mounted; `<PREFIX>_<NAME>_FILE` variables point below it. */}}
{{- define "polyframe-lib.secretsDir" -}}/etc/polyframe/secrets{{- end -}}

{{/*
The environment of every container of the service (web, outbox, migrations, so they see
the same settings, as `make up` gives every process of a service the same environment):
the service's own `<PREFIX>_*` variables (from its `<chart>.env` template), tracing, extras.
*/}}
{{- define "polyframe-lib.env" -}}
{{ include (printf "%s.env" .Chart.Name) . }}
# Libraries that want a home directory get the writable /tmp (the root file system is read-only).
- name: HOME
  value: /tmp
{{- if .Values.tracing.enabled }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ tpl (required "tracing.endpoint: the OTLP endpoint is required when tracing.enabled" .Values.tracing.endpoint) . | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ .Chart.Name | quote }}
- name: OTEL_TRACES_SAMPLER
  value: {{ .Values.tracing.sampler | quote }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ .Values.tracing.samplerArg | quote }}
{{- end }}
{{- range $name, $value := .Values.extraEnv }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* Volume mounts of every container: the secret files and the writable /tmp. */}}
{{- define "polyframe-lib.volumeMounts" -}}
- name: secrets
  mountPath: {{ include "polyframe-lib.secretsDir" . }}
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/*
Volumes of every pod. The secret files come from one or more Secrets (the service's own,
the platform's credentials), projected into one read-only folder, readable by the pod's group.
*/}}
{{- define "polyframe-lib.volumes" -}}
{{- include "polyframe-lib.volumesWith" (dict "ctx" . "extraFiles" list) -}}
{{- end -}}

{{/* The volumes, with more secret files: include "polyframe-lib.volumesWith" (dict "ctx" $ "extraFiles" (list …)) */}}
{{- define "polyframe-lib.volumesWith" -}}
{{- $files := concat (include (printf "%s.secretFiles" .ctx.Chart.Name) .ctx | fromYamlArray) .extraFiles -}}
{{- $bySecret := dict -}}
{{- range $files -}}
{{- $items := get $bySecret .secret | default list -}}
{{- $_ := set $bySecret .secret (append $items (dict "key" .key "path" .path)) -}}
{{- end -}}
- name: secrets
  projected:
    defaultMode: 0440
    sources:
    {{- range $secret := keys $bySecret | sortAlpha }}
      - secret:
          name: {{ $secret }}
          items:
            {{- toYaml (get $bySecret $secret) | nindent 12 }}
    {{- end }}
- name: tmp
  emptyDir:
    sizeLimit: {{ .ctx.Values.tmpVolume.sizeLimit }}
{{- end -}}

{{/*
An init container that waits until the database accepts TCP connections (host and port read
from the service's database URL, <PREFIX>_DATABASE_URL), at most
migrations.waitForDatabaseSeconds: the migration Job starts together with a fresh in-cluster
PostgreSQL and waits for it instead of failing its attempts.
Usage: include "polyframe-lib.waitForDatabase" .
*/}}
{{- define "polyframe-lib.waitForDatabase" -}}
{{- $urlVariable := printf "%s_DATABASE_URL" (include (printf "%s.prefix" .Chart.Name) .) -}}
- name: wait-for-database
  image: {{ include "polyframe-lib.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command:
    - python
    - -c
    - |
      import os, socket, sys, time
      from urllib.parse import urlsplit
      url = urlsplit(os.environ["{{ $urlVariable }}"])
      host, port = url.hostname, url.port or 5432
      deadline = time.monotonic() + {{ .Values.migrations.waitForDatabaseSeconds }}
      while True:
          try:
              socket.create_connection((host, port), timeout=3).close()
              print(f"database at {host}:{port} accepts connections", flush=True)
              break
          except OSError as exc:
              if time.monotonic() > deadline:
                  sys.exit(f"database at {host}:{port} unreachable: {exc}")
              time.sleep(2)
  env:
    - name: {{ $urlVariable }}
      valueFrom:
        secretKeyRef:
          name: {{ include "polyframe-lib.databaseSecretName" . }}
          key: {{ .Values.database.existingSecretKey }}
  securityContext:
    {{- include "polyframe-lib.containerSecurityContext" . | nindent 4 }}
  resources:
    {{- toYaml .Values.migrations.resources | nindent 4 }}
{{- end -}}

{{/*
An init container that waits until the service's migrations are applied (the check of the web
pods' /readyz: the database answers and is at the code's head), with the service's own command
(migrations.waitCommand, or the service's own) and settings, at most migrations.activeDeadlineSeconds (as long as the
migration Job may take). For what must not run on an older schema and has no readiness to hold
it back: the outbox dispatcher, the demo-staff Job. When the bound passes the container fails
(the kubelet starts it again, with back-off; a Job counts a failed pod).
Usage: include "polyframe-lib.waitForMigrations" .
*/}}
{{- define "polyframe-lib.waitForMigrations" -}}
- name: wait-for-migrations
  image: {{ include "polyframe-lib.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command:
    {{- $wait := include "polyframe-lib.command" (dict "ctx" . "value" .Values.migrations.waitCommand "name" "waitForMigrations") | fromYamlArray }}
    {{- toYaml (concat $wait (list "--timeout" (toString .Values.migrations.activeDeadlineSeconds))) | nindent 4 }}
  env:
    {{- include "polyframe-lib.env" . | nindent 4 }}
  securityContext:
    {{- include "polyframe-lib.containerSecurityContext" . | nindent 4 }}
  resources:
    {{- toYaml .Values.migrations.resources | nindent 4 }}
  volumeMounts:
    {{- include "polyframe-lib.volumeMounts" . | nindent 4 }}
{{- end -}}
