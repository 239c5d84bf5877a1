import * as fs from 'fs';
import * as path from 'path';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Server } from 'https';
import { ControlError } from '../contract';
import { JobFilter, parsePointSpec, RecoveryApi } from '../../recovery/contract';
import type { JobKind, JobState, PlanInput, PointSpec } from '../../recovery/model';
import { ApiError } from './errors';
import { recoveryRouteSchemas as schemas } from './recovery-schemas';

const P = '/api/v1';
const MAX_JOBS = 10_000;
/** A stream client that reads slower than jobs change is cut off past this much unsent text (it reconnects). */
const MAX_BUFFERED_BYTES = 1024 * 1024;

type IdParams = { Params: { id: string } };

/** The API's point word as a PointSpec; a bad word is a 400 naming `point` (pure). */
export function pointFromWord(word: string | undefined): PointSpec | undefined {
  if (word === undefined) return undefined;
  const spec = parsePointSpec(word);
  if (!spec) throw new ApiError(400, 'invalid', `point ${JSON.stringify(word)} is not a point: give latest, latest-app, a point id, round:N or an ISO time such as 2026-12-03T10:00:00Z`, 'point');
  return spec;
}

/** The job filter of a query string (pure). */
export function jobFilter(query: { plan?: string; kind?: JobKind; state?: JobState; limit?: string }): JobFilter {
  const filter: JobFilter = {};
  if (query.plan !== undefined) filter.planId = query.plan;
  if (query.kind !== undefined) filter.kind = query.kind;
  if (query.state !== undefined) filter.state = query.state;
  if (query.limit !== undefined) {
    const n = Number(query.limit);
    if (!Number.isSafeInteger(n) || n < 1 || n > MAX_JOBS) throw new ApiError(400, 'invalid', `limit must be 1..${MAX_JOBS}`, 'limit');
    filter.limit = n;
  }
  return filter;
}

function jobId(text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1) throw new ApiError(400, 'invalid', 'a job id is a whole number of at least 1', 'id');
  return n;
}

/** POST routes whose body is optional: none means {}. */
const emptyBodyIsObject = async (request: FastifyRequest): Promise<void> => {
  request.body ??= {};
};

/**
 * Plans, recovery jobs, machine protection and job evidence: thin over the recovery service.
 * Without one (a receiver that has no recovery target configured) every route answers 503.
 */
