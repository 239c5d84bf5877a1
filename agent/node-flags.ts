// The V8 flags of the agent process (`ferry agent run`). V8 sizes its heap as the process starts,
// before any of our code runs (v8.setFlagsFromString changes nothing then), so the flags go where
// the process is started. They are written in one place, the NODE_OPTIONS line of the service
// unit (installer/ferry-agent.service.in); benches and tests that start an agent read them here.
import * as fs from 'fs';
import * as path from 'path';
import { findPackageRoot } from '../native/addon';

export const SERVICE_UNIT_TEMPLATE = path.join('installer', 'ferry-agent.service.in');

/** The flags the service unit gives the agent's node, for `spawn(process.execPath, [...flags, ferry, 'agent', 'run', ...])`. */
export function agentNodeFlags(packageRoot: string = findPackageRoot()): string[] {
  const unit = fs.readFileSync(path.join(packageRoot, SERVICE_UNIT_TEMPLATE), 'utf8');
  const line = /^Environment=NODE_OPTIONS=(.*)$/m.exec(unit);
  return line ? line[1].trim().split(/\s+/).filter((flag) => flag !== '') : [];
}
