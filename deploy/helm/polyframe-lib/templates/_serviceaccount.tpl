{{/*
A ServiceAccount without token automount (the services never call the Kubernetes API).
  hook=false: the long-running pods' own (serviceAccount.create).
  hook=true:  the migration Job's own, created as a pre-install hook like the Job itself,
              since a pre-install hook runs before Helm creates the ordinary objects.
Usage: include "polyframe-lib.serviceAccount" (dict "ctx" $ "hook" false)
*/}}
{{- define "polyframe-lib.serviceAccount" -}}
{{- $ctx := .ctx -}}
{{- if .hook }}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "polyframe-lib.fullname" $ctx }}-migrate
  labels:
    {{- include "polyframe-lib.labels" (dict "ctx" $ctx "component" "migrate") | nindent 4 }}
  annotations:
    {{- include "polyframe-lib.prerequisiteHook" $ctx | nindent 4 }}
automountServiceAccountToken: false
{{- else if $ctx.Values.serviceAccount.create }}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "polyframe-lib.serviceAccountName" $ctx }}
  labels:
    {{- include "polyframe-lib.labels" (dict "ctx" $ctx "component" "web") | nindent 4 }}
  {{- with $ctx.Values.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: false
{{- end }}
{{- end -}}
