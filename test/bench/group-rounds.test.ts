import { spawnSync } from 'child_process';
import * as path from 'path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../helpers/receiver-process';

// The group-rounds bench drives real agents through the receiver's management API (it logs in
// as the first operator); the hold times it prints are not asserted, the rounds it ran are.
describe('group-rounds bench (small run)', () => {
  it('logs in, runs every round for 1, 2 and 3 agents, and none aborts', () => {
    const r = spawnSync(process.execPath, [path.join(REPO_ROOT, 'dist/bench/group-rounds.js'), '--rounds', '2', '--json'], { encoding: 'utf8', timeout: 120_000 });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { figures: Array<{ agents: number; rounds: number; aborted: number }> };
    expect(out.figures.map((f) => [f.agents, f.rounds, f.aborted])).toEqual([
      [1, 2, 0],
      [2, 2, 0],
      [3, 2, 0],
    ]);
  });
});
