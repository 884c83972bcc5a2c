{{/*
Names and labels, as in `helm create` and Helm's chart best practices.
Every template takes the calling chart's root context (`.`) unless it says otherwise.
*/}}

{{/* The chart's name, or nameOverride. */}}
{{- define "polyframe-lib.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release-qualified name of the chart's objects, or fullnameOverride. */}}
{{- define "polyframe-lib.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The full name another chart of the same release gets for its objects (its Service, its
Secret), by the same rule as polyframe-lib.fullname.
Usage: include "polyframe-lib.peerFullname" (dict "ctx" $ "peer" "admin-django")
*/}}
{{- define "polyframe-lib.peerFullname" -}}
{{- if contains .peer .ctx.Release.Name -}}
{{- .ctx.Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .ctx.Release.Name .peer | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* name-version, for the helm.sh/chart label. */}}
{{- define "polyframe-lib.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Selector labels: only labels that never change for the life of the objects.
Usage: include "polyframe-lib.selectorLabels" (dict "ctx" $ "component" "web")
*/}}
{{- define "polyframe-lib.selectorLabels" -}}
app.kubernetes.io/name: {{ include "polyframe-lib.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
All labels of an object: the selector labels and the informational ones.
Usage: include "polyframe-lib.labels" (dict "ctx" $ "component" "web")
*/}}
{{- define "polyframe-lib.labels" -}}
helm.sh/chart: {{ include "polyframe-lib.chart" .ctx }}
{{ include "polyframe-lib.selectorLabels" . }}
app.kubernetes.io/part-of: polyframe
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end -}}

{{/* The ServiceAccount of the long-running pods. */}}
{{- define "polyframe-lib.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "polyframe-lib.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The container image: repository:tag, or repository@digest when a digest is given.
The tag defaults to the chart's appVersion; `latest` is refused (also by the schema).
*/}}
{{- define "polyframe-lib.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion | toString -}}
{{- if eq $tag "latest" -}}
{{- fail "image.tag: `latest` is not a version; name one (or a digest)" -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* The Secret of the chart's own generated keys, or the one the values name. */}}
{{- define "polyframe-lib.secretName" -}}
{{- if .Values.secrets.existingSecret -}}
{{- tpl .Values.secrets.existingSecret . -}}
{{- else -}}
{{- include "polyframe-lib.fullname" . -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding this service's credential and the credentials it trusts. */}}
{{- define "polyframe-lib.credentialsSecretName" -}}
{{- if .Values.credentials.existingSecret -}}
{{- tpl .Values.credentials.existingSecret . -}}
{{- else -}}
{{- include "polyframe-lib.fullname" . -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the database URL: always given (an external database, or the umbrella chart's). */}}
{{- define "polyframe-lib.databaseSecretName" -}}
{{- $name := required "database.existingSecret: name the Secret that holds this service's database URL (key database.existingSecretKey)" .Values.database.existingSecret -}}
{{- tpl $name . -}}
{{- end -}}

{{/*
The proxies whose X-Forwarded-For (and -Proto) headers the web server believes
(server.forwardedAllowIps; uvicorn's and gunicorn's forwarded_allow_ips). The client address it
yields keys users-fastapi's per-address rate limits, so a pod that can forge the header must not
be believed. The value when set; empty: `*` when this service's NetworkPolicies are on (its web
port admits only the ingress controller, the release's own services and its `helm test` pod),
else `127.0.0.1`, the pod itself: no one (every request then counts as the ingress controller's).
*/}}
{{- define "polyframe-lib.forwardedAllowIps" -}}
{{- if .Values.server.forwardedAllowIps -}}
{{- .Values.server.forwardedAllowIps -}}
{{- else if .Values.networkPolicy.enabled -}}
*
{{- else -}}
127.0.0.1
{{- end -}}
{{- end -}}

{{/*
The custom resources the charts render, the API each needs and what serves it.
*/}}
{{- define "polyframe-lib.customResources" -}}
ServiceMonitor:
  api: monitoring.coreos.com/v1/ServiceMonitor
  install: the Prometheus Operator's CRDs (kube-prometheus-stack installs them)
PrometheusRule:
  api: monitoring.coreos.com/v1/PrometheusRule
  install: the Prometheus Operator's CRDs (kube-prometheus-stack installs them)
HTTPRoute:
  api: gateway.networking.k8s.io/v1/HTTPRoute
  install: the Gateway API CRDs (standard channel; the Traefik chart installs them)
{{- end -}}

{{/*
Fails the render when a custom resource the values switch on has no API in the cluster (its
CRD is not installed): said, naming what to install or which value to turn off, never skipped.
Offline (`helm template`), Helm knows no custom API unless told: --api-versions <api>.
Usage: include "polyframe-lib.requireApi" (dict "ctx" $ "kind" "ServiceMonitor" "switch" "serviceMonitor.enabled")
*/}}
{{- define "polyframe-lib.requireApi" -}}
{{- $resource := get (include "polyframe-lib.customResources" . | fromYaml) .kind -}}
{{- if not $resource -}}
{{- fail (printf "polyframe-lib.requireApi: %q is not a custom resource of these charts" .kind) -}}
{{- end -}}
{{- if not (.ctx.Capabilities.APIVersions.Has $resource.api) -}}
{{- fail (printf "%s is on (chart %s), but the cluster serves no %s: install %s, or set %s=false. (helm template, without a cluster: --api-versions %s)" .switch .ctx.Chart.Name $resource.api $resource.install .switch $resource.api) -}}
{{- end -}}
{{- end -}}
