{{/* The web pods' ClusterIP Service; its port is named `http` and targets the named container port. */}}
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
{{- end -}}
