{{/*
The Secret of the keys a service chart generates itself, from its `<chart>.generatedSecrets`
template: a map key -> kind, where kind is `rsa` (an RSA private key, PEM), `token` (43
random characters), `djangoKey` (50 random characters) or `emptyMap` (`{}`, a JSON map of
trusted credentials that is empty when the chart is installed on its own).

Generated once: on every later render the values already stored in the cluster are read
back with `lookup` and kept, so signing keys and credentials survive upgrades. Offline
(`helm template`, lint) lookup finds nothing and fresh values are shown.
An ordinary object of the release: updated in place by upgrades (with the same values), deleted
by `helm uninstall`. Nothing is rendered when every generated key is supplied by existing
Secrets (secrets.existingSecret, credentials.existingSecret).
*/}}
{{- define "polyframe-lib.secret" -}}
{{- $generated := include (printf "%s.generatedSecrets" .Chart.Name) . | fromYaml -}}
{{- if $generated }}
{{- $name := include "polyframe-lib.fullname" . -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $name -}}
{{- $stored := dict -}}
{{- if $existing }}{{ $stored = $existing.data | default dict }}{{ end }}
apiVersion: v1
kind: Secret
metadata:
  name: {{ $name }}
  labels:
    {{- include "polyframe-lib.labels" (dict "ctx" . "component" "secrets") | nindent 4 }}
type: Opaque
data:
  {{- range $key, $kind := $generated }}
  {{- if hasKey $stored $key }}
  {{ $key }}: {{ get $stored $key }}
  {{- else if eq $kind "rsa" }}
  {{ $key }}: {{ genPrivateKey "rsa" | b64enc }}
  {{- else if eq $kind "token" }}
  {{ $key }}: {{ randAlphaNum 43 | b64enc }}
  {{- else if eq $kind "djangoKey" }}
  {{ $key }}: {{ randAlphaNum 50 | b64enc }}
  {{- else if eq $kind "emptyMap" }}
  {{ $key }}: {{ "{}" | b64enc }}
  {{- else }}
  {{- fail (printf "polyframe-lib.secret: unknown kind %q for key %q" $kind $key) }}
  {{- end }}
  {{- end }}
{{- end }}
{{- end -}}
