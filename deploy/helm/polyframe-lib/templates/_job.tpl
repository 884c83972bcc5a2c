{{/*
The database migration Job (migrations.enabled): an ordinary object of the release, never a
Helm hook. Its name carries the release revision (polyframe-lib.jobName): a Job's pod template
cannot change, so every install and upgrade is a new Job that migrates to the new code's head,
and Helm deletes the previous revision's. It is created together with everything else (the
in-cluster PostgreSQL included), so it first waits, bounded, for the database to accept
connections. Nothing waits for the Job itself: what must not run on an older schema waits for
the schema (the web pods' /readyz, the outbox dispatcher's and the seed Job's
wait-for-migrations init container). A completed Job stays (for `kubectl logs` and the e2e
suite's check) until the next revision replaces it or `helm uninstall` deletes it.
Usage: include "polyframe-lib.migrationJob" .
*/}}
{{- define "polyframe-lib.migrationJob" -}}
{{- if .Values.migrations.enabled }}
{{- include "polyframe-lib.job" (dict "ctx" . "component" "migrate" "command" (include "polyframe-lib.command" (dict "ctx" . "value" .Values.migrations.command "name" "migrate") | fromYamlArray) "waitFor" "database" "extraFiles" list) }}
{{- end }}
{{- end -}}

{{/*
A command line of the service: `value` when given (migrations.command, migrations.waitCommand,
outbox.command), else the service's own `name` from its `<chart>.commands` (generated from
services/<chart>/service.yaml).
Usage: include "polyframe-lib.command" (dict "ctx" $ "value" .Values.outbox.command "name" "outbox") | fromYamlArray
*/}}
{{- define "polyframe-lib.command" -}}
{{- $own := include (printf "%s.commands" .ctx.Chart.Name) .ctx | fromYaml -}}
{{- .value | default (get $own .name) | toYaml -}}
{{- end -}}

{{/*
The name of a Job of this revision: <fullname>-<component>-<revision>, within 63 characters.
Usage: include "polyframe-lib.jobName" (dict "ctx" $ "component" "migrate")
*/}}
{{- define "polyframe-lib.jobName" -}}
{{- $suffix := printf "-%s-%d" .component (int .ctx.Release.Revision) -}}
{{- $base := include "polyframe-lib.fullname" .ctx | trunc (int (sub 63 (len $suffix))) | trimSuffix "-" -}}
{{- printf "%s%s" $base $suffix -}}
{{- end -}}

{{/*
A Job of the service for this revision, with the service's environment, secret files (plus
`extraFiles`: {secret, key, path} mounted beside them) and ServiceAccount. Before its command an
init container waits, bounded: `waitFor` "database" (it accepts connections: the migration Job)
or "migrations" (they are applied: whatever needs the schema).
Pod failures: a pod that fails (the database not up within migrations.waitForDatabaseSeconds,
a connection dropped while PostgreSQL starts) is retried, migrations.backoffLimit times, with
the Job controller's growing back-off; a pod evicted or preempted is not counted; the whole Job
gives up after migrations.activeDeadlineSeconds.
Usage: include "polyframe-lib.job" (dict "ctx" $ "component" "seed" "command" (list …)
         "waitFor" "migrations" "extraFiles" (list …))
*/}}
{{- define "polyframe-lib.job" -}}
{{- $ctx := .ctx -}}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ include "polyframe-lib.jobName" . }}
  labels:
    {{- include "polyframe-lib.labels" (dict "ctx" $ctx "component" .component) | nindent 4 }}
spec:
  backoffLimit: {{ $ctx.Values.migrations.backoffLimit }}
  activeDeadlineSeconds: {{ $ctx.Values.migrations.activeDeadlineSeconds }}
  podFailurePolicy:
    rules:
      # A pod evicted, preempted or on a node that went away did not fail: start another.
      - action: Ignore
        onPodConditions:
          - type: DisruptionTarget
            status: "True"
  template:
    metadata:
      labels:
        {{- include "polyframe-lib.labels" (dict "ctx" $ctx "component" .component) | nindent 8 }}
    spec:
      restartPolicy: Never
      serviceAccountName: {{ include "polyframe-lib.serviceAccountName" $ctx }}
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
        {{- if eq .waitFor "database" }}
        {{- include "polyframe-lib.waitForDatabase" $ctx | nindent 8 }}
        {{- else if eq .waitFor "migrations" }}
        {{- include "polyframe-lib.waitForMigrations" $ctx | nindent 8 }}
        {{- else }}
        {{- fail (printf "polyframe-lib.job: waitFor is %q, not database or migrations" .waitFor) }}
        {{- end }}
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
