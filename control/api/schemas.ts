import { PolicyBounds } from '../../proto/validate-control';
import { Limits } from '../../proto/limits';
import { MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH, OPERATOR_NAME_PATTERN } from '../operators';

/**
 * JSON schemas of the management API: request validation (fastify's ajv) and the OpenAPI
 * document (@fastify/swagger) come from the same objects. Responses are described too, so the
 * console's client can be generated from the document.
 */

/** Group names and machine ids: the receiver's safe-id rule (they become keys and file names). */
export const SAFE_ID_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]*$';
const id = { type: 'string', minLength: 1, maxLength: Limits.maxIdLength, pattern: SAFE_ID_PATTERN } as const;
const severity = { type: 'string', enum: ['info', 'warning', 'error'] } as const;
const machineState = { type: 'string', enum: ['resyncing', 'protected', 'degraded', 'disconnected', 'failed'] } as const;
const ms = { type: 'integer', minimum: 0 } as const;
const nullableMs = { type: ['integer', 'null'], minimum: 0 } as const;
/** Query-string numbers arrive as text: the API takes digits only (no type coercion anywhere). */
const digits = { type: 'string', pattern: '^[0-9]{1,15}$' } as const;

export const errorSchema = {
  $id: 'Error',
  type: 'object',
  description: 'Every refused call: error is invalid, unauthorized, forbidden, not-found, conflict, too-many-attempts, unavailable or internal; field names the request field at fault (400).',
  properties: { error: { type: 'string' }, field: { type: 'string' }, message: { type: 'string' } },
  required: ['error', 'message'],
} as const;

export const recoverySchema = {
  $id: 'RecoveryProperties',
  type: 'object',
  properties: {
    recoveredName: { type: 'string' },
    vcpus: { type: 'integer' },
    memoryMiB: { type: 'integer' },
    network: { type: 'string' },
    bootOrder: { type: 'integer' },
  },
  required: ['recoveredName', 'vcpus', 'memoryMiB', 'network', 'bootOrder'],
} as const;

export const recoveryPatchSchema = {
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  properties: {
    recoveredName: { type: 'string', minLength: 1, maxLength: Limits.maxNameLength },
    vcpus: { type: 'integer', minimum: 1, maximum: 1024 },
    memoryMiB: { type: 'integer', minimum: 64, maximum: 16 * 1024 * 1024 },
    network: { type: 'string', maxLength: Limits.maxNameLength },
    bootOrder: { type: 'integer', minimum: 0, maximum: 1000 },
  },
} as const;

export const machineSchema = {
  $id: 'Machine',
  type: 'object',
  properties: {
    id: { type: 'string' },
    name: { type: 'string' },
    os: { type: 'string' },
    agentVersion: { type: 'string' },
    volumes: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          volumeId: { type: 'string' },
          sizeBytes: { type: 'integer' },
          state: { type: 'string' },
          mode: { type: 'string' },
          rpoSeconds: { type: 'number' },
          resyncPercent: { type: 'number' },
          backlogBytes: { type: 'integer', description: 'received and not yet applied to the replica' },
          bytesPerSecond: { type: 'number', description: 'ingest throughput over the last few seconds' },
          applyLagSeconds: { type: 'number' },
        },
        required: ['volumeId', 'sizeBytes', 'state', 'mode', 'rpoSeconds', 'resyncPercent', 'backlogBytes', 'bytesPerSecond', 'applyLagSeconds'],
      },
    },
    lastSeenMs: ms,
    state: machineState,
    stateReasons: { type: 'array', items: { type: 'string' } },
    connected: { type: 'boolean' },
    groupId: { type: ['string', 'null'] },
    recovery: { $ref: 'RecoveryProperties#' },
    rpoSeconds: { type: 'number' },
  },
  required: ['id', 'name', 'os', 'agentVersion', 'volumes', 'lastSeenMs', 'state', 'connected', 'groupId', 'recovery', 'rpoSeconds'],
} as const;

export const policySchema = {
  $id: 'GroupPolicy',
  type: 'object',
  description: 'Durations in milliseconds.',
  properties: {
    rpoThresholdMs: { type: 'integer' },
    retentionMs: { type: 'integer' },
    crashConsistentIntervalMs: { type: 'integer' },
    appConsistentIntervalMs: { type: 'integer', description: '0: no scheduled app-consistent points' },
    multiMachineConsistency: { type: 'boolean' },
  },
  required: ['rpoThresholdMs', 'retentionMs', 'crashConsistentIntervalMs', 'appConsistentIntervalMs', 'multiMachineConsistency'],
} as const;

