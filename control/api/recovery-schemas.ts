import { Limits } from '../../proto/limits';
import { PLAN_LIMITS } from '../../recovery/plan-validate';
import { SAFE_ID_PATTERN } from './schemas';

/**
 * JSON schemas of the recovery routes (plans, jobs, protection): request validation and the
 * OpenAPI document. The schemas check shapes and types; recovery/plan-validate.ts checks the
 * rest (machines exist, once each, bounds) with the same field names.
 */

const id = { type: 'string', minLength: 1, maxLength: Limits.maxIdLength, pattern: SAFE_ID_PATTERN } as const;
const ms = { type: 'integer', minimum: 0 } as const;
const nullableMs = { type: ['integer', 'null'], minimum: 0 } as const;
const digits = { type: 'string', pattern: '^[0-9]{1,15}$' } as const;
const jobKind = { type: 'string', enum: ['test-failover', 'cleanup', 'failover', 'commit', 'failback-prepare', 'failback'] } as const;
const jobState = { type: 'string', enum: ['running', 'waiting', 'succeeded', 'failed', 'cancelled'] } as const;
const pointWord = {
  type: 'string',
  minLength: 1,
  maxLength: 64,
  description: 'latest, latest-app, a point id, round:N, or an ISO time (2026-12-03T10:00:00Z)',
} as const;

export const pointSpecSchema = {
  $id: 'PointSpec',
  type: 'object',
  description: 'kind latest | latest-app | point (pointId) | round (roundId) | time (timeMs, ms since the epoch)',
  additionalProperties: false,
  properties: {
    kind: { type: 'string', enum: ['latest', 'latest-app', 'point', 'round', 'time'] },
    pointId: { type: 'integer' },
    roundId: { type: 'integer' },
    timeMs: { type: 'integer' },
  },
  required: ['kind'],
} as const;

export const planActionSchema = {
  $id: 'PlanAction',
  type: 'object',
  description: 'script: command run on the receiver side within timeoutMs (default 5 min, 1 s .. 1 h); manual: the job waits until an operator resumes it.',
  additionalProperties: false,
  properties: {
    kind: { type: 'string', enum: ['script', 'manual'] },
    name: { type: 'string', maxLength: PLAN_LIMITS.maxActionNameLength },
    command: { type: 'string', maxLength: PLAN_LIMITS.maxCommandLength },
    timeoutMs: { type: 'integer' },
    instructions: { type: 'string', maxLength: PLAN_LIMITS.maxInstructionsLength },
  },
  required: ['kind', 'name'],
} as const;

export const healthSchema = {
  $id: 'HealthCheck',
  type: 'object',
  additionalProperties: false,
  properties: {
    serialPattern: { type: 'string', maxLength: PLAN_LIMITS.maxPatternLength, description: "a regular expression the serial console must reach ('' : none)" },
    tcpPort: { type: 'integer', description: '0: none' },
    timeoutMs: { type: 'integer' },
  },
} as const;

const bootGroupSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    machines: { type: 'array', items: { type: 'string', maxLength: Limits.maxIdLength } },
    before: { type: 'array', items: { $ref: 'PlanAction#' } },
    after: { type: 'array', items: { $ref: 'PlanAction#' } },
  },
  required: ['machines'],
} as const;

export const planInputSchema = {
  $id: 'PlanInput',
  type: 'object',
  additionalProperties: false,
  properties: {
    name: { type: 'string', maxLength: PLAN_LIMITS.maxNameLength },
    bootGroups: { type: 'array', items: bootGroupSchema },
    health: { $ref: 'HealthCheck#' },
    defaultPoint: { $ref: 'PointSpec#' },
  },
  required: ['name', 'bootGroups'],
} as const;

export const planSchema = {
  $id: 'Plan',
  type: 'object',
  properties: {
    id: { type: 'string' },
    name: { type: 'string' },
    bootGroups: { type: 'array', items: bootGroupSchema },
    health: { $ref: 'HealthCheck#' },
    defaultPoint: { $ref: 'PointSpec#' },
    revision: { type: 'integer' },
    createdMs: ms,
    updatedMs: ms,
  },
  required: ['id', 'name', 'bootGroups', 'health', 'defaultPoint', 'revision', 'createdMs', 'updatedMs'],
} as const;

export const jobSchema = {
  $id: 'Job',
  type: 'object',
  properties: {
    id: { type: 'integer' },
    kind: jobKind,
    planId: { type: 'string' },
    state: jobState,
    point: { $ref: 'PointSpec#' },
    startedMs: ms,
    finishedMs: nullableMs,
    rtoMs: nullableMs,
    reason: { type: 'string' },
    steps: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          id: { type: 'integer' },
          name: { type: 'string' },
          state: { type: 'string', enum: ['pending', 'running', 'waiting', 'succeeded', 'failed', 'skipped'] },
          startedMs: nullableMs,
          finishedMs: nullableMs,
          detail: { type: 'string' },
        },
        required: ['id', 'name', 'state', 'startedMs', 'finishedMs', 'detail'],
      },
    },
    machines: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          machineId: { type: 'string' },
          vmName: { type: 'string' },
          runsOn: { type: 'string' },
          points: { type: 'object', additionalProperties: { type: 'integer' } },
          state: { type: 'string', enum: ['pending', 'exporting', 'booting', 'healthy', 'unhealthy', 'stopped'] },
          address: { type: 'string' },
          serialLog: { type: 'string' },
          screenshot: { type: 'string' },
          bootMs: nullableMs,
          detail: { type: 'string' },
        },
        required: ['machineId', 'vmName', 'runsOn', 'points', 'state', 'address', 'serialLog', 'screenshot', 'bootMs', 'detail'],
      },
    },
  },
  required: ['id', 'kind', 'planId', 'state', 'point', 'startedMs', 'finishedMs', 'rtoMs', 'reason', 'steps', 'machines'],
} as const;

