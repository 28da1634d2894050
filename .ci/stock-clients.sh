#!/usr/bin/env bash
# Stock-client checks: the reference server driven by clients nobody here wrote.
#   - OpenAI's Python client (.ci/clients/openai_check.py): models, chat and completions,
#     streamed and not, parameters, refusals, 16 concurrent users;
#   - Triton's tritonclient[http] (.ci/clients/tritonclient_check.py): health, metadata, infer;
#   - promtool and a real Prometheus scrape (.ci/clients/prometheus_check.sh), with the
#     default names and with --metrics-names vllm;
#   - Toxiproxy's stock clients, npm's toxiproxy-node-client and PyPI's toxiproxy-python,
#     against `faultline proxy` (.ci/clients/toxiproxy_check.sh): proxies, toxics that slow
#     real traffic, populate, disable/enable, reset, version and the 409/404/400 errors.
# Installs what it needs (Debian's prometheus package; openai, tritonclient, numpy and
# toxiproxy-python from PyPI; toxiproxy-node-client with `npm ci` into the git-ignored
# .ci/clients/node/node_modules, which needs node and npm), builds the server and faultline
# if needed, starts each on loopback and always stops it.
# Usage: .ci/stock-clients.sh [SERVER_BINARY [FAULTLINE_BINARY]]
#        (defaults: target/debug/server, target/debug/faultline)
set -euo pipefail
cd "$(dirname "$0")/.."

server_bin=${1:-target/debug/server}
[[ -x $server_bin ]] || cargo build -p server

if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
    echo "== installing Debian's prometheus package (promtool, prometheus)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null) \
        || { echo "cannot install prometheus with apt-get" >&2; exit 1; }
fi
if ! python3 -c 'import openai, tritonclient.http, numpy' 2>/dev/null; then
    echo "== installing openai, tritonclient[http], numpy from PyPI"
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
        openai 'tritonclient[http]' numpy
fi

log=$(mktemp -d)
pid=""
stop_server() {
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    pid=""
}
trap 'stop_server; rm -rf "$log"' EXIT

# Starts the server with extra flags; sets $pid and $url once it prints `listening on ADDR`.
start_server() {
    "$server_bin" --listen 127.0.0.1:0 "$@" >"$log/out" 2>"$log/err" &
    pid=$!
    for _ in $(seq 1 300); do
        if grep -q '^listening on ' "$log/out" 2>/dev/null; then
            url="http://$(sed -n 's/^listening on //p' "$log/out" | head -1)"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || { cat "$log/err" >&2; echo "server exited at start" >&2; exit 1; }
        sleep 0.1
    done
    echo "server did not print 'listening on' within 30 s" >&2
    exit 1
}

start_server
echo "== OpenAI Python client against $url"
python3 .ci/clients/openai_check.py "$url"
echo "== tritonclient[http] against $url"
python3 .ci/clients/tritonclient_check.py "$url"
echo "== promtool and a Prometheus scrape against $url"
bash .ci/clients/prometheus_check.sh "$url"
stop_server

start_server --metrics-names vllm
echo "== promtool and a Prometheus scrape, --metrics-names vllm"
bash .ci/clients/prometheus_check.sh "$url"
stop_server

echo "== Toxiproxy clients against faultline proxy"
faultline_bin=${2:-target/debug/faultline}
[[ -x $faultline_bin ]] || cargo build -p faultline
bash .ci/clients/toxiproxy_check.sh "$faultline_bin"
echo "stock-client checks: all passed"
