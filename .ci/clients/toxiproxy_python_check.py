#!/usr/bin/env python3
"""Drives a running `faultline proxy` with Toxiproxy's stock Python client
(`pip install toxiproxy-python`, import name `toxiproxy`).

Usage: toxiproxy_python_check.py API_URL   (e.g. http://127.0.0.1:8474)

Uses the client's API (Toxiproxy, Proxy, its exceptions) against a real upstream: an HTTP
server this script starts on a loopback port. The client has no call to update a toxic or
to create a proxy whose name it already lists, so those two go through the client's own
HTTP layer, `toxiproxy.api.APIConsumer`, which maps 409/404/400 to its exceptions. Checks:
running and version; create (listen defaults to 127.0.0.1:0), proxies, get_proxy; a latency
toxic (named `latency_downstream` by default; a request through the proxy takes at least
the latency), toxics, get_toxic, updating it, destroy_toxic; populate (client-side: an
unchanged proxy is kept, a new one created); disable (connections refused), enable (same
address), `with proxy.down()`; reset (proxies enabled, toxics gone); destroy, destroy_all;
and the errors: ProxyExists (409) for a taken proxy or toxic name, NotFound (404) for an
unknown proxy or toxic, InvalidToxic (400) for an unknown toxic type.
Exits 1 naming every failed check; 2 on bad usage or when the client is not installed.
"""
import http.client
import http.server
import json
import socket
import sys
import threading
import time
from urllib.parse import urlsplit

try:
    from toxiproxy import Proxy, Toxiproxy
    from toxiproxy.api import APIConsumer
    from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists
except ImportError as e:
    print(f"toxiproxy-python is not installed: python3 -m pip install toxiproxy-python ({e})",
          file=sys.stderr)
    sys.exit(2)

if len(sys.argv) != 2:
    print("usage: toxiproxy_python_check.py API_URL   (e.g. http://127.0.0.1:8474)", file=sys.stderr)
    sys.exit(2)
api = urlsplit(sys.argv[1])
if api.scheme != "http" or not api.hostname or not api.port:
    print(f"API_URL must be http://HOST:PORT: {sys.argv[1]}", file=sys.stderr)
    sys.exit(2)

LATENCY_MS = 300
UPDATED_LATENCY_MS = 600
failures = []


def check(name, cond, detail=""):
    print(("ok   " if cond else "FAIL ") + name + (f": {detail}" if detail and not cond else ""))
    if not cond:
        failures.append(name)


def expect_error(name, exc_type, fn):
    """Runs fn, which must raise exc_type (the client's exception for one status)."""
    try:
        got = fn()
    except exc_type:
        check(name, True)
    except Exception as e:  # noqa: BLE001 - any other error is this check failing
        check(name, False, f"{type(e).__name__}: {e}")
    else:
        check(name, False, f"no error; got {got!r}")


def split_addr(addr):
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def timed_get(listen):
    """One GET through `listen` on a fresh connection: (status, body, ms)."""
    host, port = split_addr(listen)
    start = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        body = resp.read().decode()
        return resp.status, body, (time.monotonic() - start) * 1000
    finally:
        conn.close()


def expect_pong(name, listen, at_least_ms=0.0, under_ms=float("inf")):
    try:
        status, body, ms = timed_get(listen)
    except OSError as e:
        check(name, False, f"{type(e).__name__}: {e}")
        return float("nan")
    check(name, status == 200 and body == "pong" and at_least_ms <= ms < under_ms,
          f"status {status}, body {body!r}, {ms:.0f} ms")
    return ms


def connect_outcome(listen):
    """'refused', 'connected' or the error of a TCP connect to `listen`."""
    try:
        with socket.create_connection(split_addr(listen), timeout=5):
            return "connected"
    except ConnectionRefusedError:
        return "refused"
    except OSError as e:
        return f"{type(e).__name__}: {e}"


class Pong(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the name http.server calls
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"pong")

    def log_message(self, *args):
        pass


