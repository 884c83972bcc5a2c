{{/*
Prometheus Operator ServiceMonitor (serviceMonitor.enabled): /metrics of the web Service
(component "web") on port `metrics` where gunicorn's master serves it (legacy-flask, admin-django),
else `http` (users-fastapi); or of the outbox dispatcher's headless Service on port `metrics`
(component "outbox").
Usage: include "polyframe-lib.serviceMonitor" (dict "ctx" $ "component" "web")
*/}}
{{- define "polyframe-lib.serviceMonitor" -}}
{{- $ctx := .ctx -}}
{{- $web := eq .component "web" -}}
{{- if and $ctx.Values.serviceMonitor.enabled (or $web $ctx.Values.outbox.enabled) }}
{{- include "polyframe-lib.requireApi" (dict "ctx" $ctx "kind" "ServiceMonitor" "switch" "serviceMonitor.enabled") }}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include "polyframe-lib.fullname" $ctx }}{{ if not $web }}-{{ .component }}{{ end }}
  labels:
    {{- include "polyframe-lib.labels" . | nindent 4 }}
    {{- with $ctx.Values.serviceMonitor.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  selector:
    matchLabels:
      {{- include "polyframe-lib.selectorLabels" . | nindent 6 }}
  endpoints:
    - port: {{ ternary (include "polyframe-lib.webMetricsPortName" $ctx) "metrics" $web }}
      path: /metrics
      scheme: http
      interval: {{ $ctx.Values.serviceMonitor.interval }}
      scrapeTimeout: {{ $ctx.Values.serviceMonitor.scrapeTimeout }}
{{- end }}
{{- end -}}
