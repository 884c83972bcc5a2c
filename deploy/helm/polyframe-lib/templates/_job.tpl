{{/*
The database migration Job (migrations.enabled): a pre-install and pre-upgrade hook, so the
schema is at head before any new pod starts. A failed Job stops the install or upgrade;
a completed one stays (for `kubectl logs`) until the next release replaces it. It runs as its
own ServiceAccount, a hook too (it must exist before Helm creates the ordinary objects).
Usage: include "polyframe-lib.migrationJob" (dict "ctx" $ "urlVariable" "USERS_DATABASE_URL")
*/}}
{{- define "polyframe-lib.migrationJob" -}}
{{- if .ctx.Values.migrations.enabled }}
{{- include "polyframe-lib.job" (dict "ctx" .ctx "component" "migrate" "command" .ctx.Values.migrations.command "hook" "pre-install,pre-upgrade" "urlVariable" .urlVariable "serviceAccount" (printf "%s-migrate" (include "polyframe-lib.fullname" .ctx)) "extraFiles" list) }}
{{- end }}
{{- end -}}

{{/*
A Job of the service run as a Helm hook, with the service's environment and secret files
(plus `extraFiles`: {secret, key, path} mounted beside them), after waiting for the database.
Usage: include "polyframe-lib.job" (dict "ctx" $ "component" "seed" "command" (list …)
         "hook" "post-install,post-upgrade" "urlVariable" "ADMIN_DATABASE_URL"
         "serviceAccount" "name" "extraFiles" (list …))
*/}}
{{- define "polyframe-lib.job" -}}
{{- $ctx := .ctx -}}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ include "polyframe-lib.fullname" $ctx }}-{{ .component }}
  labels:
    {{- include "polyframe-lib.labels" (dict "ctx" $ctx "component" .component) | nindent 4 }}
  annotations:
    helm.sh/hook: {{ .hook }}
    helm.sh/hook-weight: "0"
    helm.sh/hook-delete-policy: before-hook-creation
spec:
  backoffLimit: {{ $ctx.Values.migrations.backoffLimit }}
  activeDeadlineSeconds: {{ $ctx.Values.migrations.activeDeadlineSeconds }}
  template:
    metadata:
      labels:
        {{- include "polyframe-lib.labels" (dict "ctx" $ctx "component" .component) | nindent 8 }}
    spec:
      restartPolicy: Never
      serviceAccountName: {{ .serviceAccount }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      securityContext:
        {{- include "polyframe-lib.podSecurityContext" $ctx | nindent 8 }}
      {{- with $ctx.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- range $name, $_ := . }}
        - name: {{ $name }}
        {{- end }}
      {{- end }}
      initContainers:
        {{- include "polyframe-lib.waitForDatabase" . | nindent 8 }}
      containers:
        - name: {{ .component }}
          image: {{ include "polyframe-lib.image" $ctx }}
          imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
          command:
            {{- toYaml .command | nindent 12 }}
          env:
            {{- include "polyframe-lib.env" $ctx | nindent 12 }}
          resources:
            {{- toYaml $ctx.Values.migrations.resources | nindent 12 }}
          securityContext:
            {{- include "polyframe-lib.containerSecurityContext" $ctx | nindent 12 }}
          volumeMounts:
            {{- include "polyframe-lib.volumeMounts" $ctx | nindent 12 }}
      volumes:
        {{- include "polyframe-lib.volumesWith" (dict "ctx" $ctx "extraFiles" .extraFiles) | nindent 8 }}
      {{- with $ctx.Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $ctx.Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end -}}