export const protectionSchema = {
  $id: 'MachineProtection',
  type: 'object',
  properties: {
    machineId: { type: 'string' },
    state: { type: 'string', enum: ['protected', 'failed-over', 'failing-back'] },
    runsOn: { type: 'string' },
    jobId: { type: ['integer', 'null'] },
    sinceMs: ms,
  },
  required: ['machineId', 'state', 'runsOn', 'jobId', 'sinceMs'],
} as const;

export const recoverySharedSchemas = [pointSpecSchema, planActionSchema, healthSchema, planInputSchema, planSchema, jobSchema, protectionSchema];

const ref = (name: string): { $ref: string } => ({ $ref: `${name}#` });
const refusals = { 400: ref('Error'), 401: ref('Error'), 404: ref('Error'), 409: ref('Error'), 503: ref('Error') };
const idParams = { type: 'object', properties: { id }, required: ['id'] } as const;
const jobParams = { type: 'object', properties: { id: digits }, required: ['id'] } as const;
const noBody = { type: 'object', additionalProperties: false, properties: {} } as const;
const jobAccepted = { 202: ref('Job'), ...refusals };

export const recoveryRouteSchemas = {
  listPlans: { tags: ['recovery'], summary: 'Recovery plans', response: { 200: { type: 'object', properties: { plans: { type: 'array', items: ref('Plan') } }, required: ['plans'] }, ...refusals } },
  createPlan: {
    tags: ['recovery'],
    summary: 'Create a recovery plan: ordered boot groups of machines (ids), scripts and manual steps around each group, a health check and a default point',
    body: ref('PlanInput'),
    response: { 201: ref('Plan'), ...refusals },
  },
  showPlan: { tags: ['recovery'], summary: 'One plan', params: idParams, response: { 200: ref('Plan'), ...refusals } },
  replacePlan: {
    tags: ['recovery'],
    summary: 'Replace a plan; revision must be the one read (409 when someone changed it since)',
    params: idParams,
    body: { type: 'object', additionalProperties: false, properties: { plan: ref('PlanInput'), revision: { type: 'integer', minimum: 1 } }, required: ['plan', 'revision'] },
    response: { 200: ref('Plan'), ...refusals },
  },
  deletePlan: { tags: ['recovery'], summary: 'Delete a plan (409 while a job of it runs or its test failover is not cleaned up)', params: idParams, response: { 204: { type: 'null' }, ...refusals } },
  testFailover: {
    tags: ['recovery'],
    summary: "Start a test failover: boots the plan's machines at the point on an isolated network; answers with the running job",
    params: idParams,
    body: { type: 'object', additionalProperties: false, properties: { point: pointWord } },
    response: jobAccepted,
  },
  cleanup: { tags: ['recovery'], summary: "Discard a test failover's VMs and overlays", params: idParams, body: noBody, response: jobAccepted },
  failover: {
    tags: ['recovery'],
    summary: 'Fail over to persistent disks: unplanned at the point, or planned (final app point after every write is applied)',
    params: idParams,
    body: { type: 'object', additionalProperties: false, properties: { point: pointWord, planned: { type: 'boolean' } } },
    response: jobAccepted,
  },
  commit: { tags: ['recovery'], summary: "After a failover: drop the machines' other recovery points", params: idParams, body: noBody, response: jobAccepted },
  failbackPrepare: { tags: ['recovery'], summary: 'After a failover: the original machines may pull what differs from the recovered disks (ferry agent failback); the job ends when every first pass is done', params: idParams, body: noBody, response: jobAccepted },
  failback: { tags: ['recovery'], summary: 'Planned failover back: stop the recovered machines, final pass, protect them again in the original direction', params: idParams, body: noBody, response: jobAccepted },
  listJobs: {
    tags: ['recovery'],
    summary: 'Recovery jobs, newest first',
    querystring: { type: 'object', additionalProperties: false, properties: { plan: id, kind: jobKind, state: jobState, limit: { ...digits, description: '1..10000 (default 100)' } } },
    response: { 200: { type: 'object', properties: { jobs: { type: 'array', items: ref('Job') } }, required: ['jobs'] }, ...refusals },
  },
  jobStream: {
    tags: ['recovery'],
    summary: 'Server-sent events: every change of every job (steps, machines, state) as `event: job` with the job as JSON; a comment line every keep-alive interval',
    produces: ['text/event-stream'],
  },
  showJob: { tags: ['recovery'], summary: 'One job: steps, machines, RTO', params: jobParams, response: { 200: ref('Job'), ...refusals } },
  resumeJob: { tags: ['recovery'], summary: 'Resume a job waiting at a manual step', params: jobParams, body: noBody, response: { 200: ref('Job'), ...refusals } },
  cancelJob: { tags: ['recovery'], summary: 'Cancel a running job (its VMs and overlays are cleaned up)', params: jobParams, body: noBody, response: { 200: ref('Job'), ...refusals } },
  protection: { tags: ['recovery'], summary: "A machine's protection: protected here, failed over (and where it runs), failing back", params: idParams, response: { 200: ref('MachineProtection'), ...refusals } },
  evidence: {
    tags: ['recovery'],
    summary: "A job machine's evidence: the console screenshot (PNG) or the serial log (text)",
    params: {
      type: 'object',
      properties: { id: digits, machineId: id, kind: { type: 'string', enum: ['screenshot', 'serial'] } },
      required: ['id', 'machineId', 'kind'],
    },
    produces: ['image/png', 'text/plain'],
  },
};
