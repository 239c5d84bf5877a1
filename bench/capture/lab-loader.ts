// Loads the VM lab (test/vm/lab.ts, TypeScript that is not compiled into dist/) from its source:
// a require hook transpiles .ts files under test/vm with the typescript package, so the lab's
// own __dirname (its shell scripts) stays test/vm.
import * as fs from 'fs';
import * as path from 'path';

/** The part of test/vm/lab.ts the bench uses. */
export interface BenchGuestResult {
  exitCode: number;
  output: string;
  kernelProblems: string[];
  runDir: string;
  timings: { bootMs: number | null; scriptMs: number | null; totalMs: number };
}

export interface BenchLab {
  buildModule(srcDir: string): Promise<string>;
  run(opts: {
    script: string;
    disks: Array<{ path: string; sizeBytes: number }>;
    modules: string[];
    env: Record<string, string>;
    timeoutMs: number;
    cpus: number;
  }): Promise<BenchGuestResult>;
}

export interface LabModules {
  prepareLab(): Promise<BenchLab>;
  killAllLabProcesses(): Promise<void>;
}

interface CompilableModule {
  _compile(code: string, filename: string): void;
}

interface TypeScriptApi {
  transpileModule(source: string, options: { fileName: string; compilerOptions: Record<string, unknown> }): { outputText: string };
  ModuleKind: { CommonJS: number };
  ScriptTarget: { ES2022: number };
}

export function loadLab(repoRoot: string): LabModules {
  const labDir = path.join(repoRoot, 'test', 'vm');
  let ts: TypeScriptApi;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    ts = require('typescript') as TypeScriptApi;
  } catch {
    throw new Error('the VM lab needs the typescript package (a dev dependency): run `npm install` in the repository');
  }
  const previous = require.extensions['.ts'];
  require.extensions['.ts'] = (module, filename) => {
    if (!filename.startsWith(labDir + path.sep)) {
      if (previous) return previous(module, filename);
      throw new Error(`cannot load ${filename}: only the VM lab's TypeScript is transpiled here`);
    }
    const out = ts.transpileModule(fs.readFileSync(filename, 'utf8'), {
      fileName: filename,
      compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
    });
    (module as unknown as CompilableModule)._compile(out.outputText, filename);
  };
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const lab = require(path.join(labDir, 'lab.ts')) as Pick<LabModules, 'prepareLab'>;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const processes = require(path.join(labDir, 'processes.ts')) as Pick<LabModules, 'killAllLabProcesses'>;
  return { prepareLab: lab.prepareLab, killAllLabProcesses: processes.killAllLabProcesses };
}
