import type { ComponentChildren } from 'preact';
import type { Machine } from '../api-types';
import { ActionDraft, BootGroupDraft, move, newAction, newBootGroup, PlanDraft, PointDraft, PointKindDraft } from '../plan-draft';
import { Field, invalidProps } from './Field';

export interface EditorProps {
  draft: PlanDraft;
  setDraft: (d: PlanDraft) => void;
  machines: Machine[];
  /** The message to show at an editor path, if the error was placed there. */
  errorAt: (path: string) => string | undefined;
}

function Alert({ id, message }: { id?: string; message: string | undefined }) {
  if (message === undefined) return null;
  return (
    <p class="note note-error" id={id} role="alert">
      {message}
    </p>
  );
}

function MoveButtons({ index, count, onMove, onRemove, removeText }: { index: number; count: number; onMove: (delta: number) => void; onRemove: () => void; removeText: string }) {
  return (
    <div class="move-buttons">
      <button type="button" class="btn-small" disabled={index === 0} onClick={() => onMove(-1)}>
        Move up
      </button>
      <button type="button" class="btn-small" disabled={index === count - 1} onClick={() => onMove(1)}>
        Move down
      </button>
      <button type="button" class="btn-small btn-danger" onClick={onRemove}>
        {removeText}
      </button>
    </div>
  );
}

function ActionEditor({ action, path, index, count, side, onChange, onMove, onRemove, errorAt }: {
  action: ActionDraft;
  path: string;
  index: number;
  count: number;
  side: string;
  onChange: (a: ActionDraft) => void;
  onMove: (delta: number) => void;
  onRemove: () => void;
  errorAt: (path: string) => string | undefined;
}) {
  const id = (f: string): string => `act-${action.key}-${f}`;
  const e = (f: string): string | undefined => errorAt(`${path}.${f}`);
  const kindWord = action.kind === 'script' ? 'script' : 'manual step';
  return (
    <fieldset class="action">
      <legend>
        {side} action {index + 1}: {kindWord}
      </legend>
      <Alert message={errorAt(path) ?? e('kind')} />
      <div class="form-grid">
        <Field id={id('name')} label="Name" error={e('name')}>
          <input id={id('name')} value={action.name} onInput={(ev) => onChange({ ...action, name: ev.currentTarget.value })} {...invalidProps(id('name'), e('name'))} />
        </Field>
        {action.kind === 'script' ? (
          <>
            <Field id={id('timeout')} label="Timeout (seconds)" error={e('timeoutMs')}>
              <input id={id('timeout')} type="number" min={1} step="any" value={action.timeoutSec} onInput={(ev) => onChange({ ...action, timeoutSec: ev.currentTarget.value })} {...invalidProps(id('timeout'), e('timeoutMs'))} />
            </Field>
            <div class="span-all">
              <Field id={id('command')} label="Command" error={e('command')} hint="Runs on the receiver; FERRY_MACHINES and FERRY_MACHINE_<NAME>_ADDRESS name the machines.">
                <input id={id('command')} class="mono" value={action.command} onInput={(ev) => onChange({ ...action, command: ev.currentTarget.value })} {...invalidProps(id('command'), e('command'))} />
              </Field>
            </div>
          </>
        ) : (
          <div class="span-all">
            <Field id={id('instructions')} label="Instructions" error={e('instructions')}>
              <textarea id={id('instructions')} rows={2} value={action.instructions} onInput={(ev) => onChange({ ...action, instructions: ev.currentTarget.value })} {...invalidProps(id('instructions'), e('instructions'))} />
            </Field>
          </div>
        )}
      </div>
      <MoveButtons index={index} count={count} onMove={onMove} onRemove={onRemove} removeText="Remove action" />
    </fieldset>
  );
}

