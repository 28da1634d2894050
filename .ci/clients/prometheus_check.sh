#!/usr/bin/env bash
# Checks a running faultline server's /metrics with stock Prometheus tooling:
#   1. classic text format 0.0.4 (what curl and promtool get): its Content-Type, and
#      `promtool check metrics` reports nothing. Under `--metrics-names vllm` the one report
#      allowed is promtool's "metric names should not contain ':'" on `vllm:` names: a
#      style lint (colons are legal) that vLLM's own /metrics gets too.
#   2. OpenMetrics 1.0 (Accept asks for it): its Content-Type and `# EOF`; then a real
#      Prometheus server on a loopback port scrapes SERVER_URL in OpenMetrics
#      (`scrape_protocols: [OpenMetricsText1.0.0]` where the Prometheus has that setting,
#      2.49 and later; older ones ask for OpenMetrics first by default), and the check
#      waits until the target is up (up == 1), a faultline metric is queryable, and the
#      target's metadata shows the OpenMetrics parser read it (counter families named
#      without `_total`). Prometheus is stopped on exit, whatever happens.
#
# Usage: .ci/clients/prometheus_check.sh SERVER_URL      e.g. http://127.0.0.1:8080
# Needs curl, promtool and prometheus (Debian: apt-get install -y prometheus).
# Every wait is bounded by PROMETHEUS_CHECK_PATIENCE_S (default 60 s); exit 0 when all
# checks pass, 1 when one fails (it says which and why), 2 on bad usage or missing tools.
set -euo pipefail

