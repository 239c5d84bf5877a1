import * as fs from 'fs';
import Database from 'better-sqlite3';
import { ExitCode, FerryError } from '../common/errors';
import { ControlError } from '../control/contract';
import type { JobFilter, MachineProtection } from './contract';
import { DEFAULT_HEALTH, Job, JobKind, JobMachine, JobState, JobStep, Plan, PointSpec, ProtectionState } from './model';

/**
 * Recovery's tables, in the receiver's catalog file (catalog.db) on a connection of their own,
 * as ControlStore does: plans, jobs (steps and machines as JSON) and each machine's protection
 * state (protected here, or failed over to a recovered VM).
 */

const SCHEMA = `
CREATE TABLE IF NOT EXISTS recovery_plans (
  id TEXT PRIMARY KEY, plan TEXT NOT NULL, revision INTEGER NOT NULL,
  created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS recovery_jobs (
  id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, plan_id TEXT NOT NULL, state TEXT NOT NULL,
  point TEXT NOT NULL, started_ms INTEGER NOT NULL, finished_ms INTEGER, rto_ms INTEGER,
  reason TEXT NOT NULL, steps TEXT NOT NULL, machines TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS recovery_jobs_by_plan ON recovery_jobs (plan_id, id);
CREATE TABLE IF NOT EXISTS recovery_protection (
  machine_id TEXT PRIMARY KEY, state TEXT NOT NULL, runs_on TEXT NOT NULL, job_id INTEGER, since_ms INTEGER NOT NULL);
`;

interface RawPlan {
  id: string;
  plan: string;
  revision: number;
  created_ms: number;
  updated_ms: number;
}

interface RawJob {
  id: number;
  kind: JobKind;
  plan_id: string;
  state: JobState;
  point: string;
  started_ms: number;
  finished_ms: number | null;
  rto_ms: number | null;
  reason: string;
  steps: string;
  machines: string;
}

interface RawProtection {
  machine_id: string;
  state: ProtectionState;
  runs_on: string;
  job_id: number | null;
  since_ms: number;
}

/** What a stored plan's JSON holds (id, revision and times are columns). */
type PlanBody = Omit<Plan, 'id' | 'revision' | 'createdMs' | 'updatedMs'>;

function parseJson<T>(text: string, fallback: T): T {
  try {
    return JSON.parse(text) as T;
  } catch {
    return fallback;
  }
}

function toPlan(r: RawPlan): Plan {
  const body = parseJson<Partial<PlanBody>>(r.plan, {});
  return {
    id: r.id,
    name: body.name ?? r.id,
    bootGroups: body.bootGroups ?? [],
    health: { ...DEFAULT_HEALTH, ...body.health },
    defaultPoint: body.defaultPoint ?? { kind: 'latest' },
    revision: r.revision,
    createdMs: r.created_ms,
    updatedMs: r.updated_ms,
  };
}

function planBody(p: Plan | PlanBody): string {
  const body: PlanBody = { name: p.name, bootGroups: p.bootGroups, health: p.health, defaultPoint: p.defaultPoint };
  return JSON.stringify(body);
}

function toJob(r: RawJob): Job {
  return {
    id: r.id,
    kind: r.kind,
    planId: r.plan_id,
    state: r.state,
    point: parseJson<PointSpec>(r.point, { kind: 'latest' }),
    startedMs: r.started_ms,
    finishedMs: r.finished_ms,
    rtoMs: r.rto_ms,
    steps: parseJson<JobStep[]>(r.steps, []),
    machines: parseJson<JobMachine[]>(r.machines, []),
    reason: r.reason,
  };
}

function toProtection(r: RawProtection): MachineProtection {
  return { machineId: r.machine_id, state: r.state, runsOn: r.runs_on, jobId: r.job_id, sinceMs: r.since_ms };
}

export type NewJob = Omit<Job, 'id'>;

export class RecoveryStore {
  private constructor(private readonly db: Database.Database) {}

  static open(file: string): RecoveryStore {
    if (!fs.existsSync(file)) fs.writeFileSync(file, '', { mode: 0o600 });
    let db: Database.Database | undefined;
    try {
      db = new Database(file);
      db.pragma('busy_timeout = 5000');
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = FULL');
      db.exec(SCHEMA);
      return new RecoveryStore(db);
    } catch (err) {
      db?.close();
      throw new FerryError(`the recovery tables of ${file} cannot be read (${(err as Error).message}); run \`ferry receiver verify\``, ExitCode.failure);
    }
  }

  close(): void {
    this.db.close();
  }

  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  // ---- plans ---------------------------------------------------------------------------------

  /** A new plan at revision 1; conflict when one of that id exists. */
  addPlan(body: PlanBody & { id: string }, nowMs: number): Plan {
    if (this.plan(body.id)) throw new ControlError('conflict', `plan ${body.id} exists already`, 'name');
    this.db.prepare('INSERT INTO recovery_plans (id, plan, revision, created_ms, updated_ms) VALUES (?, ?, 1, ?, ?)').run(body.id, planBody(body), nowMs, nowMs);
    return this.plan(body.id) as Plan;
  }

  plan(id: string): Plan | undefined {
    const r = this.db.prepare('SELECT * FROM recovery_plans WHERE id = ?').get(id) as RawPlan | undefined;
    return r && toPlan(r);
  }