function ActionList({ group, gi, side, onChange, errorAt }: { group: BootGroupDraft; gi: number; side: 'before' | 'after'; onChange: (g: BootGroupDraft) => void; errorAt: (path: string) => string | undefined }) {
  const list = group[side];
  const set = (next: ActionDraft[]): void => onChange({ ...group, [side]: next });
  const path = `bootGroups.${gi}.${side}`;
  const sideWord = side === 'before' ? 'Before' : 'After';
  return (
    <div class="actions-list">
      <h4>
        {sideWord} boot group {gi + 1}
      </h4>
      <Alert message={errorAt(path)} />
      {list.length === 0 && <p class="muted small">No actions.</p>}
      {list.map((a, ai) => (
        <ActionEditor
          key={a.key}
          action={a}
          path={`${path}.${ai}`}
          index={ai}
          count={list.length}
          side={sideWord}
          errorAt={errorAt}
          onChange={(na) => set(list.map((x, i) => (i === ai ? na : x)))}
          onMove={(d) => set(move(list, ai, d))}
          onRemove={() => set(list.filter((_, i) => i !== ai))}
        />
      ))}
      <div class="actions">
        <button type="button" class="btn-small" onClick={() => set([...list, newAction('script')])}>
          Add script {side}
        </button>
        <button type="button" class="btn-small" onClick={() => set([...list, newAction('manual')])}>
          Add manual step {side}
        </button>
      </div>
    </div>
  );
}

function PointPicker({ point, onChange, error }: { point: PointDraft; onChange: (p: PointDraft) => void; error: string | undefined }) {
  return (
    <div class="form-grid">
      <Field id="plan-point-kind" label="Default point" error={error}>
        <select id="plan-point-kind" value={point.kind} onChange={(e) => onChange({ ...point, kind: e.currentTarget.value as PointKindDraft })} {...invalidProps('plan-point-kind', error)}>
          <option value="latest">Latest</option>
          <option value="latest-app">Latest app-consistent</option>
          <option value="round">A group round</option>
          <option value="point">A point id</option>
          <option value="time">A time</option>
        </select>
      </Field>
      {point.kind === 'round' && (
        <Field id="plan-point-round" label="Round number">
          <input id="plan-point-round" type="number" min={1} step={1} value={point.roundId} onInput={(e) => onChange({ ...point, roundId: e.currentTarget.value })} />
        </Field>
      )}
      {point.kind === 'point' && (
        <Field id="plan-point-id" label="Point id">
          <input id="plan-point-id" type="number" min={1} step={1} value={point.pointId} onInput={(e) => onChange({ ...point, pointId: e.currentTarget.value })} />
        </Field>
      )}
      {point.kind === 'time' && (
        <Field id="plan-point-time" label="Point time">
          <input id="plan-point-time" type="datetime-local" value={point.time} onInput={(e) => onChange({ ...point, time: e.currentTarget.value })} />
        </Field>
      )}
    </div>
  );
}

function Section({ title, children }: { title: string; children: ComponentChildren }) {
  return (
    <section class="editor-section">
      <h3>{title}</h3>
      {children}
    </section>
  );
}

