import { describe, expect, it } from 'vitest';
import { EventOutbox } from '../../agent/events';
import { ferry } from '../../proto/frames';
import { validateAgentEvent } from '../../proto/validate-control';

describe('EventOutbox: events wait for a session, bounded', () => {
  it('keeps events in order until they can be sent, and sends each once', () => {
    const box = new EventOutbox(10);
    box.push({ severity: 'info', kind: 'resync-started', volumeId: 'vol1', text: 'full resync of vol1 started' });
    box.push({ severity: 'warning', kind: 'round-hold-expired', text: 'round 3' });
    const sent: ferry.IAgentEvent[] = [];
    box.flush(() => false);
    expect(box.queued).toBe(2);
    box.flush((e) => {
      sent.push(e);
      return true;
    });
    expect(sent.map((e) => e.kind)).toEqual(['resync-started', 'round-hold-expired']);
    expect(sent[1]).toMatchObject({ severity: ferry.AgentEvent.Severity.WARNING, volumeId: '' });
    // What it sends passes the receiver's validation.
    expect(validateAgentEvent(sent[0])).toMatchObject({ severity: 'info', kind: 'resync-started', volumeId: 'vol1' });
    expect(box.queued).toBe(0);
  });

  it('stops at the first event the session does not take, and resumes there', () => {
    const box = new EventOutbox(10);
    for (const t of ['a', 'b', 'c']) box.push({ severity: 'info', kind: 'resync-finished', text: t });
    const sent: string[] = [];
    box.flush((e) => (sent.length < 1 ? (sent.push(e.text ?? ''), true) : false));
    box.flush((e) => (sent.push(e.text ?? ''), true));
    expect(sent).toEqual(['a', 'b', 'c']);
  });

  it('drops the oldest when full, and counts them', () => {
    const box = new EventOutbox(3);
    for (let i = 0; i < 5; i++) box.push({ severity: 'warning', kind: 'app-point-missed', text: `miss ${i}` });
    const sent: string[] = [];
    box.flush((e) => (sent.push(e.text ?? ''), true));
    expect(sent).toEqual(['miss 2', 'miss 3', 'miss 4']);
    expect(box.dropped).toBe(2);
  });
});
