{{/*
The ServiceAccount of every pod of the service (web, outbox, migration and seed Jobs, the
`helm test` pod), without token automount: the services never call the Kubernetes API.
Rendered with serviceAccount.create.
*/}}
{{- define "polyframe-lib.serviceAccount" -}}
{{- if .Values.serviceAccount.create }}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "polyframe-lib.serviceAccountName" . }}
  labels:
    {{- include "polyframe-lib.labels" (dict "ctx" . "component" "web") | nindent 4 }}
  {{- with .Values.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: false
{{- end }}
{{- end -}}
