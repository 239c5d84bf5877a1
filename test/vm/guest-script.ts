/**
 * Guest drivers are TypeScript files run by `node` in the VM lab guest, which sees the host's
 * /tmp and this repo at the same paths. They are transpiled (no type check: vitest's typecheck
 * and `tsc` see them as part of the tests) into a staging directory that mirrors the repo: the
 * files given keep their repo-relative paths, and the repo's build output (dist/agent,
 * dist/receiver, ...) and node_modules are linked in, so a driver can import test helpers and
 * the product's modules as the tests on the host do.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ts from 'typescript';

const REPO_ROOT = path.resolve(__dirname, '..', '..');
/** What a staged file may import besides other staged files: the build, the packages, bin/. */
const LINKED = ['agent', 'cli', 'common', 'native', 'proto', 'push', 'quickstart', 'receiver'];

function transpileInto(rel: string, dest: string): void {
  const result = ts.transpileModule(fs.readFileSync(path.join(REPO_ROOT, rel), 'utf8'), {
    fileName: rel,
    reportDiagnostics: true,
    compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true, strict: true },
  });
  const errors = (result.diagnostics ?? []).filter((d) => d.category === ts.DiagnosticCategory.Error);
  if (errors.length > 0) throw new Error(`${rel}: ${ts.flattenDiagnosticMessageText(errors[0].messageText, '\n')}`);
  fs.mkdirSync(path.dirname(dest), { recursive: true });
  fs.writeFileSync(dest, result.outputText);
}

/** One self-contained driver (it loads the product from dist/ by absolute path): its .js path. */
export function transpileGuestScript(rel: string, outDir: string): string {
  const dest = path.join(outDir, `${path.basename(rel, '.ts')}.js`);
  transpileInto(rel, dest);
  return dest;
}

/**
 * A driver with the test helpers it imports (`files`, repo-relative .ts paths) staged under
 * `outDir` as a mirror of the repo; returns the driver's .js path.
 */
export function stageGuestScript(entry: string, files: string[], outDir: string): string {
  if (!fs.existsSync(path.join(REPO_ROOT, 'dist', 'cli', 'main.js'))) throw new Error('dist/ is missing: run `npm run build` first');
  for (const rel of [entry, ...files]) transpileInto(rel, path.join(outDir, rel.replace(/\.ts$/, '.js')));
  for (const dir of LINKED) fs.symlinkSync(path.join(REPO_ROOT, 'dist', dir), path.join(outDir, dir));
  fs.symlinkSync(path.join(REPO_ROOT, 'node_modules'), path.join(outDir, 'node_modules'));
  fs.symlinkSync(path.join(REPO_ROOT, 'bin'), path.join(outDir, 'bin'));
  fs.symlinkSync(path.join(REPO_ROOT, 'package.json'), path.join(outDir, 'package.json'));
  return path.join(outDir, entry.replace(/\.ts$/, '.js'));
}
