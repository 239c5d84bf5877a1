/**
 * The receiver core's per-volume events (receiver/volume-events.ts): every session that
 * declared a volume hears them, and a session may leave while one is being told.
 */
import { describe, expect, it } from 'vitest';
import { ErrorCode, ProtocolError } from '../../proto/errors';
import { VolumeEmitter, VolumeListener } from '../../receiver/volume-events';

function recorder(heard: string[], name: string, onFailed?: () => void): VolumeListener {
  return {
    durable: (e) => heard.push(`${name} durable ${e.durableSeq}`),
    applied: (e) => heard.push(`${name} applied ${e.appliedSeq}`),
    throttle: (e) => heard.push(`${name} throttle ${e.reason ?? 'released'}`),
    failed: (e) => {
      heard.push(`${name} failed ${e.error.codeName}`);
      onFailed?.();
    },
    repair: (e) => heard.push(`${name} repair ${e.id}`),
  };
}

describe('VolumeEmitter', () => {
  it('tells every subscriber, in order, until it unsubscribes', () => {
    const events = new VolumeEmitter();
    const heard: string[] = [];
    expect(events.subscribed).toBe(false);
    const offA = events.subscribe(recorder(heard, 'a'));
    events.subscribe(recorder(heard, 'b'));
    expect(events.subscribed).toBe(true);
    events.emit('durable', { volumeId: 'v', durableSeq: 5, appliedSeq: 2 });
    events.emit('throttle', { volumeId: 'v', reason: 'spool above cap', keepReason: 'spool above cap' });
    offA();
    events.emit('applied', { volumeId: 'v', durableSeq: 5, appliedSeq: 5 });
    events.emit('repair', { id: 7, volumeId: 'v', reason: 'damage', ranges: [], state: 'pending', createdUs: 0 });
    expect(heard).toEqual(['a durable 5', 'b durable 5', 'a throttle spool above cap', 'b throttle spool above cap', 'b applied 5', 'b repair 7']);
  });

  it('lets a listener leave while it is being told (a failed session closes)', () => {
    const events = new VolumeEmitter();
    const heard: string[] = [];
    const offA: () => void = events.subscribe(recorder(heard, 'a', () => offA()));
    events.subscribe(recorder(heard, 'b'));
    events.emit('failed', { volumeId: 'v', error: new ProtocolError(ErrorCode.VOLUME_FAILED, 'spool write failed') });
    events.emit('durable', { volumeId: 'v', durableSeq: 6, appliedSeq: 5 });
    expect(heard).toEqual(['a failed VOLUME_FAILED', 'b failed VOLUME_FAILED', 'b durable 6']);
  });
});