/** A policy in a request: any subset, each value within the bounds the agents accept. */
export const policyPatchSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    rpoThresholdMs: { type: 'integer', minimum: PolicyBounds.minRpoThresholdMs, maximum: PolicyBounds.maxRpoThresholdMs },
    retentionMs: { type: 'integer', minimum: 60_000, maximum: 366 * 24 * 3600 * 1000 },
    crashConsistentIntervalMs: { type: 'integer', minimum: PolicyBounds.minCrashIntervalMs, maximum: PolicyBounds.maxCrashIntervalMs },
    appConsistentIntervalMs: {
      description: `0 (off) or ${PolicyBounds.minAppIntervalMs}..${PolicyBounds.maxAppIntervalMs}`,
      anyOf: [
        { type: 'integer', const: 0 },
        { type: 'integer', minimum: PolicyBounds.minAppIntervalMs, maximum: PolicyBounds.maxAppIntervalMs },
      ],
    },
    multiMachineConsistency: { type: 'boolean' },
  },
} as const;

export const groupSchema = {
  $id: 'Group',
  type: 'object',
  properties: {
    id: { type: 'string' },
    name: { type: 'string' },
    policy: { $ref: 'GroupPolicy#' },
    revision: { type: 'integer' },
    members: { type: 'array', items: { type: 'string' } },
    createdMs: ms,
  },
  required: ['id', 'name', 'policy', 'revision', 'members', 'createdMs'],
} as const;

export const roundSchema = {
  $id: 'GroupRound',
  type: 'object',
  properties: {
    id: { type: 'integer' },
    groupId: { type: 'string' },
    app: { type: 'boolean' },
    state: { type: 'string', enum: ['preparing', 'committing', 'done', 'aborted'] },
    startedMs: ms,
    finishedMs: nullableMs,
    holdMs: { type: ['number', 'null'] },
    members: { type: 'array', items: { type: 'string' } },
    reason: { type: 'string' },
    pointIds: { type: 'array', items: { type: 'integer' } },
  },
  required: ['id', 'groupId', 'app', 'state', 'startedMs', 'finishedMs', 'holdMs', 'members', 'reason', 'pointIds'],
} as const;

export const pointSchema = {
  $id: 'Point',
  type: 'object',
  properties: {
    id: { type: 'integer' },
    volumeId: { type: 'string' },
    seq: { type: 'integer' },
    timeUs: { type: 'integer' },
    kind: { type: 'string' },
    accuracy: { type: 'string' },
    origin: { type: 'string' },
    groupId: { type: 'string' },
    name: { type: 'string' },
    groupRound: { type: 'integer', description: 'the group round the point answers; 0: not a group point' },
    damaged: { type: 'string' },
  },
  required: ['id', 'volumeId', 'seq', 'timeUs', 'kind', 'accuracy', 'origin', 'groupId', 'name'],
} as const;

export const eventSchema = {
  $id: 'Event',
  type: 'object',
  properties: {
    id: { type: 'integer' },
    timeMs: ms,
    severity,
    kind: { type: 'string' },
    subjectKind: { type: 'string', enum: ['receiver', 'group', 'machine', 'volume'] },
    subjectId: { type: 'string' },
    text: { type: 'string' },
    acknowledged: { type: 'boolean' },
  },
  required: ['id', 'timeMs', 'severity', 'kind', 'subjectKind', 'subjectId', 'text', 'acknowledged'],
} as const;

export const webhookSchema = {
  $id: 'Webhook',
  type: 'object',
  properties: { id: { type: 'integer' }, url: { type: 'string' }, minSeverity: severity, createdMs: ms },
  required: ['id', 'url', 'minSeverity', 'createdMs'],
} as const;

export const deliverySchema = {
  $id: 'WebhookDelivery',
  type: 'object',
  properties: {
    webhookId: { type: 'integer' },
    eventId: { type: 'integer' },
    state: { type: 'string', enum: ['pending', 'delivered', 'failed'] },
    attempts: { type: 'integer' },
    lastError: { type: 'string' },
    nextAttemptMs: nullableMs,
  },
  required: ['webhookId', 'eventId', 'state', 'attempts', 'lastError', 'nextAttemptMs'],
} as const;

export const operatorSchema = {
  $id: 'Operator',
  type: 'object',
  properties: { name: { type: 'string' }, createdMs: ms },
  required: ['name', 'createdMs'],
} as const;

