{{/* Prometheus Operator ServiceMonitor of the web Service (serviceMonitor.enabled): /metrics on port `http`. */}}
{{- define "polyframe-lib.serviceMonitor" -}}
{{- if .Values.serviceMonitor.enabled }}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include "polyframe-lib.fullname" . }}
  labels:
    {{- include "polyframe-lib.labels" (dict "ctx" . "component" "web") | nindent 4 }}
    {{- with .Values.serviceMonitor.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  selector:
    matchLabels:
      {{- include "polyframe-lib.selectorLabels" (dict "ctx" . "component" "web") | nindent 6 }}
  endpoints:
    - port: http
      path: /metrics
      scheme: http
      interval: {{ .Values.serviceMonitor.interval }}
      scrapeTimeout: {{ .Values.serviceMonitor.scrapeTimeout }}
{{- end }}
{{- end -}}
