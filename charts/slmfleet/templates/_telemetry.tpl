{{/* Telemetry (decision log, review queue, tracing): what the router Pod gets. */}}

{{- define "slmfleet.postgres.fullname" -}}
{{- printf "%s-postgres" (include "slmfleet.fullname" .) }}
{{- end }}

{{/* The decision store's URL for store=postgres: the chart's server or telemetry.postgres.url. */}}
{{- define "slmfleet.postgres.url" -}}
{{- $pg := .Values.telemetry.postgres }}
{{- if $pg.enabled }}
{{- printf "postgresql://slmfleet@%s.%s.svc:5432/slmfleet" (include "slmfleet.postgres.fullname" .) .Release.Namespace }}
{{- else }}
{{- required "telemetry.postgres.url is required with decisionLog.store=postgres and postgres.enabled=false" $pg.url }}
{{- end }}
{{- end }}

{{- define "slmfleet.postgres.passwordSecret" -}}
{{- if .Values.telemetry.postgres.enabled }}
{{- include "slmfleet.postgres.fullname" . }}
{{- else }}
{{- .Values.telemetry.postgres.passwordSecret.name }}
{{- end }}
{{- end }}

{{- define "slmfleet.postgres.passwordKey" -}}
{{- if .Values.telemetry.postgres.enabled }}password{{ else }}{{ .Values.telemetry.postgres.passwordSecret.key }}{{ end }}
{{- end }}

{{- define "slmfleet.review.sessionSecret" -}}
{{- default (printf "%s-review-session" (include "slmfleet.fullname" .)) .Values.telemetry.review.sessionSecret.name }}
{{- end }}

{{- define "slmfleet.telemetry.env" -}}
{{- $t := .Values.telemetry }}
{{- $log := $t.decisionLog }}
{{- if and (eq $log.store "sqlite") (or .Values.router.autoscaling.enabled (gt (int .Values.router.replicas) 1)) }}
{{- fail "telemetry.decisionLog.store=sqlite keeps one store per router Pod (feedback and review cases would split between replicas): set router.replicas=1 without router.autoscaling, or use store=postgres" }}
{{- end }}
{{- $dir := "/var/run/secrets/slmfleet-telemetry" }}
{{- if eq $log.store "sqlite" }}
- name: SLMFLEET_DECISION_STORE
  value: "sqlite:///var/lib/slmfleet/decisions.db"
{{- else if eq $log.store "postgres" }}
- name: SLMFLEET_DECISION_STORE
  value: {{ include "slmfleet.postgres.url" . | quote }}
{{- if include "slmfleet.postgres.passwordSecret" . }}
- name: SLMFLEET_DECISION_STORE_PASSWORD_FILE
  value: {{ printf "%s/db/password" $dir | quote }}
{{- end }}
{{- end }}
{{- if $log.store }}
- name: SLMFLEET_DECISION_CONTENT
  value: {{ $log.content | quote }}
- name: SLMFLEET_DECISION_CONTENT_MAX_CHARS
  value: {{ $log.contentMaxChars | int64 | quote }}
- name: SLMFLEET_DECISION_RETENTION_DAYS
  value: {{ $log.retentionDays | quote }}
- name: SLMFLEET_DECISION_MAX_ROWS
  value: {{ $log.maxRows | int64 | quote }}
{{- if $log.hashKeySecret.name }}
- name: SLMFLEET_DECISION_HASH_KEY_FILE
  value: {{ printf "%s/hash/key" $dir | quote }}
{{- end }}
- name: SLMFLEET_REVIEW_QUEUES_FILE
  value: /etc/slmfleet/review/queues.yaml
{{- if $t.review.reviewersSecret.name }}
- name: SLMFLEET_REVIEWERS_FILE
  value: {{ printf "%s/reviewers/reviewers.yaml" $dir | quote }}
{{- end }}
- name: SLMFLEET_REVIEW_SESSION_SECRET_FILE
  value: {{ printf "%s/session/key" $dir | quote }}
- name: SLMFLEET_REVIEW_LEASE_S
  value: {{ $t.review.leaseSeconds | int64 | quote }}
- name: SLMFLEET_REVIEW_MAX_WAIT_S
  value: {{ $t.review.maxWaitSeconds | int64 | quote }}
{{- with $t.review.publicUrl }}
- name: SLMFLEET_PUBLIC_URL
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- with $t.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ $t.tracing.protocol | quote }}
- name: OTEL_SERVICE_NAME
  value: slmfleet-router