export const tokenSchema = {
  $id: 'Token',
  type: 'object',
  description: 'token is present only in the answer that creates it.',
  properties: { id: { type: 'string' }, operator: { type: 'string' }, createdMs: ms, expiresMs: nullableMs, token: { type: 'string' } },
  required: ['id', 'operator', 'createdMs', 'expiresMs'],
} as const;

export const sessionSchema = {
  $id: 'Session',
  type: 'object',
  description: 'A console session: the cookie carries the secret; csrfToken goes in X-CSRF-Token on every change.',
  properties: { operator: { type: 'string' }, expiresMs: ms, csrfToken: { type: 'string' } },
  required: ['operator', 'expiresMs', 'csrfToken'],
} as const;

export const overviewSchema = {
  $id: 'Overview',
  type: 'object',
  properties: {
    machines: { type: 'array', items: { $ref: 'Machine#' } },
    groups: { type: 'array', items: { $ref: 'Group#' } },
    openAlerts: { type: 'array', items: { $ref: 'Event#' }, description: 'unacknowledged warnings and errors whose condition has not ended, newest first' },
    receiver: {
      type: 'object',
      properties: {
        storage: {
          type: 'array',
          items: {
            type: 'object',
            properties: { path: { type: 'string' }, freeBytes: { type: 'integer' }, totalBytes: { type: 'integer' }, low: { type: 'boolean' } },
            required: ['path', 'freeBytes', 'totalBytes', 'low'],
          },
        },
        spoolBytes: { type: 'integer' },
        journalBytes: { type: 'integer' },
        unappliedBytes: { type: 'integer' },
        alerts: {
          type: 'array',
          items: { type: 'object', properties: { severity: { type: 'string' }, subject: { type: 'string' }, message: { type: 'string' } }, required: ['severity', 'subject', 'message'] },
        },
      },
      required: ['storage', 'spoolBytes', 'journalBytes', 'unappliedBytes', 'alerts'],
    },
    worstRpoSeconds: { type: 'number' },
    protection: { type: 'object', additionalProperties: { type: 'string' }, description: 'machine id -> protected, failed-over or failing-back' },
  },
  required: ['machines', 'groups', 'openAlerts', 'receiver', 'worstRpoSeconds', 'protection'],
} as const;

export const sharedSchemas = [
  errorSchema,
  recoverySchema,
  machineSchema,
  policySchema,
  groupSchema,
  roundSchema,
  pointSchema,
  eventSchema,
  webhookSchema,
  deliverySchema,
  operatorSchema,
  tokenSchema,
  sessionSchema,
  overviewSchema,
];

const ref = (name: string): { $ref: string } => ({ $ref: `${name}#` });
const listOf = (key: string, name: string): object => ({ type: 'object', properties: { [key]: { type: 'array', items: ref(name) } }, required: [key] });

/** The refusals every authenticated route may answer. */
const refusals = { 400: ref('Error'), 401: ref('Error'), 404: ref('Error'), 409: ref('Error'), 503: ref('Error') };

export const params = {
  id: { type: 'object', properties: { id }, required: ['id'] },
  numericId: { type: 'object', properties: { id: digits }, required: ['id'] },
  member: { type: 'object', properties: { id, machineId: id }, required: ['id', 'machineId'] },
  tokenId: { type: 'object', properties: { id: { type: 'string', minLength: 1, maxLength: 64 } }, required: ['id'] },
} as const;

