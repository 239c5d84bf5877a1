import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { agentNodeFlags } from '../../agent/node-flags';
import { tempDirs } from '../helpers/temp-dirs';

const tmp = tempDirs();

describe("the agent's node flags (the service unit's NODE_OPTIONS line)", () => {
  it('are read from the unit template and accepted by node in NODE_OPTIONS, as systemd passes them', () => {
    const flags = agentNodeFlags();
    expect(flags).toContain('--max-semi-space-size=2');
    // node refuses a flag NODE_OPTIONS may not carry (exit 9): the unit would never start.
    const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(require("v8").getHeapStatistics().total_available_size > 0))'], {
      env: { ...process.env, NODE_OPTIONS: flags.join(' ') },
      encoding: 'utf8',
    });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe('true');
  });

  it('are none when the unit sets no NODE_OPTIONS', () => {
    const root = tmp('node-flags');
    fs.mkdirSync(path.join(root, 'installer'));
    fs.writeFileSync(path.join(root, 'installer', 'ferry-agent.service.in'), '[Service]\nEnvironment=FERRY_LOG_LEVEL=info\n');
    expect(agentNodeFlags(root)).toEqual([]);
  });
});
