import type {
  ControlEvent,
  ErrorBody,
  EventSeverity,
  ExportResult,
  Group,
  GroupPoints,
  GroupPolicy,
  GroupRound,
  HistoryWindow,
  Job,
  Machine,
  MachineHistory,
  MachineProtection,
  Operator,
  Overview,
  Plan,
  PlanInput,
  PointRow,
  RecoveryProperties,
  Session,
} from './api-types';

/**
 * The management API client: same-origin fetch with the session cookie, the CSRF header on
 * every non-GET call, JSON in and out, and refusals as ApiError (status, error, message, field).
 * A 401 from any call but the sign-in ones means the session ended: the handler set with
 * onSessionEnded is told (the app then shows the sign-in page).
 */

export const API_PREFIX = 'api/v1';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    /** The API's error word: invalid, unauthorized, not-found, conflict, unavailable, too-many-attempts, csrf... */
    readonly error: string,
    message: string,
    /** The request field at fault (400), e.g. rpoThresholdMs or plan.bootGroups. */
    readonly field?: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

let csrfToken = '';
let sessionEnded: () => void = () => {};

export function setCsrfToken(token: string): void {
  csrfToken = token;
}

export function onSessionEnded(handler: () => void): void {
  sessionEnded = handler;
}

/** For callers outside fetch (the live streams) that found the session gone. */
export function reportSessionEnded(): void {
  sessionEnded();
}

/** The URL of an API path ('/machines' -> 'api/v1/machines'), relative to the console's origin. */
export function apiUrl(path: string): string {
  return `${API_PREFIX}${path}`;
}

function query(params: Record<string, string | number | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== '') q.set(k, String(v));
  const s = q.toString();
  return s === '' ? '' : `?${s}`;
}

function isErrorBody(v: unknown): v is ErrorBody {
  return typeof v === 'object' && v !== null && typeof (v as ErrorBody).error === 'string' && typeof (v as ErrorBody).message === 'string';
}

interface CallOptions {
  /** Sign-in calls: a 401 is a wrong password (or no session yet), not a session that ended. */
  quiet401?: boolean;
}

