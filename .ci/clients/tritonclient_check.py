#!/usr/bin/env python3
"""Drives a running faultline server with Triton's own HTTP client (`pip install 'tritonclient[http]'`).

Usage: tritonclient_check.py URL   (e.g. http://127.0.0.1:8080 or 127.0.0.1:8080)

Checks what stock clients call: server liveness, readiness and metadata, the `mlp` model's
readiness and metadata, and inference on `mlp` with an FP32 input shaped [1, D] (D read from
the model metadata) three ways: the client's default (binary tensor data in and out), plain
JSON, and at an explicit model version; all three must give the same logits. Also that a
bad shape comes back as an error naming the field. Exits 1 naming every failed check.
"""
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

URL = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080"
HOST = URL.split("://", 1)[-1].rstrip("/")
MODEL = "mlp"
failures = []


def check(name, cond, detail=""):
    print(("ok   " if cond else "FAIL ") + name + (f": {detail}" if detail and not cond else ""))
    if not cond:
        failures.append(name)


def attempt(name, fn):
    """Runs one check's calls; an exception fails that check, not the script."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - every failure is reported by name
        check(name, False, f"{type(e).__name__}: {e}")
        return None


client = httpclient.InferenceServerClient(url=HOST, connection_timeout=30, network_timeout=60)

attempt("is_server_live", lambda: check("is_server_live", client.is_server_live() is True))
attempt("is_server_ready", lambda: check("is_server_ready", client.is_server_ready() is True))
attempt("is_model_ready(mlp)", lambda: check("is_model_ready(mlp)", client.is_model_ready(MODEL) is True))
attempt(
    "is_model_ready(no-such-model) is False",
    lambda: check("is_model_ready(no-such-model) is False", client.is_model_ready("no-such-model") is False),
)

server = attempt("get_server_metadata", client.get_server_metadata)
if server is not None:
    check(
        "get_server_metadata: name, version, extensions",
        isinstance(server.get("name"), str)
        and isinstance(server.get("version"), str)
        and isinstance(server.get("extensions"), list),
        str(server),
    )

meta = attempt("get_model_metadata(mlp)", lambda: client.get_model_metadata(MODEL))
D = C = None
if meta is not None:
    inp, out = meta["inputs"][0], meta["outputs"][0]
    ok = (
        meta.get("name") == MODEL
        and inp["datatype"] == "FP32"
        and len(inp["shape"]) == 2
        and int(inp["shape"][1]) > 0
        and out["datatype"] == "FP32"
    )
    check("get_model_metadata(mlp): one FP32 input [-1, D], FP32 output", ok, str(meta))
    if ok:
        D, C = int(inp["shape"][1]), int(out["shape"][-1])
        INPUT, OUTPUT = inp["name"], out["name"]

if D is None:
    check("infer on mlp", False, "skipped: no usable model metadata to size the input")
else:
    x = (np.arange(D, dtype=np.float32) % 7 * 0.1).reshape(1, D)

    def infer(binary, version=""):
        i = httpclient.InferInput(INPUT, [1, D], "FP32")
        i.set_data_from_numpy(x, binary_data=binary)
        outputs = None if binary else [httpclient.InferRequestedOutput(OUTPUT, binary_data=False)]
        r = client.infer(MODEL, [i], outputs=outputs, model_version=version, request_id="check-1")
        return r.as_numpy(OUTPUT), r.get_response()

    def shaped(name, result):
        y, resp = result
        check(
            f"{name}: output {OUTPUT} shaped [1, {C}], finite",
            y is not None and y.shape == (1, C) and y.dtype == np.float32 and bool(np.isfinite(y).all()),
            f"{None if y is None else (y.shape, y.dtype)} {resp}",
        )
        check(f"{name}: id echoed", resp.get("id") == "check-1", str(resp))
        return y

    ys = []
    for name, binary, version in [
        ("infer (default: binary tensor data)", True, ""),
        ("infer (JSON)", False, ""),
        ("infer (model_version 1)", True, "1"),
    ]:
        result = attempt(name, lambda: infer(binary, version))
        if result is not None:
            ys.append(shaped(name, result))
    if len(ys) == 3:
        check("infer: the three ways give the same logits", all(np.array_equal(ys[0], y) for y in ys[1:]))

    def bad_shape():
        i = httpclient.InferInput(INPUT, [1, D + 1], "FP32")
        i.set_data_from_numpy(np.zeros((1, D + 1), np.float32))
        try:
            client.infer(MODEL, [i])
        except InferenceServerException as e:
            check("infer with a bad shape: error names inputs[0].shape", "inputs[0].shape" in e.message(), e.message())
            return
        check("infer with a bad shape: error names inputs[0].shape", False, "no error raised")

    attempt("infer with a bad shape: error names inputs[0].shape", bad_shape)

client.close()
if failures:
    print(f"tritonclient check FAILED against {URL}: {', '.join(failures)}", file=sys.stderr)
    sys.exit(1)
print(f"tritonclient check passed against {URL}")
