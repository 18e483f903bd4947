// Bundles with the pinned esbuild (`npm run build:web`, run by the web tests):
//   build/web/tmcp-storage.js        the client library, one ES module for browsers
//   build/web/node/*.test.mjs        Node tests (node:test), packages left to node_modules
//   build/web/browser/page.js        the browser test page's script, fully bundled
//   build/web/browser/*.test.mjs     the Chromium driver (playwright-core), run by Node
// tsc only type-checks (`npm run typecheck`); esbuild strips the types.
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { build } from "esbuild";

const out = "build/web";
const tests = (dir) => readdirSync(dir).filter((f) => f.endsWith(".test.ts")).map((f) => join(dir, f));
const common = { bundle: true, format: "esm", target: "es2022", sourcemap: "inline", logLevel: "warning" };
const forNode = { ...common, platform: "node", packages: "external", outExtension: { ".js": ".mjs" } };

await Promise.all([
  build({ ...common, platform: "browser", entryPoints: ["clients/web/src/index.ts"], outfile: `${out}/tmcp-storage.js`, sourcemap: true }),
  build({ ...forNode, entryPoints: tests("tests/web/node"), outdir: `${out}/node` }),
  build({ ...common, platform: "browser", entryPoints: ["tests/web/browser/page.ts"], outfile: `${out}/browser/page.js` }),
  build({ ...forNode, entryPoints: tests("tests/web/browser"), outdir: `${out}/browser` }),
]);
