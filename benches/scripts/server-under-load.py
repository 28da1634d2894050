#!/usr/bin/env python3
"""The server under sustained load and overload (issue 7 figures), with RSS sampled throughout.

  benches/scripts/server-under-load.py soak      # LM tokens/s at the knee, RSS over SOAK_S
  benches/scripts/server-under-load.py overload  # per model: admitted p99 at 5x vs 0.8x capacity

The server runs on core 1 with one compute thread and the generator on core 0 (taskset),
so the generator's own work at 5x load does not slow the server it measures. Capacity C of
a model is found here, not assumed: a bisection over open-loop Poisson rates
(faultline's generator, coordinated-omission corrected), each trial TRIAL_S long, that keeps
the highest rate whose trial had achieved >= 0.98 x offered, error ratio <= 1 % and corrected
p99 <= the model's SLO. Before every trial the server is drained (its queue and running
gauges read 0), so one trial's backlog never lands in the next. Client and server share the
machine's cores. Environment: SOAK_S (600), TRIAL_S (5), PHASE_S (20), LM_MAX_TOKENS (32),
SERVER_ARGS (extra server flags, e.g. "--lm-max-running 8"), ONLY (one model name).
Only the standard library and the release binaries are used.
"""

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
SERVER = os.path.join(TARGET, "release", "server")
FAULTLINE = os.path.join(TARGET, "release", "faultline")
SOAK_S = int(os.environ.get("SOAK_S", "600"))
TRIAL_S = int(os.environ.get("TRIAL_S", "5"))
PHASE_S = int(os.environ.get("PHASE_S", "20"))
LM_MAX_TOKENS = int(os.environ.get("LM_MAX_TOKENS", "32"))
SERVER_CORE, CLIENT_CORE = "1", "0"
CONNECTIONS = 768  # below the server's --max-connections (1024); enough for 5x the LM's streams

MODELS = {
    # name: (path, body, stream, p99 SLO ms, rate bounds)
    "mlp": (
        "/v2/models/mlp/infer",
        json.dumps({"inputs": [{"name": "input", "shape": [1, 256], "datatype": "FP32",
                                "data": [round((i % 7) * 0.1, 1) for i in range(256)]}]}),
        False, 100.0, (100.0, 10000.0)),
    "tiny-lm": (
        "/v1/completions",
        json.dumps({"model": "tiny-lm", "prompt": "Once upon a time", "max_tokens": LM_MAX_TOKENS,
                    "stream": True}),
        True, 2000.0, (5.0, 2000.0)),
}


def build():
    subprocess.run(["cargo", "build", "-q", "--release", "-p", "server", "-p", "faultline"],
                   cwd=ROOT, check=True)


class Server:
    """A release `server` on a free loopback port, killed on exit."""

    def __init__(self, args):
        self.proc = subprocess.Popen(["taskset", "-c", SERVER_CORE, SERVER, "--threads", "1",
                                      "--listen", "127.0.0.1:0", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise SystemExit(f"server did not start: {line!r}")
        self.addr = line.removeprefix("listening on ")

    def url(self, path):
        return f"http://{self.addr}{path}"

    def rss_kb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))

    def metrics(self):
        text = urllib.request.urlopen(self.url("/metrics"), timeout=10).read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                series, _, value = line.rpartition(" ")
                out[series] = float(value)
        return out

    def drain(self, model, patience_s=120):
        """Waits until nothing waits or runs for `model`; returns how long that took."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < patience_s:
            m = self.metrics()
            busy = sum(m.get(f'faultline_num_requests_{k}{{model="{model}"}}', 0.0)
                       for k in ("waiting", "running"))
            if busy == 0:
                return time.monotonic() - t0
            time.sleep(0.2)
        raise SystemExit(f"{model} did not drain within {patience_s} s")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class RssSampler(threading.Thread):
    def __init__(self, server, every_s=5.0):
        super().__init__(daemon=True)
        self.server, self.every_s, self.samples, self.done = server, every_s, [], threading.Event()
        self.t0 = time.monotonic()

    def run(self):
        while not self.done.is_set():
            self.samples.append((time.monotonic() - self.t0, self.server.rss_kb()))
            self.done.wait(self.every_s)

    def stop(self):
        self.done.set()
        self.join()
        self.samples.append((time.monotonic() - self.t0, self.server.rss_kb()))


def load(server, model, rate, duration_s, warmup_s=1):
    path, body, stream, _, _ = MODELS[model]
    cmd = ["taskset", "-c", CLIENT_CORE, FAULTLINE, "load", server.url(path), "--method", "POST", "--body", body,
           "-H", "content-type: application/json", "--rate", f"{rate:.2f}",
           "--arrival", "poisson", "--duration", f"{duration_s}s", "--warmup", f"{warmup_s}s",
           "-c", str(CONNECTIONS), "--timeout", "30s", "--json"]
    if stream:
        cmd.append("--stream")
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode not in (0, 1):
        raise SystemExit(f"faultline load failed ({out.returncode}): {out.stderr}")
    r = json.loads(out.stdout)
    m = r["measured"]
    sent = m["counts"]["sent"]
    failed = sent - m["counts"]["ok"]
    return {
        "rate": rate,
        "achieved": m["throughput_per_s"],
        "p99_ms": m["latency"]["p99_us"] / 1000 if m["latency"]["count"] else float("inf"),
        "service_p99_ms": m["service"]["p99_us"] / 1000 if m["service"]["count"] else float("inf"),
        "ttft_p99_ms": m["ttft"]["p99_us"] / 1000,
        "error_ratio": failed / sent if sent else 1.0,
        "errors": m["counts"]["errors"],
        "sent": sent,
        "ok": m["counts"]["ok"],
        "balanced": r["balanced"],
        "output_tokens_per_s": m["output_tokens_per_s"],
    }


def passes(t, slo_ms):
    return t["achieved"] >= 0.98 * t["rate"] and t["error_ratio"] <= 0.01 and t["p99_ms"] <= slo_ms


def capacity(server, model, steps=7):
    """Bisection on a log scale between the model's rate bounds (module docs)."""
    _, _, _, slo_ms, (lo, hi) = MODELS[model]
    best = None
    for _ in range(steps):
        rate = (lo * hi) ** 0.5
        drained = server.drain(model)
        t = load(server, model, rate, TRIAL_S)
        ok = passes(t, slo_ms)
        print(f"  trial {model} {rate:9.1f}/s: achieved {t['achieved']:9.1f}/s p99 {t['p99_ms']:8.1f} ms "
              f"errors {t['error_ratio']:.3f} drained {drained:.1f}s -> {'pass' if ok else 'fail'}",
              flush=True)
        if ok:
            lo, best = rate, t
        else:
            hi = rate
    if best is None:
        raise SystemExit(f"{model}: no rate passed (lowest tried {lo}/s); capacity not found")
    return best


