// Builds the web UI into ../runstream/query/static/ (or the folder given as the first
// argument): index.html, app.js, app.css. Deterministic: no timestamps, no absolute paths,
// the same bytes on every machine for the same package-lock.json.
import { build } from "esbuild";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] ?? join(here, "..", "runstream", "query", "static"));

// uPlot's MIT licence travels with the bundle (its source header is not a legal comment).
const uplotPkg = JSON.parse(readFileSync(join(here, "node_modules", "uplot", "package.json"), "utf8"));
const licence = readFileSync(join(here, "node_modules", "uplot", "LICENSE"), "utf8")
  .trim().replace(/\*\//g, "* /").replace(/\r\n/g, "\n");
const banner = `/*! Runstream web UI. Includes uPlot ${uplotPkg.version} ` +
  `(https://github.com/leeoniya/uPlot), under this licence:\n\n${licence}\n*/`;

const result = await build({
  absWorkingDir: here,
  entryPoints: { app: "src/main.ts" },
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020"],
  platform: "browser",
  legalComments: "eof",
  banner: { js: banner, css: banner },
  sourcemap: false,
  charset: "utf8",
  write: false,
  outdir: "out",
  logLevel: "warning",
});

mkdirSync(out, { recursive: true });
for (const file of result.outputFiles) {
  const name = file.path.split(/[\\/]/).pop();
  writeFileSync(join(out, name), file.contents);
}
writeFileSync(join(out, "index.html"), readFileSync(join(here, "src", "index.html")));
