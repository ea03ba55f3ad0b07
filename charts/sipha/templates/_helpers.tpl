{{- define "sipha.name" -}}{{ .Release.Name }}-operator{{- end -}}
{{- define "sipha.labels" -}}
app.kubernetes.io/name: sipha-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}
