{{/*
A Deployment of the service.
  component "web":    the production server (the image's entry point), one worker process
                      per container, scaled with replicas; probes on /healthz and /readyz;
                      with `server.metricsPort` (gunicorn), the master's /metrics on port `metrics`.
  component "outbox": the audit-outbox dispatcher (`outbox.command`, or the service's own), one per release, its
                      /metrics and /livez on port `metrics` (probes: started and ready on
                      /metrics, alive on /livez); it starts once the migrations are applied
                      (init container wait-for-migrations).
Usage: include "polyframe-lib.deployment" (dict "ctx" $ "component" "web")
*/}}
{{- define "polyframe-lib.deployment" -}}
{{- $ctx := .ctx -}}
{{- $web := eq .component "web" -}}
{{- $spec := ternary $ctx.Values $ctx.Values.outbox $web -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "polyframe-lib.fullname" $ctx }}{{ if not $web }}-{{ .component }}{{ end }}
  labels:
    {{- include "polyframe-lib.labels" . | nindent 4 }}
spec:
  {{- if not (and $web $ctx.Values.autoscaling.enabled) }}
  replicas: {{ $spec.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 3
  selector:
    matchLabels:
      {{- include "polyframe-lib.selectorLabels" . | nindent 6 }}
  strategy:
    {{- if $web }}
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 0
      maxSurge: 1
    {{- else }}
    # One dispatcher at a time is the normal state; a rollout stops the old one first.
    type: Recreate
    {{- end }}
  template:
    metadata:
      labels:
        {{- include "polyframe-lib.labels" . | nindent 8 }}
        {{- with $ctx.Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $ctx.Values.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      serviceAccountName: {{ include "polyframe-lib.serviceAccountName" $ctx }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      securityContext:
        {{- include "polyframe-lib.podSecurityContext" $ctx | nindent 8 }}
      # Longer than the preStop pause plus the server's own drain of in-flight requests.
      terminationGracePeriodSeconds: {{ $spec.terminationGracePeriodSeconds }}
      {{- with $ctx.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- range $name, $_ := . }}
        - name: {{ $name }}
        {{- end }}
      {{- end }}
      {{- if not $web }}
      # Never dispatch on an older schema: the dispatcher starts once the migrations are applied.
      initContainers:
        {{- include "polyframe-lib.waitForMigrations" $ctx | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .component }}
          image: {{ include "polyframe-lib.image" $ctx }}
          imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
          {{- if not $web }}
          command:
            {{- include "polyframe-lib.command" (dict "ctx" $ctx "value" $ctx.Values.outbox.command "name" "outbox") | nindent 12 }}
          {{- end }}
          env:
            {{- include "polyframe-lib.env" $ctx | nindent 12 }}
            {{- if and $web $ctx.Values.server.metricsPort }}
            # gunicorn's master serves the merged /metrics of its worker(s) on port `metrics`
            # (service_kit.gunicorn), so a scrape never waits for a busy worker thread. That is
            # prometheus_client's multiprocess mode: the workers write their samples into a folder
            # of the /tmp emptyDir, which the master empties when it starts.
            - name: PROMETHEUS_MULTIPROC_DIR
              value: {{ include "polyframe-lib.multiprocessDir" $ctx }}
            - name: {{ include (printf "%s.prefix" $ctx.Chart.Name) $ctx }}_METRICS_BIND
              value: "0.0.0.0:{{ $ctx.Values.server.metricsPort }}"
            {{- end }}
            {{- if not $web }}
            # The dispatcher's own /metrics (backlog, deliveries, calls to admin-django).
            - name: {{ include (printf "%s.prefix" $ctx.Chart.Name) $ctx }}_OUTBOX_METRICS_BIND
              value: "0.0.0.0:{{ $ctx.Values.outbox.metricsPort }}"
            {{- end }}
          {{- if $web }}
          ports:
            - name: http
              containerPort: {{ $ctx.Values.server.port }}
              protocol: TCP
            {{- with $ctx.Values.server.metricsPort }}
            - name: metrics
              containerPort: {{ include "polyframe-lib.masterMetricsPort" $ctx }}
              protocol: TCP
            {{- end }}
          {{- include "polyframe-lib.probes" (dict "ctx" $ctx "port" "http" "started" "/healthz" "alive" "/healthz" "ready" "/readyz") | nindent 10 }}
          lifecycle:
            preStop:
              # Keep serving while the endpoints controller and the ingress drop this pod;
              # then SIGTERM starts the server's graceful drain.
              exec:
                command: ["sleep", "{{ $ctx.Values.server.preStopSleepSeconds }}"]
          {{- else }}
          ports:
            - name: metrics
              containerPort: {{ $ctx.Values.outbox.metricsPort }}
              protocol: TCP
          # /metrics answers from a thread of its own whatever the loop does: it shows the process
          # started with valid settings (startup) and can be scraped (readiness; a stuck dispatcher
          # stays scraped, its stale heartbeat and growing backlog age are what alert). /livez fails
          # once the loop completed no round within its stall bound (a statement waiting on a
          # lock, a call that never returns): liveness restarts it. A loop that runs but fails
          # stays alive and counts polyframe_outbox_loop_errors_total instead.
          {{- include "polyframe-lib.probes" (dict "ctx" $ctx "port" "metrics" "started" "/metrics" "alive" "/livez" "ready" "/metrics") | nindent 10 }}
          {{- end }}
          resources:
            {{- toYaml $spec.resources | nindent 12 }}
          securityContext:
            {{- include "polyframe-lib.containerSecurityContext" $ctx | nindent 12 }}
          volumeMounts:
            {{- include "polyframe-lib.volumeMounts" $ctx | nindent 12 }}
            {{- if and $web $ctx.Values.server.metricsPort }}
            # The multiprocess folder, a folder of the tmp emptyDir that exists before gunicorn
            # starts (kubelet creates the subPath; the kit's master only empties it).
            - name: tmp
              mountPath: {{ include "polyframe-lib.multiprocessDir" $ctx }}
              subPath: {{ base (include "polyframe-lib.multiprocessDir" $ctx) }}
            {{- end }}
      volumes:
        {{- include "polyframe-lib.volumes" $ctx | nindent 8 }}
      {{- with $ctx.Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $ctx.Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if $web }}
      {{- with $ctx.Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- end }}
{{- end -}}

{{/*
The web pods' metrics port: `metrics` where gunicorn's master serves them on a port of its own
(`server.metricsPort`, legacy-flask and admin-django), else `http` (users-fastapi: one uvicorn
process answers /metrics on its own port). The Service, the ServiceMonitor and the
NetworkPolicy's Prometheus rule all use this name.
*/}}
{{- define "polyframe-lib.webMetricsPortName" -}}
{{- if .Values.server.metricsPort -}}metrics{{- else -}}http{{- end -}}
{{- end -}}

{{/* server.metricsPort, refused when it is the server's own port. */}}
{{- define "polyframe-lib.masterMetricsPort" -}}
{{- if eq (int .Values.server.metricsPort) (int .Values.server.port) -}}
{{- fail (printf "server.metricsPort: %v is server.port; gunicorn's master needs a port of its own" .Values.server.metricsPort) -}}
{{- end -}}
{{- .Values.server.metricsPort -}}
{{- end -}}

{{/* prometheus_client's multiprocess folder (PROMETHEUS_MULTIPROC_DIR), on the /tmp emptyDir. */}}
{{- define "polyframe-lib.multiprocessDir" -}}/tmp/prometheus-multiproc{{- end -}}

{{/*
Probes: started when `started` answers, alive while `alive` does, ready while `ready` does,
on the named port. For the web container: /healthz, /healthz and /readyz (database reachable,
migrations at head). The Host header is the pod's own address: the services answer /healthz,
/readyz and /metrics whatever the Host (admin-django in the kit's outermost middleware, before
Django's host check).
Usage: include "polyframe-lib.probes" (dict "ctx" $ "port" "http" "started" "/healthz" "alive" "/healthz" "ready" "/readyz")
*/}}
{{- define "polyframe-lib.probes" -}}
{{- $probes := .ctx.Values.probes -}}
startupProbe:
  httpGet:
    path: {{ .started }}
    port: {{ .port }}
  periodSeconds: {{ $probes.startup.periodSeconds }}
  timeoutSeconds: {{ $probes.startup.timeoutSeconds }}
  failureThreshold: {{ $probes.startup.failureThreshold }}
livenessProbe:
  httpGet:
    path: {{ .alive }}
    port: {{ .port }}
  periodSeconds: {{ $probes.liveness.periodSeconds }}
  timeoutSeconds: {{ $probes.liveness.timeoutSeconds }}
  failureThreshold: {{ $probes.liveness.failureThreshold }}
readinessProbe:
  httpGet:
    path: {{ .ready }}
    port: {{ .port }}
  periodSeconds: {{ $probes.readiness.periodSeconds }}
  timeoutSeconds: {{ $probes.readiness.timeoutSeconds }}
  failureThreshold: {{ $probes.readiness.failureThreshold }}
{{- end -}}
