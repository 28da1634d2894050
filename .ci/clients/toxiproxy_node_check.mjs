#!/usr/bin/env node
// Drives a running `faultline proxy` with Toxiproxy's stock Node client
// (npm `toxiproxy-node-client`, pinned in .ci/clients/node/package.json; install it with
// `npm ci --prefix .ci/clients/node`).
//
// Usage: node .ci/clients/toxiproxy_node_check.mjs API_URL   (e.g. http://127.0.0.1:8474)
//
// Only the client's own API is used (Toxiproxy, Proxy, Toxic, ToxiproxyError), against a real
// upstream: an HTTP server this script starts on a loopback port. It checks the version,
// creating a proxy (listen "localhost:0", as the client's README does), listing and getting
// it, a latency toxic (a request through the proxy takes at least the latency), getting and
// updating the toxic (the whole toxic sent back, as the client's types ask), removing it,
// populate (an unchanged proxy is kept with its toxics, a new one is created), disable
// (connections refused) and enable (same address, traffic flows), reset (proxies enabled,
// toxics gone), deleting proxies, and the errors the client surfaces: 409 for a taken proxy
// or toxic name, 404 for an unknown proxy or toxic, 400 for an unknown toxic type. Exits 1
// naming every failed check; 2 on bad usage or when the client is not installed.
import http from "node:http";
import net from "node:net";
import { createRequire } from "node:module";

if (process.argv.length !== 3) {
  console.error("usage: node toxiproxy_node_check.mjs API_URL   (e.g. http://127.0.0.1:8474)");
  process.exit(2);
}
const API = process.argv[2].replace(/\/+$/, "");
const require = createRequire(new URL("./node/package.json", import.meta.url));
let client;
try {
  client = require("toxiproxy-node-client");
} catch (e) {
  console.error(`toxiproxy-node-client is not installed: npm ci --prefix .ci/clients/node (${e.message})`);
  process.exit(2);
}
const { Toxiproxy, ToxiproxyError } = client;

const LATENCY_MS = 300;
const UPDATED_LATENCY_MS = 600;
const failures = [];

function check(name, cond, detail = "") {
  console.log((cond ? "ok   " : "FAIL ") + name + (detail && !cond ? `: ${detail}` : ""));
  if (!cond) failures.push(name);
}

// Runs `fn`, which must fail with a ToxiproxyError for HTTP `status`.
async function expectStatus(name, status, fn) {
  try {
    const got = await fn();
    check(name, false, `no error; got ${JSON.stringify(got?.toJson ? got.toJson() : got)}`);
  } catch (e) {
    check(
      name,
      e instanceof ToxiproxyError && e.message.includes(`status code ${status}`),
      `${e?.name}: ${e?.message}`,
    );
  }
}

// host:port → {host, port}; Toxiproxy reports the address it listens on.
function splitAddr(addr) {
  const i = addr.lastIndexOf(":");
  return { host: addr.slice(0, i).replace(/^\[|\]$/g, ""), port: Number(addr.slice(i + 1)) };
}

// One GET through `listen` on a fresh connection: {status, body, ms}.
function timedGet(listen) {
  const { host, port } = splitAddr(listen);
  const start = performance.now();
  return new Promise((resolve, reject) => {
    const req = http.get({ host, port, path: "/", agent: false, timeout: 10_000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode, body, ms: performance.now() - start }));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error("no answer within 10 s")));
    req.on("error", reject);
  });
}

// Resolves to the error code of a TCP connect to `listen` ("connected" if it was accepted).
function connectOutcome(listen) {
  const { host, port } = splitAddr(listen);
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    s.setTimeout(5_000, () => {
      s.destroy();
      resolve("timeout");
    });
    s.on("connect", () => {
      s.destroy();
      resolve("connected");
    });
    s.on("error", (e) => resolve(e.code));
  });
}

async function expectPong(name, listen, { atLeastMs = 0, underMs = Infinity } = {}) {
  try {
    const r = await timedGet(listen);
    const detail = `status ${r.status}, body ${JSON.stringify(r.body)}, ${r.ms.toFixed(0)} ms`;
    check(name, r.status === 200 && r.body === "pong" && r.ms >= atLeastMs && r.ms < underMs, detail);
    return r.ms;
  } catch (e) {
    check(name, false, e.message);
    return NaN;
  }
}