/** The plan's fields; the caller owns the draft, saving and the error. */
export function PlanEditor({ draft, setDraft, machines, errorAt }: EditorProps) {
  const groups = draft.bootGroups;
  const setGroups = (g: BootGroupDraft[]): void => setDraft({ ...draft, bootGroups: g });
  const groupOf = new Map<string, number>();
  groups.forEach((g, gi) => g.machines.forEach((m) => groupOf.set(m, gi)));
  const known = new Set(machines.map((m) => m.id));
  return (
    <>
      <Field id="plan-name" label="Plan name" error={errorAt('name')} hint="Letters, digits, '.', '_' or '-'; it is also the plan's id.">
        <input id="plan-name" value={draft.name} onInput={(e) => setDraft({ ...draft, name: e.currentTarget.value })} {...invalidProps('plan-name', errorAt('name'))} />
      </Field>

      <Section title="Boot groups">
        <Alert message={errorAt('bootGroups')} />
        {groups.map((g, gi) => {
          const path = `bootGroups.${gi}`;
          const mErr = errorAt(`${path}.machines`);
          const unknown = g.machines.filter((m) => !known.has(m));
          return (
            <fieldset class="bootgroup" key={g.key}>
              <legend>Boot group {gi + 1}</legend>
              <Alert message={errorAt(path)} />
              <fieldset class="machines" aria-describedby={mErr !== undefined ? `bg-${g.key}-machines-error` : undefined}>
                <legend>Machines</legend>
                {machines.length === 0 && <p class="muted small">No machines registered.</p>}
                <div class="checks">
                  {[...machines, ...unknown.map((id) => ({ id, name: id }))].map((m) => {
                    const id = `bg-${g.key}-m-${m.id}`;
                    const elsewhere = groupOf.get(m.id);
                    const taken = elsewhere !== undefined && elsewhere !== gi;
                    return (
                      <span class="check" key={m.id}>
                        <input
                          id={id}
                          type="checkbox"
                          checked={g.machines.includes(m.id)}
                          disabled={taken}
                          onChange={(e) => {
                            const on = e.currentTarget.checked;
                            const next = on ? [...g.machines, m.id] : g.machines.filter((x) => x !== m.id);
                            setGroups(groups.map((x, i) => (i === gi ? { ...g, machines: next } : x)));
                          }}
                        />
                        <label for={id}>
                          {m.name}
                          {taken && <span class="muted"> (boot group {elsewhere + 1})</span>}
                        </label>
                      </span>
                    );
                  })}
                </div>
                <Alert id={`bg-${g.key}-machines-error`} message={mErr} />
              </fieldset>
              <div class="grid-2 tight">
                <ActionList group={g} gi={gi} side="before" errorAt={errorAt} onChange={(ng) => setGroups(groups.map((x, i) => (i === gi ? ng : x)))} />
                <ActionList group={g} gi={gi} side="after" errorAt={errorAt} onChange={(ng) => setGroups(groups.map((x, i) => (i === gi ? ng : x)))} />
              </div>
              <MoveButtons index={gi} count={groups.length} onMove={(d) => setGroups(move(groups, gi, d))} onRemove={() => setGroups(groups.filter((_, i) => i !== gi))} removeText="Remove boot group" />
            </fieldset>
          );
        })}
        <button type="button" onClick={() => setGroups([...groups, newBootGroup()])}>
          Add boot group
        </button>
      </Section>

      <Section title="Health check">
        <Alert message={errorAt('health')} />
        <div class="form-grid">
          <Field id="plan-serial" label="Serial pattern" error={errorAt('health.serialPattern')} hint="A regular expression the console must print; empty: none.">
            <input id="plan-serial" class="mono" value={draft.serialPattern} onInput={(e) => setDraft({ ...draft, serialPattern: e.currentTarget.value })} {...invalidProps('plan-serial', errorAt('health.serialPattern'))} />
          </Field>
          <Field id="plan-tcp" label="TCP port" error={errorAt('health.tcpPort')} hint="0: none.">
            <input id="plan-tcp" type="number" min={0} max={65535} step={1} value={draft.tcpPort} onInput={(e) => setDraft({ ...draft, tcpPort: e.currentTarget.value })} {...invalidProps('plan-tcp', errorAt('health.tcpPort'))} />
          </Field>
          <Field id="plan-health-timeout" label="Health timeout (seconds)" error={errorAt('health.timeoutMs')}>
            <input id="plan-health-timeout" type="number" min={10} step="any" value={draft.healthTimeoutSec} onInput={(e) => setDraft({ ...draft, healthTimeoutSec: e.currentTarget.value })} {...invalidProps('plan-health-timeout', errorAt('health.timeoutMs'))} />
          </Field>
        </div>
      </Section>

      <Section title="Default point">
        <PointPicker point={draft.defaultPoint} error={errorAt('defaultPoint')} onChange={(p) => setDraft({ ...draft, defaultPoint: p })} />
      </Section>
    </>
  );
}
