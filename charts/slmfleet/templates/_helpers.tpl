{{/* Chart name. */}}
{{- define "slmfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the prefix of every object; kept short enough for a "-router-config" suffix. */}}
{{- define "slmfleet.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "slmfleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "slmfleet.labels" -}}
helm.sh/chart: {{ include "slmfleet.chart" . }}
app.kubernetes.io/name: {{ include "slmfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: slmfleet
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: include "slmfleet.selectorLabels" (list . "router") */}}
{{- define "slmfleet.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "slmfleet.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "slmfleet.operator.fullname" -}}
{{- printf "%s-operator" (include "slmfleet.fullname" .) }}
{{- end }}

{{- define "slmfleet.router.fullname" -}}
{{- printf "%s-router" (include "slmfleet.fullname" .) }}
{{- end }}

{{/* The ConfigMap the operator writes the router configuration into. */}}
{{- define "slmfleet.router.configMapName" -}}
{{- printf "%s-router-config" (include "slmfleet.fullname" .) }}
{{- end }}

{{- define "slmfleet.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "slmfleet.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "slmfleet.router.serviceAccountName" -}}
{{- if .Values.router.serviceAccount.create }}
{{- default (include "slmfleet.router.fullname" .) .Values.router.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.router.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* image reference: include "slmfleet.image" (list . .Values.router.image) */}}
{{- define "slmfleet.image" -}}
{{- $root := index . 0 -}}
{{- $image := index . 1 -}}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) }}
{{- end }}

{{/* Restricted Pod Security Standard: pod level. */}}
{{- define "slmfleet.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Restricted Pod Security Standard: container level. */}}
{{- define "slmfleet.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "slmfleet.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/* The operator's Pods as a NetworkPolicyPeer (it scrapes metrics). */}}
{{- define "slmfleet.operatorPeer" -}}
namespaceSelector:
  matchLabels:
    kubernetes.io/metadata.name: {{ .Release.Namespace }}
podSelector:
  matchLabels:
    {{- include "slmfleet.selectorLabels" (list . "operator") | nindent 4 }}
{{- end }}

{{/* Who may scrape metrics ports: the operator, then networkPolicy.metricsFrom. */}}
{{- define "slmfleet.metricsPeers" -}}
{{- $peers := list (include "slmfleet.operatorPeer" . | fromYaml) }}
{{- range .Values.networkPolicy.metricsFrom }}
{{- $peers = append $peers . }}
{{- end }}
{{- toJson $peers }}
{{- end }}

{{/* The Role (per tenant namespace) granting the router the Secrets policies reference. */}}
{{- define "slmfleet.router.secretsRoleName" -}}
{{- printf "%s-secrets" (include "slmfleet.router.configMapName" .) }}
{{- end }}

{{/* NetworkPolicy egress to the API server (and DNS), shared by both policies. */}}
{{- define "slmfleet.np.apiServerEgress" -}}
- to:
    {{- range .Values.networkPolicy.apiServer.cidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    {{- range .Values.networkPolicy.apiServer.ports }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
{{- if .Values.networkPolicy.dns.enabled }}
- to:
    - namespaceSelector: {}
  ports:
    - protocol: UDP
      port: 53
    - protocol: TCP
      port: 53
{{- end }}
{{- end }}
