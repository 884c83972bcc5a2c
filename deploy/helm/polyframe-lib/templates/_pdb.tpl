{{/* PodDisruptionBudget of the web pods (podDisruptionBudget.enabled). */}}
{{- define "polyframe-lib.pdb" -}}
{{- if .Values.podDisruptionBudget.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "polyframe-lib.fullname" . }}
  labels:
    {{- include "polyframe-lib.labels" (dict "ctx" . "component" "web") | nindent 4 }}
spec:
  maxUnavailable: {{ .Values.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "polyframe-lib.selectorLabels" (dict "ctx" . "component" "web") | nindent 6 }}
{{- end }}
{{- end -}}