export const routeSchemas = {
  listMachines: {
    tags: ['machines'],
    summary: 'List machines (registered agents), optionally filtered',
    querystring: { type: 'object', additionalProperties: false, properties: { state: machineState, group: id } },
    response: { 200: listOf('machines', 'Machine'), ...refusals },
  },
  showMachine: { tags: ['machines'], summary: 'One machine', params: params.id, response: { 200: ref('Machine'), ...refusals } },
  setRecovery: {
    tags: ['machines'],
    summary: "Change a machine's recovery properties (any subset)",
    params: params.id,
    body: recoveryPatchSchema,
    response: { 200: ref('Machine'), ...refusals },
  },
  listGroups: { tags: ['groups'], summary: 'List protection groups', response: { 200: listOf('groups', 'Group'), ...refusals } },
  createGroup: {
    tags: ['groups'],
    summary: 'Create a protection group; policy fields left out take the defaults',
    body: { type: 'object', additionalProperties: false, properties: { name: id, policy: policyPatchSchema }, required: ['name'] },
    response: { 201: ref('Group'), ...refusals },
  },
  showGroup: { tags: ['groups'], summary: 'One group', params: params.id, response: { 200: ref('Group'), ...refusals } },
  setPolicy: {
    tags: ['groups'],
    summary: "Change a group's policy (any subset); member agents get it at once",
    params: params.id,
    body: { ...policyPatchSchema, minProperties: 1 },
    response: { 200: ref('Group'), ...refusals },
  },
  deleteGroup: { tags: ['groups'], summary: 'Delete an empty group (409 while it has members)', params: params.id, response: { 204: { type: 'null' }, ...refusals } },
  addMember: {
    tags: ['groups'],
    summary: 'Add a machine to the group (409 if it is in another group)',
    params: params.id,
    body: { type: 'object', additionalProperties: false, properties: { machineId: id }, required: ['machineId'] },
    response: { 200: ref('Group'), ...refusals },
  },
  removeMember: {
    tags: ['groups'],
    summary: 'Remove a machine from the group (its points stay; it gets the no-group policy)',
    params: params.member,
    response: { 200: ref('Group'), ...refusals },
  },
  listRounds: {
    tags: ['groups'],
    summary: "The group's rounds, newest first",
    params: params.id,
    querystring: { type: 'object', additionalProperties: false, properties: { limit: digits } },
    response: { 200: listOf('rounds', 'GroupRound'), ...refusals },
  },
  runRound: {
    tags: ['groups'],
    summary: 'Run one group round now; answers when it is done or aborted',
    params: params.id,
    body: { type: 'object', additionalProperties: false, properties: { app: { type: 'boolean' } } },
    response: { 201: ref('GroupRound'), ...refusals },
  },
  groupPoints: {
    tags: ['groups'],
    summary: "The group's points: every member volume's point of each done round, newest first",
    params: params.id,
    response: {
      200: {
        type: 'object',
        properties: {
          points: {
            type: 'array',
            items: { type: 'object', properties: { round: ref('GroupRound'), points: { type: 'array', items: ref('Point') } }, required: ['round', 'points'] },
          },
        },
        required: ['points'],
      },
      ...refusals,
    },
  },
  listEvents: {
    tags: ['events'],
    summary: 'Events, newest first, filtered',
    querystring: {
      type: 'object',
      additionalProperties: false,
      properties: {
        since: { ...digits, description: 'ms since the epoch' },
        severity,
        subject: { type: 'string', minLength: 1, maxLength: Limits.maxNameLength },
        kind: { type: 'string', minLength: 1, maxLength: 64 },
        limit: { ...digits, description: '1..10000 (default 1000)' },
      },
    },
    response: { 200: listOf('events', 'Event'), ...refusals },
  },
  acknowledgeEvent: { tags: ['events'], summary: 'Acknowledge an event', params: params.numericId, response: { 200: ref('Event'), ...refusals } },
  eventStream: {
    tags: ['events'],
    summary:
      'Server-sent events: every new event as `event: event` with its JSON and id; a comment line every keep-alive interval. A client that reconnects with Last-Event-ID first gets the events it missed (up to 1000).',
    produces: ['text/event-stream'],
  },
  listWebhooks: { tags: ['webhooks'], summary: 'List webhooks', response: { 200: listOf('webhooks', 'Webhook'), ...refusals } },
  createWebhook: {
    tags: ['webhooks'],
    summary: 'Add a webhook: events at or above minSeverity are POSTed to the URL as JSON',
    body: {
      type: 'object',
      additionalProperties: false,
      properties: { url: { type: 'string', minLength: 8, maxLength: 2048, pattern: '^https?://' }, minSeverity: severity },
      required: ['url'],
    },
    response: { 201: ref('Webhook'), ...refusals },
  },
  deleteWebhook: { tags: ['webhooks'], summary: 'Delete a webhook', params: params.numericId, response: { 204: { type: 'null' }, ...refusals } },
  deliveries: {
    tags: ['webhooks'],
    summary: 'Webhook deliveries and their state',
    querystring: { type: 'object', additionalProperties: false, properties: { webhook: digits } },
    response: { 200: listOf('deliveries', 'WebhookDelivery'), ...refusals },
  },
  createToken: {
    tags: ['auth'],
    summary: "Log in: an operator's name and password give a bearer token (no token needed)",
    security: [],
    body: {
      type: 'object',
      additionalProperties: false,
      properties: {
        name: { type: 'string', minLength: 1, maxLength: 64 },
        password: { type: 'string', minLength: 1, maxLength: MAX_PASSWORD_LENGTH },
        ttlSeconds: { type: 'integer', minimum: 60, maximum: 366 * 24 * 3600, description: 'default: no expiry' },
      },
      required: ['name', 'password'],
    },
    response: { 201: ref('Token'), 400: ref('Error'), 401: ref('Error'), 429: ref('Error') },
  },
  listTokens: { tags: ['auth'], summary: "The calling operator's tokens (never the secrets)", response: { 200: listOf('tokens', 'Token'), ...refusals } },
  revokeToken: {
    tags: ['auth'],
    summary: 'Revoke one of your tokens; `current` revokes the one making the call',
    params: params.tokenId,
    response: { 204: { type: 'null' }, ...refusals },
  },
  listOperators: { tags: ['auth'], summary: 'List operators', response: { 200: listOf('operators', 'Operator'), ...refusals } },
  createOperator: {
    tags: ['auth'],
    summary: 'Create an operator (any operator may)',
    body: {
      type: 'object',
      additionalProperties: false,
      properties: {
        name: { type: 'string', pattern: OPERATOR_NAME_PATTERN },
        password: { type: 'string', minLength: MIN_PASSWORD_LENGTH, maxLength: MAX_PASSWORD_LENGTH },
      },
      required: ['name', 'password'],
    },
    response: { 201: ref('Operator'), ...refusals },
  },
  createSession: {
    tags: ['auth'],
    summary: "Sign in to the console: sets an HttpOnly, Secure, SameSite=Strict session cookie and answers the CSRF token (no token needed)",
    security: [],
    body: {
      type: 'object',
      additionalProperties: false,
      properties: { name: { type: 'string', minLength: 1, maxLength: 64 }, password: { type: 'string', minLength: 1, maxLength: MAX_PASSWORD_LENGTH } },
      required: ['name', 'password'],
    },
    response: { 201: ref('Session'), 400: ref('Error'), 401: ref('Error'), 429: ref('Error') },
  },
  showSession: { tags: ['auth'], summary: 'The session of the cookie (401 when it ended)', response: { 200: ref('Session'), ...refusals } },
  deleteSession: { tags: ['auth'], summary: 'Sign out: the session ends and the cookie is cleared', response: { 204: { type: 'null' }, ...refusals } },
  overview: { tags: ['machines'], summary: 'Machines, groups, open alerts, the receiver disks and backlog, worst RPO: one read', response: { 200: ref('Overview'), ...refusals } },
  overviewStream: {
    tags: ['machines'],
    summary: 'Server-sent events: `event: overview` with the overview JSON at once, then whenever it changes (at most once a second)',
    produces: ['text/event-stream'],
  },
  machineHistory: {
    tags: ['machines'],
    summary: "A machine's worst RPO and ingest throughput over the last hour (5 s samples) or day (5 min buckets: worst RPO, mean throughput); kept in memory",
    params: params.id,
    querystring: { type: 'object', additionalProperties: false, properties: { window: { type: 'string', enum: ['hour', 'day'] } } },
    response: {
      200: {
        type: 'object',
        properties: {
          window: { type: 'string' },
          stepMs: { type: 'integer' },
          samples: {
            type: 'array',
            items: { type: 'object', properties: { timeMs: ms, rpoSeconds: { type: 'number' }, bytesPerSecond: { type: 'number' } }, required: ['timeMs', 'rpoSeconds', 'bytesPerSecond'] },
          },
        },
        required: ['window', 'stepMs', 'samples'],
      },
      ...refusals,
    },
  },
  machinePoints: {
    tags: ['machines'],
    summary: "A machine's recovery points over all its volumes, newest first",
    params: params.id,
    querystring: { type: 'object', additionalProperties: false, properties: { limit: { ...digits, description: '1..10000 (default 100)' } } },
    response: { 200: listOf('points', 'Point'), ...refusals },
  },
  exportPoint: {
    tags: ['machines'],
    summary: "Write a point's image on the receiver (<data>/exports), as a raw image or a fixed VHD; answers when it is written",
    params: params.numericId,
    body: { type: 'object', additionalProperties: false, properties: { format: { type: 'string', enum: ['raw', 'vhd'] } } },
    response: {
      201: {
        type: 'object',
        properties: { pointId: { type: 'integer' }, volumeId: { type: 'string' }, format: { type: 'string' }, file: { type: 'string' }, sizeBytes: { type: 'integer' } },
        required: ['pointId', 'volumeId', 'format', 'file', 'sizeBytes'],
      },
      ...refusals,
    },
  },
  metrics: { tags: ['metrics'], summary: 'Prometheus text exposition (needs a token)', produces: ['text/plain'] },
  openapi: { tags: ['meta'], summary: 'This document (no token needed)', security: [] },
};
