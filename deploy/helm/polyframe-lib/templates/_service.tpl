{{/*
The web pods' ClusterIP Service; its port is named `http` and targets the named container port,
and, with `server.metricsPort` (gunicorn's master), a port `metrics` for the ServiceMonitor.
*/}}
{{- define "polyframe-lib.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "polyframe-lib.fullname" . }}
  labels:
    {{- include "polyframe-lib.labels" (dict "ctx" . "component" "web") | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "polyframe-lib.selectorLabels" (dict "ctx" . "component" "web") | nindent 4 }}
  ports:
    - name: http
      port: {{ .Values.service.port }}
      targetPort: http
      protocol: TCP
      appProtocol: http
    {{- if .Values.server.metricsPort }}
    - name: metrics
      port: {{ include "polyframe-lib.masterMetricsPort" . }}
      targetPort: metrics
      protocol: TCP
      appProtocol: http
    {{- end }}
{{- end -}}

{{/*
A headless Service of the outbox dispatcher's pods, only for Prometheus to find their
/metrics (port `metrics`): nothing calls the dispatcher.
*/}}
{{- define "polyframe-lib.outboxService" -}}
{{- if .Values.outbox.enabled }}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "polyframe-lib.fullname" . }}-outbox
  labels:
    {{- include "polyframe-lib.labels" (dict "ctx" . "component" "outbox") | nindent 4 }}
spec:
  type: ClusterIP
  clusterIP: None
  selector:
    {{- include "polyframe-lib.selectorLabels" (dict "ctx" . "component" "outbox") | nindent 4 }}
  ports:
    - name: metrics
      port: {{ .Values.outbox.metricsPort }}
      targetPort: metrics
      protocol: TCP
      appProtocol: http
{{- end }}
{{- end -}}
