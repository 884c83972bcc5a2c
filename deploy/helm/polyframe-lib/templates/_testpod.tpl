{{/*
The `helm test` Pod: asks the service's /readyz through its Service (so DNS, the Service,
its selector and the named port are all exercised) and fails unless the answer is 200 with
status "ok" within tests.timeoutSeconds. It runs the service's own image (Python, no extra image).
*/}}
{{- define "polyframe-lib.testPod" -}}
{{- if .Values.tests.enabled }}
apiVersion: v1
kind: Pod
metadata:
  name: {{ include "polyframe-lib.fullname" . }}-test-readiness
  labels:
    {{- include "polyframe-lib.labels" (dict "ctx" . "component" "test") | nindent 4 }}
  annotations:
    helm.sh/hook: test
    helm.sh/hook-delete-policy: before-hook-creation
spec:
  restartPolicy: Never
  serviceAccountName: {{ include "polyframe-lib.serviceAccountName" . }}
  automountServiceAccountToken: false
  enableServiceLinks: false
  securityContext:
    {{- include "polyframe-lib.podSecurityContext" . | nindent 4 }}
  containers:
    - name: readiness
      image: {{ include "polyframe-lib.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      command:
        - python
        - -c
        - |
          import json, os, sys, time, urllib.error, urllib.request
          url = os.environ["READYZ_URL"]
          deadline = time.monotonic() + float(os.environ["TIMEOUT_SECONDS"])
          last = "no answer"
          while time.monotonic() < deadline:
              try:
                  with urllib.request.urlopen(url, timeout=5) as response:
                      body = json.load(response)
                      if response.status == 200 and body.get("status") == "ok":
                          print(f"{url}: ready {body}", flush=True)
                          sys.exit(0)
                      last = f"HTTP {response.status} {body}"
              except urllib.error.HTTPError as exc:
                  last = f"HTTP {exc.code} {exc.read()[:300]!r}"
              except OSError as exc:
                  last = repr(exc)
              time.sleep(2)
          sys.exit(f"{url}: not ready ({last})")
      env:
        - name: READYZ_URL
          value: http://{{ include "polyframe-lib.fullname" . }}:{{ .Values.service.port }}/readyz
        - name: TIMEOUT_SECONDS
          value: {{ .Values.tests.timeoutSeconds | quote }}
      resources:
        requests:
          cpu: 10m
          memory: 32Mi
        limits:
          cpu: 200m
          memory: 64Mi
      securityContext:
        {{- include "polyframe-lib.containerSecurityContext" . | nindent 8 }}
{{- end }}
{{- end -}}