  plans(): Plan[] {
    return (this.db.prepare('SELECT * FROM recovery_plans ORDER BY id').all() as RawPlan[]).map(toPlan);
  }

  /**
   * Replaces the plan when its revision is still `expectedRevision` (one statement: two editors
   * cannot both win); the stored plan gets the next revision. not-found / conflict otherwise.
   */
  replacePlan(id: string, body: PlanBody, expectedRevision: number, nowMs: number): Plan {
    const changed = this.db
      .prepare('UPDATE recovery_plans SET plan = ?, revision = revision + 1, updated_ms = ? WHERE id = ? AND revision = ?')
      .run(planBody(body), nowMs, id, expectedRevision).changes;
    if (changed === 0) {
      const current = this.plan(id);
      if (!current) throw new ControlError('not-found', `no plan ${id}`);
      throw new ControlError('conflict', `plan ${id} changed since revision ${expectedRevision} (it is at revision ${current.revision} now): read it again and redo the edit`, 'revision');
    }
    return this.plan(id) as Plan;
  }

  /** True when there was such a plan. */
  deletePlan(id: string): boolean {
    return this.db.prepare('DELETE FROM recovery_plans WHERE id = ?').run(id).changes > 0;
  }

  // ---- jobs ----------------------------------------------------------------------------------

  addJob(job: NewJob): Job {
    const info = this.db
      .prepare('INSERT INTO recovery_jobs (kind, plan_id, state, point, started_ms, finished_ms, rto_ms, reason, steps, machines) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)')
      .run(job.kind, job.planId, job.state, JSON.stringify(job.point), job.startedMs, job.finishedMs, job.rtoMs, job.reason, JSON.stringify(job.steps), JSON.stringify(job.machines));
    return { ...structuredClone(job), id: Number(info.lastInsertRowid) };
  }

  /** Stores the job's current state (every field but its id, kind and plan). */
  saveJob(job: Job): void {
    this.db
      .prepare('UPDATE recovery_jobs SET state = ?, point = ?, started_ms = ?, finished_ms = ?, rto_ms = ?, reason = ?, steps = ?, machines = ? WHERE id = ?')
      .run(job.state, JSON.stringify(job.point), job.startedMs, job.finishedMs, job.rtoMs, job.reason, JSON.stringify(job.steps), JSON.stringify(job.machines), job.id);
  }

  job(id: number): Job | undefined {
    const r = this.db.prepare('SELECT * FROM recovery_jobs WHERE id = ?').get(id) as RawJob | undefined;
    return r && toJob(r);
  }

  /** Jobs matching the filter, newest first (limit: default 100). */
  jobs(filter: JobFilter = {}): Job[] {
    const where: string[] = [];
    const args: Array<string | number> = [];
    if (filter.planId !== undefined) {
      where.push('plan_id = ?');
      args.push(filter.planId);
    }
    if (filter.kind !== undefined) {
      where.push('kind = ?');
      args.push(filter.kind);
    }
    if (filter.state !== undefined) {
      where.push('state = ?');
      args.push(filter.state);
    }
    const sql = `SELECT * FROM recovery_jobs ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT ?`;
    return (this.db.prepare(sql).all(...args, filter.limit ?? 100) as RawJob[]).map(toJob);
  }

  /**
   * Jobs a receiver stopped in the middle of (running or waiting): failed, with why; their
   * unfinished steps failed or skipped. Returns them as they are now.
   */
  markUnfinished(reason: string, nowMs: number): Job[] {
    return this.transaction(() => {
      const open = (this.db.prepare("SELECT * FROM recovery_jobs WHERE state IN ('running', 'waiting') ORDER BY id").all() as RawJob[]).map(toJob);
      for (const job of open) {
        job.state = 'failed';
        job.reason = reason;
        job.finishedMs = nowMs;
        for (const step of job.steps) {
          if (step.state === 'pending') step.state = 'skipped';
          else if (step.state === 'running' || step.state === 'waiting') {
            step.state = 'failed';
            step.finishedMs = nowMs;
            step.detail = step.detail === '' ? reason : `${step.detail}; ${reason}`;
          }
        }
        this.saveJob(job);
      }
      return open;
    });
  }

  // ---- protection ----------------------------------------------------------------------------

  /** The machine's recorded protection, or undefined (never failed over: protected here). */
  protection(machineId: string): MachineProtection | undefined {
    const r = this.db.prepare('SELECT * FROM recovery_protection WHERE machine_id = ?').get(machineId) as RawProtection | undefined;
    return r && toProtection(r);
  }

  protections(): MachineProtection[] {
    return (this.db.prepare('SELECT * FROM recovery_protection ORDER BY machine_id').all() as RawProtection[]).map(toProtection);
  }

  setProtection(p: MachineProtection): void {
    this.db
      .prepare('INSERT INTO recovery_protection (machine_id, state, runs_on, job_id, since_ms) VALUES (?, ?, ?, ?, ?) ON CONFLICT (machine_id) DO UPDATE SET state = excluded.state, runs_on = excluded.runs_on, job_id = excluded.job_id, since_ms = excluded.since_ms')
      .run(p.machineId, p.state, p.runsOn, p.jobId, p.sinceMs);
  }
}
