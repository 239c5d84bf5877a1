import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

let cachedVersion: string | undefined;

/** The version in Ferry's package.json (found above this file, in the source tree and in dist/ alike). */
function packageVersion(): string {
  if (cachedVersion !== undefined) return cachedVersion;
  let dir = __dirname;
  for (let i = 0; i < 5; i++) {
    try {
      const doc = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: unknown; version?: unknown };
      if (doc.name === 'ferry' && typeof doc.version === 'string') return (cachedVersion = doc.version);
    } catch {
      // not here: look one folder up
    }
    dir = path.dirname(dir);
  }
  return (cachedVersion = 'unknown');
}

/** What the agent says it is in Hello.software, e.g. "ferry-agent/0.1.0". */
export function agentSoftware(): string {
  return `ferry-agent/${packageVersion()}`;
}

/** The machine's OS in Hello.os: platform, kernel release, architecture ("linux 6.1.0-18-amd64 x64"). */
export function osDescription(): string {
  return `${process.platform} ${os.release()} ${process.arch}`;
}