upstream_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Pong)
threading.Thread(target=upstream_server.serve_forever, daemon=True).start()
UPSTREAM = f"127.0.0.1:{upstream_server.server_address[1]}"

tp = Toxiproxy()
tp.update_api_consumer(api.hostname, api.port)


def toxic_path(proxy, toxic):
    return f"/proxies/{proxy}/toxics/{toxic}"


try:
    check("running", tp.running() is True)
    version = tp.version()
    try:
        v = json.loads(version)["version"]
    except (TypeError, ValueError, KeyError):
        v = None
    check("version: JSON with a version string", isinstance(v, str) and v != "", repr(version))

    # Create, list, get.
    proxy = tp.create(upstream=UPSTREAM, name="py_http")
    host, port = split_addr(proxy.listen)
    check("create: name, upstream, enabled, 127.0.0.1 and a real port",
          proxy.name == "py_http" and proxy.upstream == UPSTREAM and proxy.enabled is True
          and host == "127.0.0.1" and port > 0, repr(vars(proxy)))
    base_ms = expect_pong("request through the new proxy", proxy.listen)
    print(f"     (no toxic: {base_ms:.0f} ms)")
    listed = tp.proxies()
    check("proxies: has py_http with its fields",
          "py_http" in listed and listed["py_http"].listen == proxy.listen
          and listed["py_http"].upstream == UPSTREAM and listed["py_http"].enabled is True,
          repr({k: vars(p) for k, p in listed.items()}))
    got = tp.get_proxy("py_http")
    check("get_proxy: same proxy", got is not None and got.listen == proxy.listen, repr(got))
    check("get_proxy of an unknown proxy: None", tp.get_proxy("no_such_proxy") is None)
    expect_error("create with a listed name: ProxyExists (the client checks first)", ProxyExists,
                 lambda: tp.create(upstream=UPSTREAM, name="py_http"))
    expect_error("POST /proxies with a taken name: 409 -> ProxyExists", ProxyExists,
                 lambda: APIConsumer.post("/proxies", json={
                     "name": "py_http", "listen": "127.0.0.1:0", "upstream": UPSTREAM}))
    ghost = Proxy(name="no_such_proxy", upstream=UPSTREAM, enabled=True, listen="127.0.0.1:1")
    expect_error("toxics of an unknown proxy: 404 -> NotFound", NotFound, ghost.toxics)
    expect_error("disable an unknown proxy: 404 -> NotFound", NotFound, ghost.disable)
    expect_error("destroy an unknown proxy: 404 -> NotFound", NotFound, ghost.destroy)

    # A latency toxic: listed, got, updated, removed.
    proxy.add_toxic(type="latency", attributes={"latency": LATENCY_MS})
    toxics = proxy.toxics()
    t = toxics.get("latency_downstream")
    check("add_toxic: default name latency_downstream, stream downstream, toxicity 1",
          t is not None and t.type == "latency" and t.stream == "downstream" and t.toxicity == 1.0
          and t.attributes.get("latency") == LATENCY_MS,
          repr({k: vars(x) for k, x in toxics.items()}))
    expect_pong(f"request with latency {LATENCY_MS} ms takes >= {LATENCY_MS} ms", proxy.listen,
                at_least_ms=LATENCY_MS)
    g = proxy.get_toxic("latency_downstream")
    check("get_toxic: same toxic", g is not None and g.attributes.get("latency") == LATENCY_MS,
          repr(g and vars(g)))
    check("get_toxic of an unknown toxic: None", proxy.get_toxic("no_such_toxic") is None)
    updated = APIConsumer.post(toxic_path("py_http", "latency_downstream"),
                               json={"attributes": {"latency": UPDATED_LATENCY_MS}}).json()
    check("update the toxic (POST its path): new latency, the rest kept",
          updated.get("attributes", {}).get("latency") == UPDATED_LATENCY_MS
          and updated.get("attributes", {}).get("jitter") == 0 and updated.get("toxicity") == 1.0
          and updated.get("stream") == "downstream", repr(updated))
    expect_pong(f"request after update takes >= {UPDATED_LATENCY_MS} ms", proxy.listen,
                at_least_ms=UPDATED_LATENCY_MS)
    expect_error("add_toxic with a taken name: 409 -> ProxyExists", ProxyExists,
                 lambda: proxy.add_toxic(type="latency", attributes={"latency": 1}))
    expect_error("add_toxic of an unknown type: 400 -> InvalidToxic", InvalidToxic,
                 lambda: proxy.add_toxic(type="no_such_toxic"))
    expect_error("add_toxic with an invalid stream: 400 -> InvalidToxic", InvalidToxic,
                 lambda: proxy.add_toxic(type="latency", stream="sideways", name="odd"))
    check("destroy_toxic: True", proxy.destroy_toxic("latency_downstream") is True)
    check("toxics after destroy_toxic: empty", proxy.toxics() == {})
    expect_pong(f"request after destroy_toxic takes < {LATENCY_MS} ms", proxy.listen,
                under_ms=LATENCY_MS)
    expect_error("destroy_toxic again: 404 -> NotFound", NotFound,
                 lambda: proxy.destroy_toxic("latency_downstream"))

    # Populate (client-side): unchanged proxy kept with its toxics, a new one created.
    proxy.add_toxic(type="latency", stream="upstream", name="kept", attributes={"latency": 1})
    created = tp.populate([
        {"name": "py_http", "upstream": UPSTREAM, "listen": proxy.listen},
        {"name": "py_pop", "upstream": UPSTREAM, "listen": "127.0.0.1:0"},
    ])
    check("populate: creates only the new proxy", [p.name for p in created] == ["py_pop"],
          repr([vars(p) for p in created]))
    check("populate: unchanged proxy keeps its toxics", "kept" in proxy.toxics())
    if created:
        expect_pong("request through the populated proxy", created[0].listen)

    # Disable and enable.
    proxy.disable()
    check("disable: get_proxy says disabled", tp.get_proxy("py_http").enabled is False)
    outcome = connect_outcome(proxy.listen)
    check("disabled proxy refuses connections", outcome == "refused", outcome)
    proxy.enable()
    again = tp.get_proxy("py_http")
    check("enable: enabled on the same address",
          again.enabled is True and again.listen == proxy.listen, repr(vars(again)))
    expect_pong("request through the re-enabled proxy", proxy.listen)
    with proxy.down():
        outcome = connect_outcome(proxy.listen)
        check("inside `with proxy.down()`: connections refused", outcome == "refused", outcome)
    expect_pong("after `with proxy.down()`: request goes through", proxy.listen)

    # Reset: every proxy enabled, every toxic removed.
    proxy.add_toxic(type="latency", attributes={"latency": LATENCY_MS})
    if created:
        created[0].disable()
    check("reset: True", tp.reset() is True)
    after = tp.proxies()
    check("reset: every proxy enabled", all(p.enabled is True for p in after.values()),
          repr({k: vars(p) for k, p in after.items()}))
    check("reset: toxics removed", proxy.toxics() == {}, repr(proxy.toxics()))
    expect_pong(f"request after reset takes < {LATENCY_MS} ms", proxy.listen, under_ms=LATENCY_MS)

    # Destroy.
    check("destroy: True", tp.destroy(proxy) is True)
    check("get_proxy after destroy: None", tp.get_proxy("py_http") is None)
    outcome = connect_outcome(proxy.listen)
    check("destroyed proxy refuses connections", outcome == "refused", outcome)
    expect_error("destroy again: 404 -> NotFound", NotFound, proxy.destroy)
    tp.destroy_all()
    check("destroy_all: no proxies left", tp.proxies() == {}, repr(tp.proxies()))
except Exception as e:  # noqa: BLE001 - reported as a failed check, with its traceback
    import traceback

    traceback.print_exc()
    check("no unexpected error", False, f"{type(e).__name__}: {e}")
finally:
    upstream_server.shutdown()

if failures:
    print(f"toxiproxy-python: {len(failures)} check(s) failed: {'; '.join(failures)}")
    sys.exit(1)
print("toxiproxy-python: all checks passed")
