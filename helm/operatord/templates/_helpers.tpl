{{/* Chart name, truncated to the 63 characters of a label value. */}}
{{- define "operatord.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of every object name: "<release>-<chart>", or the release name alone when it
already contains the chart name. */}}
{{- define "operatord.fullname" -}}
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

{{- define "operatord.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "operatord.selectorLabels" -}}
app.kubernetes.io/name: {{ include "operatord.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The labels of every object, for the component "operator". */}}
{{- define "operatord.labels" -}}
{{ include "operatord.componentLabels" (list . "operator") }}
{{- end }}

{{/* The labels of every object, for a component: (list $ "test"). Built as one map, so a key
(commonLabels included) appears once whatever the values say. */}}
{{- define "operatord.componentLabels" -}}
{{- $ := index . 0 }}
{{- $labels := dict
  "helm.sh/chart" (include "operatord.chart" $)
  "app.kubernetes.io/name" (include "operatord.name" $)
  "app.kubernetes.io/instance" $.Release.Name
  "app.kubernetes.io/version" $.Chart.AppVersion
  "app.kubernetes.io/managed-by" $.Release.Service
  "app.kubernetes.io/component" (index . 1)
}}
{{- toYaml (merge $labels $.Values.commonLabels) }}
{{- end }}

{{/* Namespace of every namespaced object: namespaceOverride, else the release's. */}}
{{- define "operatord.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride }}
{{- end }}

{{- define "operatord.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "operatord.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* image.registry (else global.imageRegistry) / image.repository, then @digest or :tag. */}}
{{- define "operatord.image" -}}
{{- $registry := default (dig "imageRegistry" "" (.Values.global | default dict)) .Values.image.registry }}
{{- $repository := .Values.image.repository }}
{{- if $registry }}
{{- $repository = printf "%s/%s" (trimSuffix "/" $registry) $repository }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* API group of a resource type {apiVersion, kind, plural}: "" for the core group ("v1"). */}}
{{- define "operatord.apiGroup" -}}
{{- if contains "/" .apiVersion }}
{{- first (splitList "/" .apiVersion) }}
{{- end }}
{{- end }}

{{/* Resource plural of a type {apiVersion, kind, plural}. The chart cannot ask the API server
(no discovery at render time), so it uses `plural` when set and otherwise an English guess
from the kind: lowercase, then "es" after s/x/ch/sh, consonant+"y" -> "ies", else "s". */}}
{{- define "operatord.plural" -}}
{{- if .plural }}
{{- .plural }}
{{- else }}
{{- $k := lower .kind }}
{{- if eq $k "endpoints" }}
{{- $k }}
{{- else if regexMatch "(s|x|ch|sh)$" $k }}
{{- printf "%ses" $k }}
{{- else if regexMatch "[^aeiou]y$" $k }}
{{- printf "%sies" (trimSuffix "y" $k) }}
{{- else }}
{{- printf "%ss" $k }}
{{- end }}
{{- end }}
{{- end }}

{{/* "true" when a related type {apiVersion, kind, clusterScoped} is cluster-scoped, else "":
`clusterScoped` when set, otherwise a guess from the well-known cluster-scoped core kinds. */}}
{{- define "operatord.clusterScoped" -}}
{{- if hasKey . "clusterScoped" }}
{{- if .clusterScoped }}true{{ end }}
{{- else if has .kind (list "Namespace" "Node" "PersistentVolume" "StorageClass" "IngressClass" "PriorityClass") }}
{{- "true" }}
{{- end }}
{{- end }}

{{/* Name of the lease, as the daemon derives it. */}}
{{/* The number of replica shards (config.sharding.shards; 1 = a single leader lease). */}}
{{- define "operatord.shards" -}}
{{- int (dig "sharding" "shards" 1 .Values.config) }}
{{- end }}

{{- define "operatord.leaseName" -}}
{{- default (printf "%s-leader" .Values.config.name) .Values.config.leaderElection.leaseName }}
{{- end }}

{{/* Namespace of the lease: "" in the config means the pod's namespace (the release's). */}}
{{- define "operatord.leaseNamespace" -}}
{{- default (include "operatord.namespace" .) .Values.config.leaderElection.leaseNamespace }}
{{- end }}

{{- define "operatord.handlerConfigMapName" -}}
{{- default (printf "%s-handler" (include "operatord.fullname" .)) .Values.handlerCode.existingConfigMap }}
{{- end }}

{{/* The ConfigMap key of a handler file path: ConfigMap keys cannot hold "/", so a package
path "dbop/handler.py" is stored under "dbop.handler.py" and mounted back at its path. */}}
{{- define "operatord.handlerKey" -}}
{{- replace "/" "." . }}
{{- end }}

{{/* The `items` of the handler volume (indented for a configMap volume source): only when a
file of handlerCode.files lives in a package directory; flat files are mounted under their
keys as they are. */}}
{{- define "operatord.handlerItems" -}}
{{- $hc := .Values.handlerCode }}
{{- if and (not $hc.existingConfigMap) (regexMatch "/" (join "," (keys $hc.files))) }}
items:
  {{- range $path := keys $hc.files | sortAlpha }}
  - key: {{ include "operatord.handlerKey" $path | quote }}
    path: {{ $path | quote }}
  {{- end }}
{{- end }}
{{- end }}

{{/* The controllers the chart grants RBAC for, as a YAML list of {name, parent, children,
related}: config.controllers, or the one controller of the single-controller keys
(config.parent, children, related). */}}
{{- define "operatord.controllers" -}}
{{- $c := .Values.config }}
{{- if $c.controllers }}
{{- toYaml $c.controllers }}
{{- else }}
{{- toYaml (list (dict "name" $c.name "parent" $c.parent "children" ($c.children | default list) "related" ($c.related | default list))) }}
{{- end }}
{{- end }}

{{/* The types of a field ("children" or "related") over every controller, each
(apiGroup, plural) once, in the order of first appearance: RBAC is their union. */}}
{{- define "operatord.unionTypes" -}}
{{- $controllers := index . 0 }}
{{- $field := index . 1 }}
{{- $seen := dict }}
{{- $out := list }}
{{- range $controllers }}
{{- range (index . $field | default list) }}
{{- $key := printf "%s/%s" (include "operatord.apiGroup" .) (include "operatord.plural" .) }}
{{- if not (hasKey $seen $key) }}
{{- $_ := set $seen $key true }}
{{- $out = append $out . }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/* Where the watched types are granted, as YAML {clusterWide, namespaces, watchNamespaces}:
- config.namespaces of literal names only (no glob, no "!", no namespaceSelector): a Role in
  each of them, nothing cluster-wide;
- config.namespaces with a glob or a negation, or config.namespaceSelector: cluster-wide, and
  list/watch on Namespaces (matching namespaces come and go at run time);
- else config.namespace: a Role there; "" is cluster-wide. */}}
{{- define "operatord.rbacScope" -}}
{{- $c := .Values.config }}
{{- $names := $c.namespaces | default list }}
{{- $selector := $c.namespaceSelector | default "" }}
{{- $literal := true }}
{{- range $names }}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" .) }}
{{- $literal = false }}
{{- end }}
{{- end }}
{{- if or $selector (and $names (not $literal)) }}
{{- toYaml (dict "clusterWide" true "namespaces" list "watchNamespaces" true) }}
{{- else if $names }}
{{- toYaml (dict "clusterWide" false "namespaces" (uniq $names) "watchNamespaces" false) }}
{{- else if $c.namespace }}
{{- toYaml (dict "clusterWide" false "namespaces" (list $c.namespace) "watchNamespaces" false) }}
{{- else }}
{{- toYaml (dict "clusterWide" true "namespaces" list "watchNamespaces" false) }}
{{- end }}
{{- end }}

{{/* One controller of config.controllers as the config file holds it: the keys given, without
the chart-only ones (plural, clusterScoped); defaults are the daemon's (or the top-level
keys'), not the chart's. */}}
{{- define "operatord.controllerConfig" -}}
{{- $out := dict "name" .name "handler" .handler "parent" (dict "apiVersion" .parent.apiVersion "kind" .parent.kind) }}
{{- if hasKey . "pythonPath" }}
{{- $_ := set $out "pythonPath" .pythonPath }}
{{- end }}
{{- if hasKey . "children" }}
{{- $children := list }}
{{- range .children }}
{{- $child := dict "apiVersion" .apiVersion "kind" .kind }}
{{- if .updateStrategy }}
{{- $_ := set $child "updateStrategy" .updateStrategy }}
{{- end }}
{{- $children = append $children $child }}
{{- end }}
{{- $_ := set $out "children" $children }}
{{- end }}
{{- if .related }}
{{- $related := list }}
{{- range .related }}
{{- $r := dict "apiVersion" .apiVersion "kind" .kind }}
{{- if .labelSelector }}
{{- $_ := set $r "labelSelector" .labelSelector }}
{{- end }}
{{- if .cache }}
{{- $_ := set $r "cache" .cache }}
{{- end }}
{{- $related = append $related $r }}
{{- end }}
{{- $_ := set $out "related" $related }}
{{- end }}
{{- range $key := list "resyncSeconds" "handlerTimeoutSeconds" }}
{{- if hasKey $ $key }}
{{- $_ := set $out $key (index $ $key) }}
{{- end }}
{{- end }}
{{- if .backoff }}
{{- $_ := set $out "backoff" (pick .backoff "initialSeconds" "maxSeconds" "multiplier" "jitter") }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/* The operatord config file. Built key by key so chart-only keys (plural) never reach it:
operatord rejects unknown keys. */}}
{{- define "operatord.config" -}}
{{- $c := .Values.config }}
{{- $pythonPath := list }}
{{- range $c.pythonPath }}
{{- $pythonPath = append $pythonPath . }}
{{- end }}
{{- if .Values.handlerCode.enabled }}
{{- $pythonPath = append $pythonPath .Values.handlerCode.mountPath }}
{{- end }}
{{- $children := list }}
{{- range $c.children }}
{{- $children = append $children (dict "apiVersion" .apiVersion "kind" .kind "updateStrategy" (default "Replace" .updateStrategy)) }}
{{- end }}
{{- $related := list }}
{{- range $c.related }}
{{- $r := dict "apiVersion" .apiVersion "kind" .kind "labelSelector" (default "" .labelSelector) }}
{{- if .cache }}
{{- $_ := set $r "cache" .cache }}
{{- end }}
{{- $related = append $related $r }}
{{- end }}
{{- $le := $c.leaderElection }}
{{- $cfg := dict
  "name" $c.name
  "pythonPath" $pythonPath
  "inFlightPerWorker" $c.inFlightPerWorker
  "workerMemoryLimitMB" $c.workerMemoryLimitMB
  "resyncSeconds" $c.resyncSeconds
  "handlerTimeoutSeconds" $c.handlerTimeoutSeconds
  "backoff" (pick $c.backoff "initialSeconds" "maxSeconds" "multiplier" "jitter")
  "leaderElection" (pick $le "enabled" "leaseName" "leaseNamespace" "leaseDurationSeconds" "renewDeadlineSeconds" "retryPeriodSeconds")
  "sharding" (dict "shards" (int (dig "sharding" "shards" 1 $c)))
  "metrics" (dict "port" $c.metrics.port)
  "health" (dict "port" $c.health.port)
  "logging" (pick $c.logging "format" "level")
}}
{{- if $c.controllers }}
{{- $controllers := list }}
{{- range $c.controllers }}
{{- $controllers = append $controllers (fromYaml (include "operatord.controllerConfig" .)) }}
{{- end }}
{{- $_ := set $cfg "controllers" $controllers }}
{{- else }}
{{- $_ := set $cfg "handler" $c.handler }}
{{- $_ := set $cfg "parent" (dict "apiVersion" $c.parent.apiVersion "kind" $c.parent.kind) }}
{{- $_ := set $cfg "children" $children }}
{{- if $related }}
{{- $_ := set $cfg "related" $related }}
{{- end }}
{{- end }}
{{- if $c.namespaces }}
{{- $_ := set $cfg "namespaces" $c.namespaces }}
{{- end }}
{{- if $c.namespaceSelector }}
{{- $_ := set $cfg "namespaceSelector" $c.namespaceSelector }}
{{- end }}
{{- if not (or $c.namespaces $c.namespaceSelector) }}
{{- $_ := set $cfg "namespace" $c.namespace }}
{{- end }}
{{- if not (kindIs "invalid" $c.workers) }}
{{- $_ := set $cfg "workers" $c.workers }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/* Refuse value combinations the schema cannot express. */}}
{{- define "operatord.validate" -}}
{{- $c := .Values.config }}
{{- if and (gt (int .Values.replicaCount) 1) (not $c.leaderElection.enabled) }}
{{- fail "replicaCount > 1 needs config.leaderElection.enabled=true: replicas without an election would all reconcile at once" }}
{{- end }}
{{- if and (gt (int (dig "sharding" "shards" 1 $c)) 1) (not $c.leaderElection.enabled) }}
{{- fail "config.sharding.shards > 1 needs config.leaderElection.enabled=true: each shard is held through its own Lease" }}
{{- end }}
{{- if lt (float64 .Values.terminationGracePeriodSeconds) (addf (float64 $c.handlerTimeoutSeconds) 10.0) }}
{{- fail "terminationGracePeriodSeconds must be at least config.handlerTimeoutSeconds + 10: on SIGTERM operatord drains running syncs for handlerTimeoutSeconds + 5 s, then releases the lease" }}
{{- end }}
{{- if eq (int $c.metrics.port) (int $c.health.port) }}
{{- fail "config.metrics.port and config.health.port must differ" }}
{{- end }}
{{- if and .Values.handlerCode.enabled (not .Values.handlerCode.files) (not .Values.handlerCode.existingConfigMap) }}
{{- fail "handlerCode.enabled needs handlerCode.files or handlerCode.existingConfigMap" }}
{{- end }}
{{- $handlerKeys := dict }}
{{- range $path := keys .Values.handlerCode.files | sortAlpha }}
{{- if not (regexMatch "^[A-Za-z0-9_][-A-Za-z0-9_.]*(/[A-Za-z0-9_][-A-Za-z0-9_.]*)*$" $path) }}
{{- fail (printf "handlerCode.files: %q is not a usable file path. Use a file name (hello.py) or a path inside a package directory (dbop/handler.py, dbop/__init__.py): names of letters, digits, '_', '-' and '.', separated by '/', none starting with '.' (no absolute paths, no '..')" $path) }}
{{- end }}
{{- $key := include "operatord.handlerKey" $path }}
{{- if gt (len $key) 253 }}
{{- fail (printf "handlerCode.files: %q is longer than a ConfigMap key may be (253 characters)" $path) }}
{{- end }}
{{- if hasKey $handlerKeys $key }}
{{- fail (printf "handlerCode.files: %q and %q would share the ConfigMap key %q ('/' is stored as '.'); rename one" (index $handlerKeys $key) $path $key) }}
{{- end }}
{{- $_ := set $handlerKeys $key $path }}
{{- end }}
{{- if and $c.namespace (or $c.namespaces $c.namespaceSelector) }}
{{- fail "config.namespace cannot be combined with config.namespaces or config.namespaceSelector: list the namespace in config.namespaces instead" }}
{{- end }}
{{- $names := dict }}
{{- $parents := dict }}
{{- range $c.controllers }}
{{- if hasKey $names .name }}
{{- fail (printf "config.controllers: the name %q is used twice; each controller needs its own (it names its finalizer and metrics)" .name) }}
{{- end }}
{{- $_ := set $names .name true }}
{{- $parent := printf "%s %s" .parent.apiVersion .parent.kind }}
{{- if hasKey $parents $parent }}
{{- fail (printf "config.controllers: %q and %q both reconcile %s; a parent type belongs to one controller" (index $parents $parent) .name $parent) }}
{{- end }}
{{- $_ := set $parents $parent .name }}
{{- end }}
{{- if and $c.leaderElection.enabled (not (gt (float64 $c.leaderElection.leaseDurationSeconds) (float64 $c.leaderElection.renewDeadlineSeconds))) }}
{{- fail "config.leaderElection.leaseDurationSeconds must exceed renewDeadlineSeconds" }}
{{- end }}
{{- if and $c.leaderElection.enabled (not (gt (float64 $c.leaderElection.renewDeadlineSeconds) (mulf 1.2 $c.leaderElection.retryPeriodSeconds))) }}
{{- fail "config.leaderElection.renewDeadlineSeconds must exceed 1.2 * retryPeriodSeconds" }}
{{- end }}
{{- end }}

{{/* The alerting rules of the PrometheusRule (a YAML list); also rendered on their own by the
tests, which run them through promtool and a live Prometheus. */}}
{{- define "operatord.alertRules" -}}
{{- $pr := .Values.prometheusRule }}
{{- $t := $pr.thresholds }}
{{- $sel := printf "controller=%q,namespace=%q" .Values.config.name (include "operatord.namespace" .) }}
{{- /* The series of one controller (syncs, queue, backoff) carry that controller's name; with
config.controllers the alerts on them cover each controller, the daemon's own series (leader,
workers, API requests) keep config.name. */}}
{{- $ctlSel := $sel }}
{{- if .Values.config.controllers }}
{{- $names := list }}
{{- range .Values.config.controllers }}
{{- $names = append $names .name }}
{{- end }}
{{- $ctlSel = printf "controller=~%q,namespace=%q" (join "|" $names) (include "operatord.namespace" .) }}
{{- end }}
{{- $by := "namespace, controller" }}
{{- $runbook := trimSuffix "/" $pr.runbookBaseUrl }}
{{- $labels := $pr.alertLabels }}
- alert: OperatordTargetDown
  expr: up{ {{- $pr.targetSelector | default (printf "job=%q,namespace=%q" (include "operatord.name" .) (include "operatord.namespace" .)) -}} } == 0
  for: {{ $t.targetDownFor }}
  labels:
    severity: warning
    {{- with $labels }}{{ toYaml . | nindent 4 }}{{ end }}
  annotations:
    summary: An operatord pod cannot be scraped.
    description: '{{ "{{" }} $labels.instance {{ "}}" }} of {{ .Values.config.name }} has been down for {{ $t.targetDownFor }}: no metrics, and if it is the leader no reconciling.'
    runbook_url: {{ $runbook }}#operatordtargetdown
- alert: OperatordNoLeader
  expr: max by ({{ $by }}) (operatord_leader{ {{- $sel -}} }) < 1
  for: {{ $t.noLeaderFor }}
  labels:
    severity: critical
    {{- with $labels }}{{ toYaml . | nindent 4 }}{{ end }}
  annotations:
    summary: No operatord replica holds the leader lease.
    description: 'No replica of {{ "{{" }} $labels.controller {{ "}}" }} in {{ "{{" }} $labels.namespace {{ "}}" }} has been leader for {{ $t.noLeaderFor }}: nothing is reconciled.'
    runbook_url: {{ $runbook }}#operatordnoleader
- alert: OperatordSyncErrorRatioHigh
  expr: |-
    sum by ({{ $by }}) (rate(operatord_syncs_total{ {{- $ctlSel -}} ,result!~"ok|conflict"}[5m]))
      / sum by ({{ $by }}) (rate(operatord_syncs_total{ {{- $ctlSel -}} }[5m]))
      > {{ $t.syncErrorRatio }}
  for: {{ $t.syncErrorRatioFor }}
  labels:
    severity: warning
    {{- with $labels }}{{ toYaml . | nindent 4 }}{{ end }}
  annotations:
    summary: Many handler syncs fail.
    description: '{{ "{{" }} $value | humanizePercentage {{ "}}" }} of the syncs of {{ "{{" }} $labels.controller {{ "}}" }} failed (error, invalid, timeout or crash) over 5 minutes.'
    runbook_url: {{ $runbook }}#operatordsyncerrorratiohigh
- alert: OperatordQueueBacklogGrowing
  expr: |-
    sum by ({{ $by }}) (operatord_queue_depth{ {{- $ctlSel -}} }) > {{ $t.queueDepth }}
      and sum by ({{ $by }}) (delta(operatord_queue_depth{ {{- $ctlSel -}} }[15m])) > 0
  for: {{ $t.queueBacklogFor }}
  labels:
    severity: warning
    {{- with $labels }}{{ toYaml . | nindent 4 }}{{ end }}
  annotations:
    summary: The work queue keeps growing.
    description: '{{ "{{" }} $value {{ "}}" }} parents of {{ "{{" }} $labels.controller {{ "}}" }} wait for a worker and the queue grew over 15 minutes: the workers cannot keep up.'
    runbook_url: {{ $runbook }}#operatordqueuebackloggrowing
- alert: OperatordParentsStuckInBackoff
  expr: sum by ({{ $by }}) (operatord_parents_backing_off{ {{- $ctlSel -}} }) > {{ $t.parentsBackingOff }}
  for: {{ $t.parentsBackingOffFor }}
  labels:
    severity: warning
    {{- with $labels }}{{ toYaml . | nindent 4 }}{{ end }}
  annotations:
    summary: Parents keep failing and wait in backoff.
    description: '{{ "{{" }} $value {{ "}}" }} parents of {{ "{{" }} $labels.controller {{ "}}" }} have been retrying with backoff for {{ $t.parentsBackingOffFor }}.'
    runbook_url: {{ $runbook }}#operatordparentsstuckinbackoff
- alert: OperatordWorkerCrashLooping
  expr: sum by ({{ $by }}) (increase(operatord_worker_restarts_total{ {{- $sel -}} }[15m])) > {{ $t.workerRestarts }}
  labels:
    severity: warning
    {{- with $labels }}{{ toYaml . | nindent 4 }}{{ end }}
  annotations:
    summary: Worker processes keep dying.
    description: 'Worker processes of {{ "{{" }} $labels.controller {{ "}}" }} restarted {{ "{{" }} $value {{ "}}" }} times in 15 minutes (crash, out of memory or a handler past its deadline).'
    runbook_url: {{ $runbook }}#operatordworkercrashlooping
- alert: OperatordApiErrors
  expr: |-
    sum by ({{ $by }}) (rate(operatord_api_requests_total{ {{- $sel -}} ,code=~"5..|429|error"}[5m]))
      / sum by ({{ $by }}) (rate(operatord_api_requests_total{ {{- $sel -}} }[5m]))
      > {{ $t.apiErrorRatio }}
  for: {{ $t.apiErrorsFor }}
  labels:
    severity: warning
    {{- with $labels }}{{ toYaml . | nindent 4 }}{{ end }}
  annotations:
    summary: Kubernetes API requests fail.
    description: '{{ "{{" }} $value | humanizePercentage {{ "}}" }} of the API requests of {{ "{{" }} $labels.controller {{ "}}" }} got a 5xx, a 429 or no answer over 5 minutes.'
    runbook_url: {{ $runbook }}#operatordapierrors
- alert: OperatordParentDeletionStuck
  expr: max by ({{ $by }}) (operatord_parent_deletion_max_age_seconds{ {{- $sel -}} }) > {{ $t.parentDeletionStuckMinutes }} * 60
  for: {{ $t.parentDeletionStuckFor }}
  labels:
    severity: warning
    {{- with $labels }}{{ toYaml . | nindent 4 }}{{ end }}
  annotations:
    summary: A parent has been stuck in deletion.
    description: 'A parent of {{ "{{" }} $labels.controller {{ "}}" }} was deleted {{ "{{" }} $value | humanizeDuration {{ "}}" }} ago and is still there (more than {{ $t.parentDeletionStuckMinutes }} minutes): a finalizer, this operator''s or another''s, is not being removed.'
    runbook_url: {{ $runbook }}#operatordparentdeletionstuck
{{- end }}
