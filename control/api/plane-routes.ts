import type { FastifyInstance } from 'fastify';
import type { Server } from 'https';
import type { ControlPlaneApi, EventFilter, MachineFilter } from '../contract';
import type { EventSeverity, GroupPolicy, MachineState, RecoveryProperties } from '../model';
import { ApiError } from './errors';
import type { EventStreams } from './event-stream';
import { routeSchemas } from './schemas';

const P = '/api/v1';
const MAX_LIST = 10_000;
const DEFAULT_EVENT_LIMIT = 1000;

type IdParams = { Params: { id: string } };

/** A digits-only query value (the schema checked the form) as a bounded number. */
function bounded(value: string | undefined, field: string, min: number, max: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new ApiError(400, 'invalid', `${field} must be ${min}..${max}`, field);
  return n;
}

/** The event filter of a query string (pure: tested without a server). */
export function eventFilter(query: { since?: string; severity?: EventSeverity; subject?: string; kind?: string; limit?: string }): EventFilter {
  const filter: EventFilter = { limit: bounded(query.limit, 'limit', 1, MAX_LIST) ?? DEFAULT_EVENT_LIMIT };
  const since = bounded(query.since, 'since', 0, Number.MAX_SAFE_INTEGER);
  if (since !== undefined) filter.sinceMs = since;
  if (query.severity !== undefined) filter.severity = query.severity;
  if (query.subject !== undefined) filter.subjectId = query.subject;
  if (query.kind !== undefined) filter.kind = query.kind;
  return filter;
}

function numericId(text: string): number {
  const id = bounded(text, 'id', 1, Number.MAX_SAFE_INTEGER);
  return id ?? 0;
}

/** Machines, groups, rounds, points, events, webhooks and metrics: thin over the control plane. */
export function registerPlaneRoutes(app: FastifyInstance<Server>, plane: ControlPlaneApi, streams: EventStreams): void {
  app.get<{ Querystring: { state?: MachineState; group?: string } }>(`${P}/machines`, { schema: routeSchemas.listMachines }, async (request) => {
    const filter: MachineFilter = {};
    if (request.query.state !== undefined) filter.state = request.query.state;
    if (request.query.group !== undefined) filter.groupId = request.query.group;
    return { machines: plane.machines(filter) };
  });
  app.get<IdParams>(`${P}/machines/:id`, { schema: routeSchemas.showMachine }, async (request) => plane.machine(request.params.id));
  app.patch<IdParams & { Body: Partial<RecoveryProperties> }>(`${P}/machines/:id/recovery`, { schema: routeSchemas.setRecovery }, async (request) =>
    plane.setRecovery(request.params.id, request.body),
  );

  app.get(`${P}/groups`, { schema: routeSchemas.listGroups }, async () => ({ groups: plane.groups() }));
  app.post<{ Body: { name: string; policy?: Partial<GroupPolicy> } }>(`${P}/groups`, { schema: routeSchemas.createGroup }, async (request, reply) =>
    reply.code(201).send(plane.createGroup(request.body.name, request.body.policy)),
  );
  app.get<IdParams>(`${P}/groups/:id`, { schema: routeSchemas.showGroup }, async (request) => plane.group(request.params.id));
  app.patch<IdParams & { Body: Partial<GroupPolicy> }>(`${P}/groups/:id/policy`, { schema: routeSchemas.setPolicy }, async (request) =>
    plane.setPolicy(request.params.id, request.body),
  );
  app.delete<IdParams>(`${P}/groups/:id`, { schema: routeSchemas.deleteGroup }, async (request, reply) => {
    plane.deleteGroup(request.params.id);
    return reply.code(204).send();
  });
  app.post<IdParams & { Body: { machineId: string } }>(`${P}/groups/:id/members`, { schema: routeSchemas.addMember }, async (request) =>
    plane.addMember(request.params.id, request.body.machineId),
  );
  app.delete<{ Params: { id: string; machineId: string } }>(`${P}/groups/:id/members/:machineId`, { schema: routeSchemas.removeMember }, async (request) =>
    plane.removeMember(request.params.id, request.params.machineId),
  );
  app.get<IdParams & { Querystring: { limit?: string } }>(`${P}/groups/:id/rounds`, { schema: routeSchemas.listRounds }, async (request) => ({
    rounds: plane.rounds(request.params.id, bounded(request.query.limit, 'limit', 1, MAX_LIST)),
  }));
  app.post<IdParams & { Body: { app?: boolean } | undefined }>(
    `${P}/groups/:id/rounds`,
    {
      schema: routeSchemas.runRound,
      // The body is optional here: none means a crash-consistent round.
      preValidation: async (request) => {
        request.body ??= {};
      },
    },
    async (request, reply) => {
      const round = await plane.runRound(request.params.id, { app: request.body?.app === true });
      return reply.code(201).send(round);
    },
  );
  app.get<IdParams>(`${P}/groups/:id/points`, { schema: routeSchemas.groupPoints }, async (request) => ({ points: plane.groupPoints(request.params.id) }));

  app.get<{ Querystring: { since?: string; severity?: EventSeverity; subject?: string; kind?: string; limit?: string } }>(
    `${P}/events`,
    { schema: routeSchemas.listEvents },
    async (request) => ({ events: plane.events(eventFilter(request.query)) }),
  );
  app.post<IdParams>(`${P}/events/:id/acknowledge`, { schema: routeSchemas.acknowledgeEvent }, async (request) => plane.acknowledgeEvent(numericId(request.params.id)));
  app.get(`${P}/events/stream`, { schema: routeSchemas.eventStream }, (request, reply) => {
    const last = request.headers['last-event-id'];
    const lastId = typeof last === 'string' && /^\d{1,15}$/.test(last) ? Number(last) : undefined;
    reply.hijack();
    streams.attach(reply.raw, lastId);
  });

  app.get(`${P}/webhooks`, { schema: routeSchemas.listWebhooks }, async () => ({ webhooks: plane.webhooks() }));
  app.post<{ Body: { url: string; minSeverity?: EventSeverity } }>(`${P}/webhooks`, { schema: routeSchemas.createWebhook }, async (request, reply) =>
    reply.code(201).send(plane.addWebhook(request.body.url, request.body.minSeverity)),
  );
  app.delete<IdParams>(`${P}/webhooks/:id`, { schema: routeSchemas.deleteWebhook }, async (request, reply) => {
    plane.deleteWebhook(numericId(request.params.id));
    return reply.code(204).send();
  });
  app.get<{ Querystring: { webhook?: string } }>(`${P}/webhooks/deliveries`, { schema: routeSchemas.deliveries }, async (request) => ({
    deliveries: plane.deliveries(bounded(request.query.webhook, 'webhook', 1, Number.MAX_SAFE_INTEGER)),
  }));
}
