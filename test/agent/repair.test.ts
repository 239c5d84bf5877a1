/**
 * The whole repair path with real processes: a replica block damaged at rest is found by
 * `ferry receiver verify`, the running receiver asks the agent (RepairRequest), the agent sends
 * the source's blocks that differ and answers RepairDone, and the replica is whole again: a
 * point cut after the repair exports byte-exact, the damage shows as resolved.
 *
 * Runs under both journals. The damaged block is one no retained version covers (retention has
 * aged out everything before the damage): under redo a block whose newest version is still
 * retained is never read from the replica.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AgentLab, waitFor } from '../helpers/agent-lab';
import { flipByte } from '../helpers/fault-lab';
import { runFerry } from '../helpers/receiver-process';
import { sha256 } from '../helpers/volume-model';
import { JOURNALS, useJournal } from '../helpers/journal';

const SIZE = 16 * 1024 * 1024;
/** A receiver started with these ages out every point at start-up (and not again while it runs). */
const AGE_OUT_ALL = ['--retention', '1ms', '--retention-interval', '1h'];

describe.each(JOURNALS)('a damaged replica block is repaired from the agent (%s journal)', (journal) => {
  useJournal(journal);
  const lab = new AgentLab(`repair-${journal}`);
  afterAll(() => lab.cleanup());

  it('verify finds it, the receiver asks the agent, the agent sends the block, later points export exact', async () => {
    await lab.startReceiver();
    const image = lab.volumeImage('vol.img', SIZE, 31, 0.75);
    lab.writeConfig({ volumes: [{ id: 'vol', path: image }] });
    lab.register();
    let agent = lab.startAgent();
    const pid = agent.child.pid as number;
    await lab.waitProtected('vol', pid);
    const first = await lab.tagAndExport('vol');
    expect(sha256(first.image)).toBe(sha256(fs.readFileSync(image)));

    // Damage one replica block with everything stopped, as a bad sector would.
    await agent.stop();
    await lab.receiver.stop();
    await lab.startReceiver(AGE_OUT_ALL);
    await lab.receiver.stop();
    const replica = path.join(lab.receiverDir, 'volumes', 'vol', 'replica.img');
    const damagedAt = 5 * 1024 * 1024 + 4096 * 7 + 123;
    flipByte(replica, damagedAt);
    await lab.startReceiver();
    agent = lab.startAgent();
    await lab.waitProtected('vol', agent.child.pid as number);

    const v = runFerry(['receiver', 'verify', '--data', lab.receiverDir, '--json']);
    expect(v.status, v.stderr).toBe(8);
    const report = JSON.parse(v.stdout) as { volumes: Array<{ damage: Array<{ kind: string; volumeOffset?: number }> }> };
    expect(report.volumes[0].damage).toContainEqual(expect.objectContaining({ kind: 'replica', volumeOffset: damagedAt - (damagedAt % 4096) }));

    // The receiver picks up what verify recorded and asks the agent; the agent answers.
    await waitFor(
      'the repair to be applied',
      () => {
        const s = JSON.parse(runFerry(['receiver', 'status', '--data', lab.receiverDir, '--json']).stdout) as { volumes: Array<{ volumeId: string; state: string }> };
        return s.volumes.find((x) => x.volumeId === 'vol')?.state === 'healthy' && /repair complete/.test(agent.output());
      },
      120_000,
      250,
    );
    expect(lab.receiver.output()).toMatch(/repair requested from the agent/);
    const after = await lab.tagAndExport('vol');
    expect(sha256(after.image)).toBe(sha256(fs.readFileSync(image)));
    // Undo rewrote the replica block; redo keeps the repair's version in the spool (what the
    // export above read) and the damaged block in the replica until the base passes the repair.
    if (journal === 'undo') expect(runFerry(['receiver', 'verify', '--data', lab.receiverDir]).status).toBe(0);
    await agent.stop();
    await lab.receiver.stop();
    await lab.startReceiver(AGE_OUT_ALL);
    await lab.receiver.stop();
    expect(runFerry(['receiver', 'verify', '--data', lab.receiverDir]).status).toBe(0);
  });
});
