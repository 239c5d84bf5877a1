// How the kernel source attaches to a protected boot disk's dm-ferry device at boot (planAttach),
// for the histories a boot disk goes through: ebpf capture before the first protected boot,
// clean reboots, crashes, boots without dm-ferry, metadata made anew. The rule throughout: a
// resync by hash compare unless the stream provably continues, and a new load never sends a seq
// at or below the receiver's durable one.
import { describe, expect, it } from 'vitest';
import { planAttach, type DeviceAtAttach, type StreamHistory } from '../../agent/capture/kernel/attach-plan';

const device = (over: Partial<DeviceAtAttach>): DeviceAtAttach => ({ generation: 1, startState: 'new', firstSeq: 1, committedSeq: 0, dirtyBits: 0, ...over });
const noHistory: StreamHistory = { loaded: false, generation: undefined, streamEnd: 1, committedStream: 0, resync: { kind: 'none', cursor: 0 }, lookup: () => undefined };
/** The kernel source's state after a load `generation` handed out stream seqs up to streamEnd - 1. */
const history = (generation: number, streamEnd: number, committedStream: number, anchors: Record<string, number> = {}): StreamHistory => ({
  loaded: true,
  generation,
  streamEnd,
  committedStream,
  resync: { kind: 'none', cursor: 0 },
  lookup: (g, k) => anchors[`${g}:${k}`],
});

describe('attaching to ferry-boot at boot', () => {
  it('first protected boot after ebpf capture: NEW device, the receiver holds the ebpf stream -> hash compare after it', () => {
    const p = planAttach(device({ startState: 'new' }), noHistory, 730);
    expect(p.need.kind).toBe('hash-compare');
    expect(p.nextStream).toBe(731);
    expect(p.firstKseq).toBe(1);
  });

  it('clean reboot: CLEAN with the saved bits, nothing else sent meanwhile -> delta only, the stream goes on', () => {
    const p = planAttach(device({ generation: 3, startState: 'clean', firstSeq: 900, dirtyBits: 12 }), history(2, 801, 800), 800);
    expect(p.need).toMatchObject({ kind: 'delta' });
    expect(p.nextStream).toBe(801);
    expect(p.firstKseq).toBe(900);
  });

  it('crash or power cut: DIRTY -> hash compare, after the receiver\'s seq', () => {
    const p = planAttach(device({ generation: 3, startState: 'dirty', firstSeq: 4_294_968_000, dirtyBits: 1024 }), history(2, 801, 790), 795);
    expect(p.need.kind).toBe('hash-compare');
    expect(p.nextStream).toBe(796);
  });

  it('a boot without dm-ferry that streamed with ebpf, then CLEAN again: the receiver is past the kernel stream -> hash compare', () => {
    const p = planAttach(device({ generation: 3, startState: 'clean', firstSeq: 900, dirtyBits: 3 }), history(2, 801, 800), 950);
    expect(p.need.kind).toBe('hash-compare');
    expect(p.nextStream).toBe(951);
  });

  it('a boot without dm-ferry marks the saved bitmap stale in the initramfs: DIRTY next, generation kept -> hash compare', () => {
    const p = planAttach(device({ generation: 3, startState: 'dirty', firstSeq: 4_294_968_000, dirtyBits: 1024 }), history(2, 801, 800), 800);
    expect(p.need.kind).toBe('hash-compare');
    expect(p.nextStream).toBe(801);
  });

  it('metadata made anew (reinstall): NEW again at generation 1, as in the state -> hash compare, never the old seqs', () => {
    // The state still maps kernel seq 1 of "generation 1" to stream seq 5, from the old load.
    const p = planAttach(device({ startState: 'new', generation: 1, firstSeq: 1 }), history(1, 401, 400, { '1:1': 5 }), 400);
    expect(p.need.kind).toBe('hash-compare');
    expect(p.nextStream).toBe(401);
  });

  it('the agent restarts during the first protected boot (same NEW load, nothing committed yet): the stream continues', () => {
    const p = planAttach(device({ startState: 'new', generation: 1, firstSeq: 1 }), history(1, 760, 730, { '1:1': 731 }), 745);
    expect(p.need.kind).toBe('none');
    expect(p.nextStream).toBe(731);
  });
});
