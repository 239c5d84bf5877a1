// Finds the installer files and makes (or checks) the agent package that a push uploads.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ExitCode, FerryError } from '../common/errors';
import { findPackageRoot } from '../native/addon';

export interface InstallerFiles {
  dir: string;
  installScript: string;
  makePackage: string;
  windowsDir: string;
}

export function installerFiles(): InstallerFiles {
  const dir = path.join(findPackageRoot(__dirname), 'installer');
  const files = {
    dir,
    installScript: path.join(dir, 'install.sh'),
    makePackage: path.join(dir, 'make-package.sh'),
    windowsDir: path.join(dir, 'windows'),
  };
  if (!fs.existsSync(files.installScript)) throw new FerryError(`installer not found: ${files.installScript} is missing`, ExitCode.notFound);
  return files;
}

/** Checks a given package file looks like one from make-package.sh. */
export function checkPackageFile(file: string): string {
  const abs = path.resolve(file);
  let st: fs.Stats;
  try {
    st = fs.statSync(abs);
  } catch {
    throw new FerryError(`--package ${file} does not exist`, ExitCode.usage);
  }
  if (!st.isFile() || !/\.tar\.gz$/.test(abs)) throw new FerryError(`--package ${file} is not a .tar.gz agent package`, ExitCode.usage);
  return abs;
}

/** Runs make-package.sh into a private temp folder; the caller removes `dir` afterwards. */
export function buildPackage(files: InstallerFiles, log: (line: string) => void): Promise<{ file: string; dir: string }> {
  if (!fs.existsSync(files.makePackage)) {
    return Promise.reject(new FerryError(`cannot build the agent package here (${files.makePackage} is missing): pass --package FILE`, ExitCode.usage));
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-push-pkg-'));
  const out = path.join(dir, 'ferry-agent.tar.gz');
  log(`packaging the agent (${path.relative(process.cwd(), files.makePackage) || files.makePackage})`);
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [files.makePackage, '--out', out], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', (err) => reject(new FerryError(`cannot run make-package.sh: ${err.message}`)));
    child.on('exit', (code) => {
      if (code === 0) return resolve({ file: out, dir });
      fs.rmSync(dir, { recursive: true, force: true });
      reject(new FerryError(`packaging failed: ${stderr.trim().split('\n').pop() ?? `exit ${code}`}`));
    });
  });
}
