{{/*
NetworkPolicies of a service (networkPolicy.enabled): deny everything to and from the
service's pods, then allow exactly its edges of the call graph (from the chart's
`<chart>.callGraph` template), the ingress controller (to a routed web Service), Prometheus
(scraping /metrics), the `helm test` pod, DNS and the database.
Several NetworkPolicy documents from one template file (all of one kind).
*/}}
{{- define "polyframe-lib.networkPolicy" -}}
{{- if .Values.networkPolicy.enabled }}
{{- $graph := include (printf "%s.callGraph" .Chart.Name) . | fromYaml -}}
{{- $fullname := include "polyframe-lib.fullname" . -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ $fullname }}-default-deny
  labels:
    {{- include "polyframe-lib.labels" (dict "ctx" . "component" "network") | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      app.kubernetes.io/name: {{ include "polyframe-lib.name" . }}
      app.kubernetes.io/instance: {{ .Release.Name }}
  policyTypes: [Ingress, Egress]
{{- range $component := list "web" "outbox" "migrate" "seed" "test" }}
{{- $edges := get $graph $component | default dict }}
{{- if and (eq $component "outbox") (not (and (hasKey $graph "outbox") $.Values.outbox.enabled)) }}{{ continue }}{{ end }}
{{- if and (eq $component "migrate") (not $.Values.migrations.enabled) }}{{ continue }}{{ end }}
{{- if and (eq $component "seed") (not (and (hasKey $graph "seed") $.Values.demoStaff.enabled)) }}{{ continue }}{{ end }}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ $fullname }}-{{ $component }}
  labels:
    {{- include "polyframe-lib.labels" (dict "ctx" $ "component" "network") | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "polyframe-lib.selectorLabels" (dict "ctx" $ "component" $component) | nindent 6 }}
  policyTypes: [Ingress, Egress]
  {{- if eq $component "web" }}
  ingress:
    {{- if $edges.routed }}
    - from:
        - {{ include "polyframe-lib.networkPeer" $.Values.networkPolicy.ingressController | indent 10 | trim }}
      ports:
        - port: http
          protocol: TCP
    {{- end }}
    # Prometheus, on the port /metrics is served on (gunicorn's master: `metrics`).
    - from:
        - {{ include "polyframe-lib.networkPeer" $.Values.networkPolicy.prometheus | indent 10 | trim }}
      ports:
        - port: {{ include "polyframe-lib.webMetricsPortName" $ }}
          protocol: TCP
    - from:
        - podSelector:
            matchLabels:
              {{- include "polyframe-lib.selectorLabels" (dict "ctx" $ "component" "test") | nindent 14 }}
        {{- range $edges.callers }}
        - podSelector:
            matchLabels:
              {{- include "polyframe-lib.peerSelector" (dict "ctx" $ "peer" .) | nindent 14 }}
        {{- end }}
      ports:
        - port: http
          protocol: TCP
  {{- else if eq $component "outbox" }}
  ingress:
    # Only Prometheus, for the dispatcher's /metrics: nothing else calls it.
    - from:
        - {{ include "polyframe-lib.networkPeer" $.Values.networkPolicy.prometheus | indent 10 | trim }}
      ports:
        - port: metrics
          protocol: TCP
  {{- else }}
  ingress: []
  {{- end }}
  egress:
    - to:
        - {{ include "polyframe-lib.networkPeer" $.Values.networkPolicy.dns | indent 10 | trim }}
      ports:
        - port: 53
          protocol: UDP
        - port: 53
          protocol: TCP
    {{- if eq $component "test" }}
    - to:
        - podSelector:
            matchLabels:
              {{- include "polyframe-lib.selectorLabels" (dict "ctx" $ "component" "web") | nindent 14 }}
      ports:
        - port: http
          protocol: TCP
    {{- else }}
    - ports:
        - port: {{ $.Values.networkPolicy.database.port }}
          protocol: TCP
      {{- with $.Values.networkPolicy.database.to }}
      to:
        {{- tpl (toYaml .) $ | nindent 8 }}
      {{- end }}
    {{- end }}
    {{- with $edges.callees }}
    - to:
        {{- range . }}
        - podSelector:
            matchLabels:
              {{- include "polyframe-lib.peerSelector" (dict "ctx" $ "peer" .) | nindent 14 }}
        {{- end }}
      ports:
        - port: http
          protocol: TCP
    {{- end }}
    {{- if and (eq $component "web") $.Values.rateLimit }}
    {{- with $.Values.rateLimit.to }}
    # The Redis the replicas share their rate-limit counters in (rateLimit.storageUrl).
    - to:
        {{- tpl (toYaml .) $ | nindent 8 }}
      ports:
        - port: 6379
          protocol: TCP
    {{- end }}
    {{- end }}
    {{- if ne $component "test" }}
    {{- with $.Values.networkPolicy.extraEgress }}
    {{- tpl (toYaml .) $ | nindent 4 }}
    {{- end }}
    {{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* A NetworkPolicyPeer from a {namespaceSelector, podSelector} value; an empty namespaceSelector means this namespace. */}}
{{- define "polyframe-lib.networkPeer" -}}
{{- if .namespaceSelector -}}
namespaceSelector:
  matchLabels:
    {{- toYaml .namespaceSelector | nindent 4 }}
{{ end -}}
podSelector:
  matchLabels:
    {{- toYaml .podSelector | nindent 4 }}
{{- end -}}

{{/* Labels of another Polyframe service's pods: its chart name, the release, the component. */}}
{{- define "polyframe-lib.peerSelector" -}}
app.kubernetes.io/name: {{ .peer.name }}
app.kubernetes.io/instance: {{ tpl .ctx.Values.networkPolicy.peersRelease .ctx }}
app.kubernetes.io/component: {{ .peer.component }}
{{- end -}}