export function registerRecoveryRoutes(app: FastifyInstance<Server>, recovery: RecoveryApi | undefined, keepAliveMs: number): void {
  const service = (): RecoveryApi => {
    if (!recovery) throw new ApiError(503, 'unavailable', 'recovery is not available on this receiver (no recovery service: start the receiver with its management API and a recovery target)');
    return recovery;
  };
  const post = { preValidation: emptyBodyIsObject };

  app.get(`${P}/plans`, { schema: schemas.listPlans }, async () => ({ plans: service().plans() }));
  app.post<{ Body: PlanInput }>(`${P}/plans`, { schema: schemas.createPlan }, async (request, reply) => reply.code(201).send(service().createPlan(request.body)));
  app.get<IdParams>(`${P}/plans/:id`, { schema: schemas.showPlan }, async (request) => service().plan(request.params.id));
  app.put<IdParams & { Body: { plan: PlanInput; revision: number } }>(`${P}/plans/:id`, { schema: schemas.replacePlan }, async (request) => {
    try {
      return service().updatePlan(request.params.id, request.body.plan, request.body.revision);
    } catch (err) {
      // The plan's checks name fields of a plan; here the plan is the body's `plan`.
      if (err instanceof ControlError && err.kind === 'invalid' && err.field !== undefined && err.field !== 'revision') throw new ControlError('invalid', err.message, `plan.${err.field}`);
      throw err;
    }
  });
  app.delete<IdParams>(`${P}/plans/:id`, { schema: schemas.deletePlan }, async (request, reply) => {
    service().deletePlan(request.params.id);
    return reply.code(204).send();
  });

  app.post<IdParams & { Body: { point?: string } }>(`${P}/plans/:id/test-failover`, { schema: schemas.testFailover, ...post }, async (request, reply) => {
    const point = pointFromWord(request.body.point);
    return reply.code(202).send(service().testFailover(request.params.id, point));
  });
  app.post<IdParams>(`${P}/plans/:id/cleanup`, { schema: schemas.cleanup, ...post }, async (request, reply) => reply.code(202).send(service().cleanupTestFailover(request.params.id)));
  app.post<IdParams & { Body: { point?: string; planned?: boolean } }>(`${P}/plans/:id/failover`, { schema: schemas.failover, ...post }, async (request, reply) => {
    const point = pointFromWord(request.body.point);
    const planned = request.body.planned === true;
    if (planned && point !== undefined) throw new ApiError(400, 'invalid', 'a planned failover takes its own final point: give either planned or point', 'point');
    return reply.code(202).send(service().failover(request.params.id, point === undefined ? { planned } : { point, planned }));
  });
  app.post<IdParams>(`${P}/plans/:id/commit`, { schema: schemas.commit, ...post }, async (request, reply) => reply.code(202).send(service().commitFailover(request.params.id)));
  app.post<IdParams>(`${P}/plans/:id/failback-prepare`, { schema: schemas.failbackPrepare, ...post }, async (request, reply) => reply.code(202).send(service().failbackPrepare(request.params.id)));
  app.post<IdParams>(`${P}/plans/:id/failback`, { schema: schemas.failback, ...post }, async (request, reply) => reply.code(202).send(service().failback(request.params.id)));

  app.get<{ Querystring: { plan?: string; kind?: JobKind; state?: JobState; limit?: string } }>(`${P}/jobs`, { schema: schemas.listJobs }, async (request) => ({
    jobs: service().jobs(jobFilter(request.query)),
  }));
  app.get(`${P}/jobs/stream`, { schema: schemas.jobStream }, async (_request, reply) => {
    const jobs = service();
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-cache', Connection: 'keep-alive' });
    res.write(': job changes follow\n\n');
    const write = (text: string): void => {
      if (res.writableLength > MAX_BUFFERED_BYTES) res.destroy();
      else res.write(text);
    };
    const unsubscribe = jobs.subscribeJobs((job) => write(`event: job\ndata: ${JSON.stringify(job)}\n\n`));
    const keepAlive = setInterval(() => write(': keep-alive\n\n'), keepAliveMs);
    res.on('close', () => {
      clearInterval(keepAlive);
      unsubscribe();
    });
  });
  app.get<IdParams>(`${P}/jobs/:id`, { schema: schemas.showJob }, async (request) => service().job(jobId(request.params.id)));
  app.post<IdParams>(`${P}/jobs/:id/resume`, { schema: schemas.resumeJob, ...post }, async (request) => service().resumeJob(jobId(request.params.id)));
  app.post<IdParams>(`${P}/jobs/:id/cancel`, { schema: schemas.cancelJob, ...post }, async (request) => service().cancelJob(jobId(request.params.id)));
  app.get<IdParams>(`${P}/machines/:id/protection`, { schema: schemas.protection }, async (request) => service().protection(request.params.id));

  app.get<{ Params: { id: string; machineId: string; kind: 'screenshot' | 'serial' } }>(`${P}/jobs/:id/evidence/:machineId/:kind`, { schema: schemas.evidence }, async (request, reply) => {
    const { machineId, kind } = request.params;
    const job = service().job(jobId(request.params.id));
    const machine = job.machines.find((m) => m.machineId === machineId);
    if (!machine) throw new ApiError(404, 'not-found', `job ${job.id} has no machine ${machineId}`);
    const file = kind === 'screenshot' ? machine.screenshot : machine.serialLog;
    const what = kind === 'screenshot' ? 'screenshot' : 'serial log';
    // Only the file the job recorded, and only when the path is absolute (the service's job directory).
    if (file === '' || !path.isAbsolute(file)) throw new ApiError(404, 'not-found', `job ${job.id} recorded no ${what} of machine ${machineId}`);
    let size: number;
    try {
      const st = fs.statSync(file);
      if (!st.isFile()) throw new Error('not a file');
      size = st.size;
    } catch {
      throw new ApiError(404, 'not-found', `the ${what} of machine ${machineId} in job ${job.id} is gone (${file})`);
    }
    void reply.type(kind === 'screenshot' ? 'image/png' : 'text/plain; charset=utf-8').header('Content-Length', String(size));
    // A serial log may still grow: send the bytes it had when asked, matching Content-Length.
    return reply.send(size === 0 ? '' : fs.createReadStream(file, { start: 0, end: size - 1 }));
  });
}
