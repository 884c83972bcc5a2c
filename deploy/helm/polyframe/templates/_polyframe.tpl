{{/* Helpers of the umbrella chart; names and labels come from polyframe-lib. */}}

{{/* The services of the platform, as named in deploy/routes.yaml and by their charts. */}}
{{- define "polyframe.services" -}}
[users-fastapi, legacy-flask, admin-django]
{{- end -}}

{{/* The routing table (files/routes.yaml is a symlink to deploy/routes.yaml), services that are enabled. */}}
{{- define "polyframe.routes" -}}
{{- $table := .Files.Get "files/routes.yaml" | fromYaml -}}
{{- if or (not $table) (hasKey $table "Error") -}}
{{- fail "files/routes.yaml (a symlink to deploy/routes.yaml) is missing or not YAML" -}}
{{- end -}}
{{- $routes := dict -}}
{{- range $service, $spec := $table.services -}}
{{- if not (has $service (include "polyframe.services" $ | fromYamlArray)) -}}
{{- fail (printf "deploy/routes.yaml names %q, which is not a service of this chart" $service) -}}
{{- end -}}
{{- if (index $.Values $service).enabled -}}
{{- $_ := set $routes $service $spec.prefixes -}}
{{- end -}}
{{- end -}}
{{- toYaml $routes -}}
{{- end -}}

{{/* The in-cluster PostgreSQL's name. */}}
{{- define "polyframe.postgresql.fullname" -}}
{{- printf "%s-postgresql" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of the in-cluster PostgreSQL. */}}
{{- define "polyframe.postgresql.selectorLabels" -}}
app.kubernetes.io/name: postgresql
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: database
{{- end -}}

{{/* All labels of the in-cluster PostgreSQL's objects. */}}
{{- define "polyframe.postgresql.labels" -}}
helm.sh/chart: {{ include "polyframe-lib.chart" . }}
{{ include "polyframe.postgresql.selectorLabels" . }}
app.kubernetes.io/part-of: polyframe
app.kubernetes.io/version: {{ .Values.postgresql.image.tag | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/*
The database and role of each service in the in-cluster PostgreSQL, and the SQLAlchemy/Django
URL scheme its driver needs (asyncpg for users-fastapi, psycopg 3 for the two others).
*/}}
{{- define "polyframe.postgresql.databases" -}}
users-fastapi: {database: users, role: users, scheme: "postgresql+asyncpg"}
legacy-flask: {database: orders, role: orders, scheme: "postgresql+psycopg"}
admin-django: {database: admin, role: admin, scheme: "postgresql"}
{{- end -}}

{{/* The environment of the PostgreSQL containers: the superuser, its data folder, the passwords. */}}
{{- define "polyframe.postgresql.env" -}}
- name: POSTGRES_USER
  value: postgres
- name: POSTGRES_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "polyframe.postgresql.fullname" . }}
      key: postgres-password
- name: PGDATA
  value: /var/lib/postgresql/data/pgdata
{{- range $service, $_ := include "polyframe.postgresql.databases" . | fromYaml }}
- name: {{ include "polyframe.postgresql.passwordVariable" $service }}
  valueFrom:
    secretKeyRef:
      name: {{ include "polyframe.postgresql.fullname" $ }}
      key: {{ $service }}-password
{{- end }}
{{- end -}}

{{/* The PostgreSQL containers' security context: its image's postgres user, read-only root. */}}
{{- define "polyframe.postgresql.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 999
runAsGroup: 999
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The environment variable of the PostgreSQL container holding a service's role password. */}}
{{- define "polyframe.postgresql.passwordVariable" -}}
{{- . | upper | replace "-" "_" }}_PASSWORD
{{- end -}}

{{/* A DNS-1123 name part from a file name: lower case, [a-z0-9-] only. */}}
{{- define "polyframe.fileId" -}}
{{- regexReplaceAll "[^a-z0-9-]+" (base . | trimSuffix (ext .) | lower) "-" | trimAll "-" -}}
{{- end -}}

{{/* The ServiceAccount (and Role, RoleBinding) of tests/e2e running in the cluster (e2eRunner). */}}
{{- define "polyframe.e2eRunner.name" -}}
{{- printf "%s-e2e" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The in-cluster Redis that users-fastapi's replicas share their rate-limit counters in (redis.enabled). */}}
{{- define "polyframe.redis.fullname" -}}
{{- printf "%s-redis" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of the in-cluster Redis. */}}
{{- define "polyframe.redis.selectorLabels" -}}
app.kubernetes.io/name: redis
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: rate-limits
{{- end -}}

{{/* All labels of the in-cluster Redis's objects. */}}
{{- define "polyframe.redis.labels" -}}
helm.sh/chart: {{ include "polyframe-lib.chart" . }}
{{ include "polyframe.redis.selectorLabels" . }}
app.kubernetes.io/part-of: polyframe
app.kubernetes.io/version: {{ .Values.redis.image.tag | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
