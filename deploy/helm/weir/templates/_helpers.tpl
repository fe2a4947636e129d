{{/* Names. */}}
{{- define "weir.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "weir.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "weir.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "weir.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one role: (dict "ctx" $ "component" "agent"). */}}
{{- define "weir.selectorLabels" -}}
app.kubernetes.io/name: {{ include "weir.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "weir.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "weir.agentServiceAccount" -}}
{{- if .Values.agent.serviceAccount.create }}
{{- default (printf "%s-agent" (include "weir.fullname" .)) .Values.agent.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.agent.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The control plane's URL as the agents and the compactor reach it; empty without one. */}}
{{- define "weir.controlPlaneUrl" -}}
{{- if .Values.controlPlane.enabled }}
{{- printf "http://%s-control-plane:%v" (include "weir.fullname" .) .Values.controlPlane.service.port }}
{{- else }}
{{- .Values.agent.controlPlaneUrl }}
{{- end }}
{{- end }}

{{/* The Secret holding the tokens. */}}
{{- define "weir.tokensSecret" -}}
{{- default (printf "%s-tokens" (include "weir.fullname" .)) .Values.tokens.existingSecret }}
{{- end }}

{{/* Checks that hold for the whole release; rendered once, from the agent ConfigMap. */}}
{{- define "weir.checks" -}}
{{- $cp := include "weir.controlPlaneUrl" . }}
{{- if and (or .Values.controlPlane.enabled .Values.compactor.enabled) (not .Values.lake.url) }}
{{- fail "lake.url must be set with controlPlane.enabled or compactor.enabled: every role must see one lake (s3://, gs://, az://)" }}
{{- end }}
{{- if and .Values.compactor.enabled (not $cp) }}
{{- fail "compactor.enabled needs a control plane: controlPlane.enabled or agent.controlPlaneUrl" }}
{{- end }}
{{- if and $cp (not .Values.tokens.existingSecret) }}
{{- if or (lt (len .Values.tokens.agentToken) 16) (and .Values.controlPlane.enabled (lt (len .Values.tokens.operatorToken) 16)) }}
{{- fail "tokens: set tokens.existingSecret, or tokens.agentToken and tokens.operatorToken (16 characters or more each)" }}
{{- end }}
{{- end }}
{{- if .Values.controlPlane.enabled }}
{{- if not (has .Values.controlPlane.index (list "postgres" "sled")) }}
{{- fail "controlPlane.index must be \"postgres\" or \"sled\"" }}
{{- end }}
{{- if and (eq .Values.controlPlane.index "postgres") (not .Values.controlPlane.postgres.existingSecret) }}
{{- fail "controlPlane.postgres.existingSecret must name a Secret holding the PostgreSQL URL (index \"postgres\")" }}
{{- end }}
{{- if and (eq .Values.controlPlane.index "sled") (gt (int .Values.controlPlane.replicas) 1) }}
{{- fail "controlPlane.index \"sled\" serves one replica: set controlPlane.replicas to 1, or use \"postgres\"" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The lake section shared by every role's config. */}}
{{- define "weir.lakeConfig" -}}
{{- $lake := dict }}
{{- with .Values.lake.url }}{{ $_ := set $lake "url" . }}{{ end }}
{{- with .Values.lake.options }}{{ $_ := set $lake "options" (deepCopy .) }}{{ end }}
{{- toYaml $lake }}
{{- end }}

{{/* The agent token as WEIR_CONTROL_PLANE__TOKEN (agents and the compactor). */}}
{{- define "weir.agentTokenEnv" -}}
- name: WEIR_CONTROL_PLANE__TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "weir.tokensSecret" . }}
      key: {{ .Values.tokens.agentTokenKey }}
{{- end }}

{{/* Admin probes (the admin port is named "admin"). */}}
{{- define "weir.probes" -}}
readinessProbe:
  httpGet: {path: /readyz, port: admin}
  periodSeconds: 10
livenessProbe:
  httpGet: {path: /livez, port: admin}
  periodSeconds: 20
  failureThreshold: 3
{{- end }}