usage() {
    echo "usage: $0 SERVER_URL   (e.g. http://127.0.0.1:8080)" >&2
    exit 2
}
[[ $# -eq 1 ]] || usage
server=${1%/}
[[ $server == http://* ]] || {
    echo "SERVER_URL must start with http:// (the server has no TLS): $server" >&2
    exit 2
}
target=${server#http://}
target=${target%%/*}
for tool in curl promtool prometheus; do
    command -v "$tool" >/dev/null || {
        echo "$tool not found: install it (Debian: apt-get install -y prometheus curl)" >&2
        exit 2
    }
done
patience_s=${PROMETHEUS_CHECK_PATIENCE_S:-60}

tmp=$(mktemp -d)
prom_pid=""
stop_prometheus() {
    [[ -n $prom_pid ]] || return 0
    kill "$prom_pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$prom_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$prom_pid" 2>/dev/null || true
    wait "$prom_pid" 2>/dev/null || true
    prom_pid=""
}
cleanup() {
    stop_prometheus
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# $1: headers file. Prints the Content-Type value.
content_type() {
    grep -i '^content-type:' "$1" | head -n 1 | cut -d: -f2- | tr -d '\r' | sed 's/^ *//'
}

# --- 1. classic text, promtool ---------------------------------------------------------
curl -sS --fail --max-time 10 -D "$tmp/classic.headers" -o "$tmp/classic.txt" \
    "$server/metrics" || fail "GET $server/metrics"
ctype=$(content_type "$tmp/classic.headers")
[[ $ctype == "text/plain; version=0.0.4; charset=utf-8" ]] ||
    fail "classic /metrics: Content-Type is '$ctype', expected text/plain; version=0.0.4; charset=utf-8"
! grep -q '^# EOF' "$tmp/classic.txt" || fail "classic /metrics ends with '# EOF' (OpenMetrics only)"
families=$(grep -c '^# TYPE ' "$tmp/classic.txt" || true)
rc=0
promtool check metrics <"$tmp/classic.txt" >"$tmp/promtool.txt" 2>&1 || rc=$?
tolerated="^vllm:[A-Za-z0-9_:]+ metric names should not contain ':'$"
colon_lints=$(grep -cE "$tolerated" "$tmp/promtool.txt" || true)
if grep -vE "$tolerated" "$tmp/promtool.txt" | grep -q . || [[ $rc -ne 0 && $rc -ne 3 ]]; then
    cat "$tmp/promtool.txt" >&2
    fail "promtool check metrics (exit $rc) reported the problems above"
fi
vllm_names=no
grep -q '^vllm:' "$tmp/classic.txt" && vllm_names=yes
lints=""
[[ $colon_lints -eq 0 ]] || lints=" but its ':' lint on $colon_lints vllm: families"
echo "ok: classic text 0.0.4 ($families families): promtool check metrics reports nothing$lints"

# --- 2. OpenMetrics: content type, then a real Prometheus scrape -------------------------
om_accept="application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
curl -sS --fail --max-time 10 -H "Accept: $om_accept" -D "$tmp/om.headers" -o "$tmp/om.txt" \
    "$server/metrics" || fail "GET $server/metrics (OpenMetrics)"
ctype=$(content_type "$tmp/om.headers")
[[ $ctype == "application/openmetrics-text; version=1.0.0; charset=utf-8" ]] ||
    fail "OpenMetrics /metrics: Content-Type is '$ctype'"
[[ $(tail -n 1 "$tmp/om.txt") == "# EOF" ]] || fail "OpenMetrics /metrics does not end with '# EOF'"

# An unreadable version leaves the default Accept, which asks for OpenMetrics first.
read -r major minor < <(prometheus --version 2>&1 |
    sed -n 's/^prometheus, version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p') || true
major=${major:-0} minor=${minor:-0}
protocols=""
if ((major > 2 || (major == 2 && minor >= 49))); then
    protocols="    scrape_protocols: [OpenMetricsText1.0.0]"
fi
cat >"$tmp/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: faultline
    metrics_path: /metrics
    static_configs:
      - targets: ["$target"]
$protocols
EOF

deadline=$((SECONDS + patience_s))
prom=""
# A free loopback port: a few random tries (another process may take one first).
for _ in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 20000))
    prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/data" \
        --web.listen-address="127.0.0.1:$port" --log.level=warn \
        >"$tmp/prometheus.log" 2>&1 &
    prom_pid=$!
    while ((SECONDS < deadline)) && kill -0 "$prom_pid" 2>/dev/null; do
        if curl -sf --max-time 2 "http://127.0.0.1:$port/-/ready" >/dev/null; then
            prom="http://127.0.0.1:$port"
            break 2
        fi
        sleep 0.2
    done
    stop_prometheus
    grep -q 'address already in use' "$tmp/prometheus.log" || break
done
if [[ -z $prom ]]; then
    cat "$tmp/prometheus.log" >&2
    fail "prometheus did not become ready within ${patience_s}s (log above)"
fi

# $1: PromQL. Prints the JSON answer.
query() {
    curl -sS --max-time 5 -G "$prom/api/v1/query" --data-urlencode "query=$1" || true
}
# $1: a metric name. Prints the target metadata Prometheus holds for it.
metadata() {
    curl -sS --max-time 5 -G "$prom/api/v1/targets/metadata" \
        --data-urlencode 'match_target={job="faultline"}' --data-urlencode "metric=$1" || true
}
up_is_1() {
    query 'up{job="faultline"}' | grep -qE '"value":\[[0-9.e+]+,"1"\]'
}
# $1: PromQL that selects series.
has_series() {
    query "$1" | grep -q '"result":\[{'
}
# $1: a family name that Prometheus holds counter metadata for.
is_counter_family() {
    metadata "$1" | grep -q '"type":"counter"'
}
# $1: what is awaited; the rest: a command that succeeds once it holds.
await() {
    local what=$1
    shift
    while ((SECONDS < deadline)); do
        "$@" && return 0
        sleep 0.2
    done
    curl -sS --max-time 5 "$prom/api/v1/targets" >&2 || true
    echo >&2
    fail "$what: not within ${patience_s}s (Prometheus's targets above)"
}
await "target up == 1" up_is_1
await "faultline_connections_open queryable" has_series 'faultline_connections_open{job="faultline"}'
if [[ $vllm_names == yes ]]; then
    await "vllm:num_requests_running queryable" has_series 'vllm:num_requests_running{job="faultline"}'
fi
# Read as OpenMetrics, a counter's metadata is under its family name; read as 0.0.4 it
# would be under `..._total` only.
await "counter metadata under the OpenMetrics family name (an OpenMetrics scrape)" \
    is_counter_family faultline_connections_rejected
stop_prometheus
echo "ok: OpenMetrics 1.0: Prometheus $major.$minor scraped it in OpenMetrics, target up == 1," \
    "faultline_connections_open$([[ $vllm_names == yes ]] && echo ' and vllm:num_requests_running') queryable"
