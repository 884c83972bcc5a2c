{{/* NOTES.txt of a service chart. */}}
{{- define "polyframe-lib.notes" -}}
{{- $fullname := include "polyframe-lib.fullname" . -}}
{{ .Chart.Name }} {{ .Chart.AppVersion }} is released as {{ .Release.Name }} in namespace {{ .Release.Namespace }}.

Web pods: {{ if .Values.autoscaling.enabled }}{{ .Values.autoscaling.minReplicas }}-{{ .Values.autoscaling.maxReplicas }} (autoscaled){{ else }}{{ .Values.replicaCount }}{{ end }}, one server process each, behind Service {{ $fullname }}:{{ .Values.service.port }}.
{{- if .Values.migrations.enabled }}
{{- $job := include "polyframe-lib.jobName" (dict "ctx" . "component" "migrate") }}
Migrations run in Job {{ $job }} (this revision's), started with the pods: the web pods
become ready{{ if (.Values.outbox | default dict).enabled }}, and the outbox dispatcher starts,{{ end }} once they are applied.
  kubectl --namespace {{ .Release.Namespace }} logs job/{{ $job }} --all-containers
{{- end }}

Readiness, from your machine:
  kubectl --namespace {{ .Release.Namespace }} port-forward service/{{ $fullname }} 8000:{{ .Values.service.port }} &
  curl -s localhost:8000/readyz
or in the cluster:
  helm test {{ .Release.Name }} --namespace {{ .Release.Namespace }}

{{- $generated := include (printf "%s.generatedSecrets" .Chart.Name) . | fromYaml }}
{{- if $generated }}
Generated Secret {{ $fullname }} ({{ keys $generated | sortAlpha | join ", " }}): created once and kept across
upgrades; `helm uninstall` deletes it with everything else (a new install generates new keys).
{{- end }}
Database URL: Secret {{ include "polyframe-lib.databaseSecretName" . }}, key {{ .Values.database.existingSecretKey }}.
{{- end -}}