async function call<T>(method: string, path: string, body?: unknown, options: CallOptions = {}): Promise<T> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && method !== 'HEAD' && csrfToken !== '') headers['X-CSRF-Token'] = csrfToken;
  let res: Response;
  try {
    res = await fetch(apiUrl(path), { method, headers, credentials: 'same-origin', body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(0, 'network', 'The receiver did not answer (network error). Check the connection and try again.');
  }
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  let parsed: unknown = undefined;
  if (text !== '') {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
  }
  if (!res.ok) {
    const err = isErrorBody(parsed)
      ? new ApiError(res.status, parsed.error, parsed.message, parsed.field)
      : new ApiError(res.status, res.status === 401 ? 'unauthorized' : 'http', `The receiver answered ${res.status} ${res.statusText}`.trim());
    if (res.status === 401 && !options.quiet401) sessionEnded();
    throw err;
  }
  return parsed as T;
}

// ---- session and operators ----
export const signIn = (name: string, password: string): Promise<Session> => call('POST', '/session', { name, password }, { quiet401: true });
export const currentSession = (): Promise<Session> => call('GET', '/session', undefined, { quiet401: true });
export const signOut = (): Promise<void> => call('DELETE', '/session', undefined, { quiet401: true });
export const listOperators = async (): Promise<Operator[]> => (await call<{ operators: Operator[] }>('GET', '/operators')).operators;
export const createOperator = (name: string, password: string): Promise<Operator> => call('POST', '/operators', { name, password });

// ---- overview, machines ----
export const getOverview = (): Promise<Overview> => call('GET', '/overview');
export const listMachines = async (): Promise<Machine[]> => (await call<{ machines: Machine[] }>('GET', '/machines')).machines;
export const getMachine = (id: string): Promise<Machine> => call('GET', `/machines/${encodeURIComponent(id)}`);
export const setRecovery = (id: string, props: Partial<RecoveryProperties>): Promise<Machine> => call('PATCH', `/machines/${encodeURIComponent(id)}/recovery`, props);
export const machineHistory = (id: string, window: HistoryWindow): Promise<MachineHistory> => call('GET', `/machines/${encodeURIComponent(id)}/history${query({ window })}`);
export const machinePoints = async (id: string, limit: number): Promise<PointRow[]> =>
  (await call<{ points: PointRow[] }>('GET', `/machines/${encodeURIComponent(id)}/points${query({ limit })}`)).points;
export const machineProtection = (id: string): Promise<MachineProtection> => call('GET', `/machines/${encodeURIComponent(id)}/protection`);
export const exportPoint = (pointId: number, format: 'raw' | 'vhd'): Promise<ExportResult> => call('POST', `/points/${pointId}/export`, { format });

// ---- groups ----
export const listGroups = async (): Promise<Group[]> => (await call<{ groups: Group[] }>('GET', '/groups')).groups;
export const createGroup = (name: string, policy?: Partial<GroupPolicy>): Promise<Group> => call('POST', '/groups', policy === undefined ? { name } : { name, policy });
export const getGroup = (id: string): Promise<Group> => call('GET', `/groups/${encodeURIComponent(id)}`);
export const setPolicy = (id: string, policy: Partial<GroupPolicy>): Promise<Group> => call('PATCH', `/groups/${encodeURIComponent(id)}/policy`, policy);
export const addMember = (id: string, machineId: string): Promise<Group> => call('POST', `/groups/${encodeURIComponent(id)}/members`, { machineId });
export const removeMember = (id: string, machineId: string): Promise<Group> =>
  call('DELETE', `/groups/${encodeURIComponent(id)}/members/${encodeURIComponent(machineId)}`);
export const groupRounds = async (id: string): Promise<GroupRound[]> => (await call<{ rounds: GroupRound[] }>('GET', `/groups/${encodeURIComponent(id)}/rounds`)).rounds;
export const runRound = (id: string, app: boolean): Promise<GroupRound> => call('POST', `/groups/${encodeURIComponent(id)}/rounds`, { app });
export const groupPoints = async (id: string): Promise<GroupPoints[]> => (await call<{ points: GroupPoints[] }>('GET', `/groups/${encodeURIComponent(id)}/points`)).points;

// ---- events ----
export interface EventQuery {
  severity?: EventSeverity;
  subject?: string;
  sinceMs?: number;
  limit?: number;
}
export const listEvents = async (q: EventQuery): Promise<ControlEvent[]> =>
  (await call<{ events: ControlEvent[] }>('GET', `/events${query({ severity: q.severity, subject: q.subject, since: q.sinceMs, limit: q.limit })}`)).events;
export const acknowledgeEvent = (id: number): Promise<ControlEvent> => call('POST', `/events/${id}/acknowledge`);

// ---- plans and jobs ----
export const listPlans = async (): Promise<Plan[]> => (await call<{ plans: Plan[] }>('GET', '/plans')).plans;
export const getPlan = (id: string): Promise<Plan> => call('GET', `/plans/${encodeURIComponent(id)}`);
export const createPlan = (plan: PlanInput): Promise<Plan> => call('POST', '/plans', plan);
export const replacePlan = (id: string, plan: PlanInput, revision: number): Promise<Plan> => call('PUT', `/plans/${encodeURIComponent(id)}`, { plan, revision });
export const deletePlan = (id: string): Promise<void> => call('DELETE', `/plans/${encodeURIComponent(id)}`);
/** `point`: a point word (latest, latest-app, digits, round:N, ISO time); none: the plan's default. */
export const testFailover = (id: string, point?: string): Promise<Job> =>
  call('POST', `/plans/${encodeURIComponent(id)}/test-failover`, point === undefined ? {} : { point });
export const cleanupTestFailover = (id: string): Promise<Job> => call('POST', `/plans/${encodeURIComponent(id)}/cleanup`, {});
export const listJobs = async (planId?: string, limit?: number): Promise<Job[]> => (await call<{ jobs: Job[] }>('GET', `/jobs${query({ plan: planId, limit })}`)).jobs;
export const getJob = (id: number): Promise<Job> => call('GET', `/jobs/${id}`);
export const resumeJob = (id: number): Promise<Job> => call('POST', `/jobs/${id}/resume`, {});
export const cancelJob = (id: number): Promise<Job> => call('POST', `/jobs/${id}/cancel`, {});
export const evidenceUrl = (jobId: number, machineId: string, kind: 'screenshot' | 'serial'): string =>
  apiUrl(`/jobs/${jobId}/evidence/${encodeURIComponent(machineId)}/${kind}`);
/** The serial log as text (it may still grow while the job runs). */
export async function serialLog(jobId: number, machineId: string): Promise<string> {
  const res = await fetch(evidenceUrl(jobId, machineId, 'serial'), { credentials: 'same-origin' });
  if (res.status === 401) sessionEnded();
  if (!res.ok) throw new ApiError(res.status, 'http', `The serial log is not available (${res.status})`);
  return res.text();
}
