#!/usr/bin/env bash
# Toxiproxy's stock clients against `faultline proxy`:
#   - npm's toxiproxy-node-client (.ci/clients/toxiproxy_node_check.mjs), pinned in
#     .ci/clients/node/package.json and package-lock.json, installed with `npm ci` into
#     .ci/clients/node/node_modules (git-ignored);
#   - PyPI's toxiproxy-python (.ci/clients/toxiproxy_python_check.py), pip-installed when
#     `import toxiproxy` fails.
# Each drives the API with the client's own calls against a real upstream the check starts:
# create, list, get, a latency toxic that slows requests, toxic update and removal, populate,
# disable (connections refused) and enable, reset, delete, version, and the 409/404/400
# errors the client turns into its own errors.
# Starts `FAULTLINE_BINARY proxy --listen 127.0.0.1:0 --seed SEED` (both clients take the
# API address, so a free port rather than Toxiproxy's 8474), runs both checks even if the
# first fails, then stops the proxy with SIGTERM and checks it exits 0 within 10 s; the
# proxy is stopped on every exit path.
#
# Usage: .ci/clients/toxiproxy_check.sh [FAULTLINE_BINARY]   (default: target/debug/faultline)
# Env: TOXIPROXY_CHECK_SEED (default 1), the proxy's --seed.
# Needs python3 and node 18+ with npm (Debian's nodejs and npm are apt-installed when
# missing). Exit 0 when every check passes, 1 when one fails, 2 on a missing tool or a
# proxy that does not start.
set -euo pipefail
cd "$(dirname "$0")/../.."

faultline=${1:-target/debug/faultline}
seed=${TOXIPROXY_CHECK_SEED:-1}
[[ -x $faultline ]] || {
    echo "no faultline binary at $faultline (cargo build -p faultline)" >&2
    exit 2
}
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "== installing Debian's nodejs and npm packages"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null) \
        || { echo "cannot install nodejs and npm with apt-get" >&2; exit 2; }
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
((node_major >= 18)) || {
    echo "node $(node --version) is too old: toxiproxy-node-client needs node 18 or later (fetch)" >&2
    exit 2
}
command -v python3 >/dev/null || { echo "python3 is needed for toxiproxy-python" >&2; exit 2; }

node_dir=.ci/clients/node
if [[ ! -f $node_dir/node_modules/toxiproxy-node-client/package.json ]] \
    || [[ $node_dir/package-lock.json -nt $node_dir/node_modules/.package-lock.json ]]; then
    echo "== installing toxiproxy-node-client (npm ci in $node_dir)"
    npm ci --prefix "$node_dir" --no-audit --no-fund --loglevel=error >/dev/null
fi
if ! python3 -c 'import toxiproxy.api' 2>/dev/null; then
    echo "== installing toxiproxy-python from PyPI"
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
        'toxiproxy-python==0.1.1'
fi

log=$(mktemp -d)
pid=""
stop_proxy() {
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    pid=""
}
trap 'stop_proxy; rm -rf "$log"' EXIT

started=$EPOCHREALTIME
"$faultline" proxy --listen 127.0.0.1:0 --seed "$seed" >"$log/out" 2>"$log/err" &
pid=$!
api=""
for _ in $(seq 1 300); do
    if grep -q '^listening on ' "$log/out" 2>/dev/null; then
        api="http://$(sed -n 's/^listening on \([^ ]*\).*/\1/p' "$log/out" | head -1)"
        break
    fi
    kill -0 "$pid" 2>/dev/null || {
        cat "$log/err" >&2
        echo "faultline proxy exited at start" >&2
        exit 2
    }
    sleep 0.1
done
[[ -n $api ]] || {
    echo "faultline proxy did not print 'listening on' within 30 s" >&2
    exit 2
}

failed=()
echo "== toxiproxy-node-client against faultline proxy at $api (seed $seed)"
node .ci/clients/toxiproxy_node_check.mjs "$api" || failed+=("toxiproxy-node-client")
echo "== toxiproxy-python against faultline proxy at $api (seed $seed)"
python3 .ci/clients/toxiproxy_python_check.py "$api" || failed+=("toxiproxy-python")

echo "== faultline proxy stops on SIGTERM"
kill -TERM "$pid"
rc=""
for _ in $(seq 1 100); do
    if ! kill -0 "$pid" 2>/dev/null; then
        rc=0
        wait "$pid" || rc=$?
        break
    fi
    sleep 0.1
done
if [[ $rc == 0 ]]; then
    echo "ok   exited 0"
    pid=""
else
    echo "FAIL ${rc:+exited $rc}${rc:-still running 10 s after SIGTERM}"
    failed+=("SIGTERM stop")
    tail -20 "$log/err" >&2
fi

elapsed=$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
if ((${#failed[@]} > 0)); then
    echo "Toxiproxy client checks: failed: ${failed[*]} (${elapsed} s, seed $seed)"
    exit 1
fi
echo "Toxiproxy client checks: all passed (${elapsed} s, seed $seed)"