- name: OTEL_TRACES_SAMPLER
  value: {{ $t.tracing.sampler | quote }}
{{- with $t.tracing.samplerArg }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}

{{- define "slmfleet.telemetry.volumeMounts" -}}
{{- $t := .Values.telemetry }}
{{- $dir := "/var/run/secrets/slmfleet-telemetry" }}
{{- if eq $t.decisionLog.store "sqlite" }}
- name: decisions
  mountPath: /var/lib/slmfleet
{{- end }}
{{- if $t.decisionLog.store }}
{{- if and (eq $t.decisionLog.store "postgres") (include "slmfleet.postgres.passwordSecret" .) }}
- name: telemetry-db
  mountPath: {{ printf "%s/db" $dir }}
  readOnly: true
{{- end }}
{{- if $t.decisionLog.hashKeySecret.name }}
- name: telemetry-hash
  mountPath: {{ printf "%s/hash" $dir }}
  readOnly: true
{{- end }}
{{- if $t.review.reviewersSecret.name }}
- name: telemetry-reviewers
  mountPath: {{ printf "%s/reviewers" $dir }}
  readOnly: true
{{- end }}
- name: telemetry-session
  mountPath: {{ printf "%s/session" $dir }}
  readOnly: true
- name: telemetry-queues
  mountPath: /etc/slmfleet/review
  readOnly: true
{{- end }}
{{- end }}

{{- define "slmfleet.telemetry.volumes" -}}
{{- $t := .Values.telemetry }}
{{- if eq $t.decisionLog.store "sqlite" }}
- name: decisions
  emptyDir:
    sizeLimit: {{ $t.decisionLog.sqliteSizeLimit }}
{{- end }}
{{- if $t.decisionLog.store }}
{{- if and (eq $t.decisionLog.store "postgres") (include "slmfleet.postgres.passwordSecret" .) }}
- name: telemetry-db
  secret:
    secretName: {{ include "slmfleet.postgres.passwordSecret" . }}
    items:
      - key: {{ include "slmfleet.postgres.passwordKey" . }}
        path: password
{{- end }}
{{- with $t.decisionLog.hashKeySecret }}
{{- if .name }}
- name: telemetry-hash
  secret:
    secretName: {{ .name }}
    items:
      - key: {{ .key }}
        path: key
{{- end }}
{{- end }}
{{- with $t.review.reviewersSecret }}
{{- if .name }}
- name: telemetry-reviewers
  secret:
    secretName: {{ .name }}
    items:
      - key: {{ .key }}
        path: reviewers.yaml
{{- end }}
{{- end }}
- name: telemetry-session
  secret:
    secretName: {{ include "slmfleet.review.sessionSecret" . }}
    items:
      - key: {{ $t.review.sessionSecret.key }}
        path: key
- name: telemetry-queues
  configMap:
    name: {{ printf "%s-review-queues" (include "slmfleet.fullname" .) }}
{{- end }}
{{- end }}

{{/* The operator's learning loop (learning.enabled): the decision store it reads. */}}
{{- define "slmfleet.learning.env" -}}
{{- if .Values.learning.enabled }}
{{- if ne .Values.telemetry.decisionLog.store "postgres" }}
{{- fail "learning.enabled reads the decision store: set telemetry.decisionLog.store=postgres (a SQLite store lives in the router Pod)" }}
{{- end }}
- name: SLMFLEET_LEARNING_STORE_URL
  value: {{ include "slmfleet.postgres.url" . | quote }}
{{- if include "slmfleet.postgres.passwordSecret" . }}
- name: SLMFLEET_LEARNING_STORE_PASSWORD_FILE
  value: /var/run/secrets/slmfleet-learning/password
{{- end }}
- name: SLMFLEET_LEARNING_TICK_SECONDS
  value: {{ .Values.learning.tickSeconds | quote }}
- name: SLMFLEET_LEARNING_TIMEOUT_SECONDS
  value: {{ .Values.learning.timeoutSeconds | quote }}
- name: SLMFLEET_LEARNING_CPU_SECONDS
  value: {{ .Values.learning.cpuSeconds | quote }}
{{- end }}
{{- end }}