def soak():
    build()
    server = Server(["--model", "tiny-lm=lm", *os.environ.get("SERVER_ARGS", "").split()])
    try:
        print(f"finding the LM's knee ({LM_MAX_TOKENS}-token streamed completions, "
              f"p99 <= {MODELS['tiny-lm'][3]:.0f} ms)", flush=True)
        knee = capacity(server, "tiny-lm")
        server.drain("tiny-lm")
        before = server.metrics()
        sampler = RssSampler(server)
        sampler.start()
        t0 = time.monotonic()
        run = load(server, "tiny-lm", knee["rate"], SOAK_S, warmup_s=0)
        elapsed = time.monotonic() - t0
        sampler.stop()
        after = server.metrics()
    finally:
        server.stop()
    series = 'faultline_generation_tokens_total{model="tiny-lm"}'
    tokens = after.get(series, 0) - before.get(series, 0)
    rss = sampler.samples
    result = {
        "knee_rate_per_s": knee["rate"], "soak_s": SOAK_S,
        "server_tokens_per_s": tokens / elapsed,
        "client_output_tokens_per_s": run["output_tokens_per_s"],
        "achieved_per_s": run["achieved"], "p99_ms": run["p99_ms"], "ttft_p99_ms": run["ttft_p99_ms"],
        "error_ratio": run["error_ratio"], "sent": run["sent"], "balanced": run["balanced"],
        "rss_start_mb": rss[0][1] / 1024, "rss_end_mb": rss[-1][1] / 1024,
        "rss_max_mb": max(kb for _, kb in rss) / 1024,
        "rss_samples": [(round(t, 1), kb) for t, kb in rss],
    }
    print(json.dumps({k: v for k, v in result.items() if k != "rss_samples"}, indent=1))
    print("rss over time (s, MB):", " ".join(f"{t:.0f}:{kb / 1024:.0f}" for t, kb in rss[::12]))


def overload():
    build()
    server = Server(os.environ.get("SERVER_ARGS", "").split())
    results = {}
    try:
        for model in [m for m in MODELS if os.environ.get("ONLY", m) == m]:
            print(f"{model}: capacity (p99 <= {MODELS[model][3]:.0f} ms)", flush=True)
            c = capacity(server, model)["rate"]
            out = {"capacity_per_s": c}
            for factor in (0.8, 5.0):
                server.drain(model)
                rss0 = server.rss_kb()
                t = load(server, model, factor * c, PHASE_S)
                out[f"x{factor}"] = {**t, "rss_before_mb": rss0 / 1024,
                                     "rss_after_mb": server.rss_kb() / 1024}
                print(f"  {factor}x = {factor * c:.0f}/s: admitted p99 {t['p99_ms']:.1f} ms, service p99 "
                      f"{t['service_p99_ms']:.1f} ms, ok {t['ok']}/{t['sent']}, errors {t['errors']}, "
                      f"RSS {rss0 / 1024:.0f} -> {server.rss_kb() / 1024:.0f} MB", flush=True)
            out["p99_ratio"] = out["x5.0"]["p99_ms"] / out["x0.8"]["p99_ms"]
            print(f"  admitted p99 at 5x / at 0.8x = {out['p99_ratio']:.2f} (target <= 2)", flush=True)
            results[model] = out
    finally:
        server.stop()
    print(json.dumps({m: {"capacity_per_s": r["capacity_per_s"], "p99_ratio": r["p99_ratio"]}
                      for m, r in results.items()}, indent=1))


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "soak":
        soak()
    elif cmd == "overload":
        overload()
    else:
        raise SystemExit(__doc__)
