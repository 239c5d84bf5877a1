import { describe, expect, it } from 'vitest';
import { volumeState, type VolumeStateFacts } from '../../agent/status';

const healthy: VolumeStateFacts = { connected: true, resyncing: false, repairing: false, throttled: false, kind: 'kernel', mode: 'exact' };

describe('volumeState', () => {
  it('puts a lost connection first, then resync, repair and throttling', () => {
    expect(volumeState({ ...healthy, connected: false, resyncing: true })).toBe('disconnected');
    expect(volumeState({ ...healthy, resyncing: true, repairing: true })).toBe('resyncing');
    expect(volumeState({ ...healthy, repairing: true, throttled: true })).toBe('repairing');
    expect(volumeState({ ...healthy, throttled: true, mode: 'bitmap-draining' })).toBe('throttled');
  });

  it('calls dm-ferry below exact degraded, and any source draining a dirty bitmap', () => {
    expect(volumeState(healthy)).toBe('protected');
    expect(volumeState({ ...healthy, mode: 'approximate' })).toBe('degraded');
    expect(volumeState({ ...healthy, mode: 'bitmap-draining' })).toBe('degraded');
    // ebpf and scan points are approximate by design: that alone is not degraded
    expect(volumeState({ ...healthy, kind: 'ebpf', mode: 'approximate' })).toBe('protected');
    expect(volumeState({ ...healthy, kind: 'scan', mode: 'approximate' })).toBe('protected');
    expect(volumeState({ ...healthy, kind: 'ebpf', mode: 'bitmap-draining' })).toBe('degraded');
  });
});
