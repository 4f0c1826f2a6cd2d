{{/*
The shared spend ledger (issue 9). mode none: each router replica keeps its own windows
(right for one replica); redis: this chart runs a small Redis with AOF persistence;
external: your Redis or Valkey (redis:// or rediss:// with a CA from a Secret).
*/}}
{{- define "slmfleet.ledger.redisName" -}}
{{ include "slmfleet.fullname" . }}-ledger
{{- end }}

{{- define "slmfleet.ledger.url" -}}
{{- if eq .Values.ledger.mode "redis" -}}
redis://{{ include "slmfleet.ledger.redisName" . }}.{{ .Release.Namespace }}.svc:6379/0
{{- else if eq .Values.ledger.mode "external" -}}
{{ required "ledger.external.url is required with ledger.mode=external" .Values.ledger.external.url }}
{{- end }}
{{- end }}

{{- define "slmfleet.ledger.passwordRef" -}}
{{- if eq .Values.ledger.mode "redis" -}}
name: {{ required "ledger.redis.auth.existingSecret is required with ledger.mode=redis" .Values.ledger.redis.auth.existingSecret }}
key: {{ .Values.ledger.redis.auth.key }}
{{- else if .Values.ledger.external.passwordSecret.name -}}
name: {{ .Values.ledger.external.passwordSecret.name }}
key: {{ .Values.ledger.external.passwordSecret.key }}
{{- end }}
{{- end }}

{{/* Environment of every process that reads or writes the ledger (router, operator). */}}
{{- define "slmfleet.ledger.env" -}}
{{- if ne .Values.ledger.mode "none" }}
- name: SLMFLEET_LEDGER_URL
  value: {{ include "slmfleet.ledger.url" . | quote }}
- name: SLMFLEET_LEDGER_KEY_PREFIX
  value: {{ .Values.ledger.keyPrefix | quote }}
- name: SLMFLEET_LEDGER_TIMEOUT_MS
  value: {{ .Values.ledger.timeoutMs | quote }}
{{- if include "slmfleet.ledger.passwordRef" . }}
- name: SLMFLEET_LEDGER_PASSWORD_FILE
  value: /var/run/secrets/slmfleet-ledger-auth/password
{{- end }}
{{- if and (eq .Values.ledger.mode "external") .Values.ledger.external.tls.caSecret.name }}
- name: SLMFLEET_LEDGER_CA_FILE
  value: /var/run/secrets/slmfleet-ledger/{{ .Values.ledger.external.tls.caSecret.key }}
{{- end }}
{{- end }}
{{- end }}

{{- define "slmfleet.ledger.volumeMounts" -}}
{{- if include "slmfleet.ledger.passwordRef" . }}
- name: ledger-auth
  mountPath: /var/run/secrets/slmfleet-ledger-auth
  readOnly: true
{{- end }}
{{- if and (eq .Values.ledger.mode "external") .Values.ledger.external.tls.caSecret.name }}
- name: ledger-ca
  mountPath: /var/run/secrets/slmfleet-ledger
  readOnly: true
{{- end }}
{{- end }}

{{- define "slmfleet.ledger.volumes" -}}
{{- with include "slmfleet.ledger.passwordRef" . | fromYaml }}
# The ledger's password as a file (not an environment variable), read at start-up.
- name: ledger-auth
  secret:
    secretName: {{ .name }}
    items:
      - key: {{ .key }}
        path: password
{{- end }}
{{- if and (eq .Values.ledger.mode "external") .Values.ledger.external.tls.caSecret.name }}
- name: ledger-ca
  secret:
    secretName: {{ .Values.ledger.external.tls.caSecret.name }}
{{- end }}
{{- end }}

{{/* Egress of the router and the operator to the chart's ledger (ledger.mode redis). An
external ledger is outside the release: allow it with networkPolicy.routerExtraEgress and
operatorExtraEgress. */}}
{{- define "slmfleet.np.ledgerEgress" -}}
{{- if eq .Values.ledger.mode "redis" -}}
- to:
    - podSelector:
        matchLabels:
          {{- include "slmfleet.selectorLabels" (list . "ledger") | nindent 10 }}
  ports:
    - protocol: TCP
      port: 6379
{{- end }}
{{- end }}