const upstream = http.createServer((_req, res) => {
  res.writeHead(200, { "content-type": "text/plain", "content-length": "4" });
  res.end("pong");
});
await new Promise((r) => upstream.listen(0, "127.0.0.1", r));
const UPSTREAM = `127.0.0.1:${upstream.address().port}`;

const tp = new Toxiproxy(API);
try {
  const versionText = await tp.getVersion();
  let version;
  try {
    version = JSON.parse(versionText).version;
  } catch {
    version = undefined;
  }
  check("getVersion: JSON with a version string", typeof version === "string" && version.length > 0, versionText);

  // Create, list, get.
  const proxy = await tp.createProxy({ name: "node_http", listen: "localhost:0", upstream: UPSTREAM });
  const port = splitAddr(proxy.listen).port;
  check(
    "createProxy: name, upstream, enabled, a real port",
    proxy.name === "node_http" && proxy.upstream === UPSTREAM && proxy.enabled === true && port > 0,
    JSON.stringify(proxy.toJson()),
  );
  const baseMs = await expectPong("request through the new proxy", proxy.listen);
  console.log(`     (no toxic: ${baseMs.toFixed(0)} ms)`);

  const all = await tp.getAll();
  check(
    "getAll: has node_http with its fields",
    all.node_http && all.node_http.listen === proxy.listen && all.node_http.upstream === UPSTREAM
      && all.node_http.enabled === true,
    JSON.stringify(Object.fromEntries(Object.entries(all).map(([k, v]) => [k, v.toJson()]))),
  );
  const got = await tp.get("node_http");
  check(
    "get: same proxy",
    got.name === "node_http" && got.listen === proxy.listen && got.upstream === UPSTREAM && got.enabled,
    JSON.stringify(got.toJson()),
  );
  await expectStatus("createProxy with a taken name: 409", 409, () =>
    tp.createProxy({ name: "node_http", listen: "127.0.0.1:0", upstream: UPSTREAM }),
  );
  await expectStatus("get an unknown proxy: 404", 404, () => tp.get("no_such_proxy"));

  // A latency toxic, got, updated, removed.
  const toxic = await proxy.addToxic({
    name: "lag",
    type: "latency",
    stream: "downstream",
    toxicity: 1,
    attributes: { latency: LATENCY_MS, jitter: 0 },
  });
  check(
    "addToxic: latency toxic echoed back",
    toxic.name === "lag" && toxic.type === "latency" && toxic.stream === "downstream"
      && toxic.toxicity === 1 && toxic.attributes.latency === LATENCY_MS && toxic.attributes.jitter === 0,
    JSON.stringify(toxic.toJson()),
  );
  await expectPong(`request with latency ${LATENCY_MS} ms takes >= ${LATENCY_MS} ms`, proxy.listen, {
    atLeastMs: LATENCY_MS,
  });
  const fetched = await proxy.getToxic("lag");
  check(
    "getToxic: same toxic",
    fetched.name === "lag" && fetched.type === "latency" && fetched.attributes.latency === LATENCY_MS,
    JSON.stringify(fetched.toJson()),
  );
  const updated = await toxic.update({
    ...toxic.toJson(),
    attributes: { latency: UPDATED_LATENCY_MS, jitter: 0 },
  });
  check(
    "Toxic.update (whole toxic sent back): new latency",
    updated.name === "lag" && updated.type === "latency" && updated.attributes.latency === UPDATED_LATENCY_MS,
    JSON.stringify(updated.toJson()),
  );
  await expectPong(
    `request after update takes >= ${UPDATED_LATENCY_MS} ms`,
    proxy.listen,
    { atLeastMs: UPDATED_LATENCY_MS },
  );
  await expectStatus("addToxic with a taken name: 409", 409, () =>
    proxy.addToxic({ name: "lag", type: "latency", stream: "downstream", toxicity: 1, attributes: { latency: 1 } }),
  );
  await expectStatus("addToxic of an unknown type: 400", 400, () =>
    proxy.addToxic({ name: "odd", type: "no_such_toxic", stream: "downstream", toxicity: 1, attributes: {} }),
  );
  await expectStatus("getToxic of an unknown toxic: 404", 404, () => proxy.getToxic("no_such_toxic"));
  await toxic.remove();
  await expectStatus("getToxic after remove: 404", 404, () => proxy.getToxic("lag"));
  await expectPong(`request after remove takes < ${LATENCY_MS} ms`, proxy.listen, { underMs: LATENCY_MS });
  await expectStatus("Toxic.remove again: 404", 404, () => toxic.remove());

  // Populate: an unchanged proxy is kept (with its toxics), a new one is created.
  await proxy.addToxic({
    name: "kept",
    type: "latency",
    stream: "upstream",
    toxicity: 1,
    attributes: { latency: 1, jitter: 0 },
  });
  const populated = await tp.populate([
    { name: "node_http", listen: proxy.listen, upstream: UPSTREAM },
    { name: "node_pop", listen: "127.0.0.1:0", upstream: UPSTREAM },
  ]);
  check(
    "populate: returns both proxies",
    Object.keys(populated).sort().join(",") === "node_http,node_pop",
    JSON.stringify(Object.keys(populated)),
  );
  check(
    "populate: unchanged proxy keeps its address",
    populated.node_http?.listen === proxy.listen,
    JSON.stringify(populated.node_http?.toJson()),
  );
  try {
    const kept = await (await tp.get("node_http")).getToxic("kept");
    check("populate: unchanged proxy keeps its toxics", kept.name === "kept");
  } catch (e) {
    check("populate: unchanged proxy keeps its toxics", false, e.message);
  }
  const pop = populated.node_pop;
  check(
    "populate: new proxy enabled on a real port",
    pop && pop.enabled === true && splitAddr(pop.listen).port > 0 && pop.upstream === UPSTREAM,
    JSON.stringify(pop?.toJson()),
  );
  if (pop) await expectPong("request through the populated proxy", pop.listen);

  // Disable and enable.
  const down = await proxy.update({ enabled: false, listen: proxy.listen, upstream: UPSTREAM });
  check("update enabled=false: answer says disabled", down.enabled === false, JSON.stringify(down.toJson()));
  const refused = await connectOutcome(proxy.listen);
  check("disabled proxy refuses connections", refused === "ECONNREFUSED", refused);
  check("get: disabled", (await tp.get("node_http")).enabled === false);
  const up = await down.update({ enabled: true, listen: down.listen, upstream: UPSTREAM });
  check(
    "update enabled=true: enabled on the same address",
    up.enabled === true && up.listen === proxy.listen,
    JSON.stringify(up.toJson()),
  );
  await expectPong("request through the re-enabled proxy", up.listen);

  // Reset: every proxy enabled, every toxic removed.
  await up.update({ enabled: false, listen: up.listen, upstream: UPSTREAM });
  await up.addToxic({
    name: "lag2",
    type: "latency",
    stream: "downstream",
    toxicity: 1,
    attributes: { latency: LATENCY_MS, jitter: 0 },
  });
  await tp.reset();
  const afterReset = await tp.get("node_http");
  check("reset: proxy enabled again", afterReset.enabled === true, JSON.stringify(afterReset.toJson()));
  await expectStatus("reset: toxics removed (getToxic 404)", 404, () => afterReset.getToxic("lag2"));
  await expectStatus("reset: toxics removed (getToxic kept 404)", 404, () => afterReset.getToxic("kept"));
  await expectPong(`request after reset takes < ${LATENCY_MS} ms`, afterReset.listen, { underMs: LATENCY_MS });

  // Delete.
  await afterReset.remove();
  await expectStatus("get after remove: 404", 404, () => tp.get("node_http"));
  await expectStatus("remove again: 404", 404, () => afterReset.remove());
  await expectStatus("addToxic on a removed proxy: 404", 404, () =>
    afterReset.addToxic({ name: "x", type: "latency", stream: "downstream", toxicity: 1, attributes: { latency: 1 } }),
  );
  const gone = await connectOutcome(proxy.listen);
  check("removed proxy refuses connections", gone === "ECONNREFUSED", gone);
  for (const p of Object.values(await tp.getAll())) await p.remove();
  check("getAll after removing everything: empty", Object.keys(await tp.getAll()).length === 0);
} catch (e) {
  check("no unexpected error", false, `${e?.name}: ${e?.message}\n${e?.stack}`);
} finally {
  upstream.close();
}

if (failures.length > 0) {
  console.log(`toxiproxy-node-client: ${failures.length} check(s) failed: ${failures.join("; ")}`);
  process.exit(1);
}
console.log("toxiproxy-node-client: all checks passed");
