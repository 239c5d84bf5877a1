import * as fs from 'fs';
import * as path from 'path';
import type { FastifyInstance } from 'fastify';
import type { Server } from 'https';
import type { PointExporter } from '../../recovery/exporter';
import type { RecoveryApi } from '../../recovery/contract';
import type { ProtectionState } from '../../recovery/model';
import type { ControlPlaneApi } from '../contract';
import type { HistoryWindow } from '../history';
import type { PlaneOverview } from '../model';
import { ApiError } from './errors';
import type { OverviewStreams } from './overview-stream';
import { routeSchemas } from './schemas';

const P = '/api/v1';
/** Exports run in child processes; more at once than this are refused (each reads and writes a volume). */
const MAX_EXPORTS = 2;

export type Overview = PlaneOverview & { protection: Record<string, ProtectionState> };

/** The plane's overview with each machine's protection state from the recovery service (protected without one). */
export function overviewOf(plane: ControlPlaneApi, recovery: RecoveryApi | undefined): Overview {
  const base = plane.overview();
  const protection: Record<string, ProtectionState> = {};
  for (const m of base.machines) {
    let state: ProtectionState = 'protected';
    try {
      if (recovery) state = recovery.protection(m.id).state;
    } catch {
      // a machine the recovery service does not know yet is protected here
    }
    protection[m.id] = state;
  }
  return { ...base, protection };
}

/** The overview (and its stream), machine history and points, and point export: what the console reads beyond the plane's lists. */
export function registerOverviewRoutes(
  app: FastifyInstance<Server>,
  plane: ControlPlaneApi,
  recovery: RecoveryApi | undefined,
  streams: OverviewStreams,
  exporter: { dataDir: string; run: PointExporter },
): void {
  app.get(`${P}/overview`, { schema: routeSchemas.overview }, async () => overviewOf(plane, recovery));
  app.get(`${P}/overview/stream`, { schema: routeSchemas.overviewStream }, (_request, reply) => {
    reply.hijack();
    streams.attach(reply.raw);
  });

  app.get<{ Params: { id: string }; Querystring: { window?: HistoryWindow } }>(`${P}/machines/:id/history`, { schema: routeSchemas.machineHistory }, async (request) =>
    plane.machineHistory(request.params.id, request.query.window ?? 'hour'),
  );
  app.get<{ Params: { id: string }; Querystring: { limit?: string } }>(`${P}/machines/:id/points`, { schema: routeSchemas.machinePoints }, async (request) => {
    const limit = request.query.limit === undefined ? 100 : Number(request.query.limit);
    if (!Number.isSafeInteger(limit) || limit < 1 || limit > 10_000) throw new ApiError(400, 'invalid', 'limit must be 1..10000', 'limit');
    return { points: plane.machinePoints(request.params.id, limit) };
  });

  let running = 0;
  app.post<{ Params: { id: string }; Body: { format?: 'raw' | 'vhd' } }>(
    `${P}/points/:id/export`,
    {
      schema: routeSchemas.exportPoint,
      preValidation: async (request) => {
        request.body ??= {};
      },
    },
    async (request, reply) => {
      const pointId = Number(request.params.id);
      if (!Number.isSafeInteger(pointId) || pointId < 1) throw new ApiError(400, 'invalid', 'a point id is a whole number of at least 1', 'id');
      const point = plane.point(pointId);
      if (point.damaged) throw new ApiError(409, 'conflict', `point ${pointId} is damaged (${point.damaged}): it cannot be exported`);
      if (running >= MAX_EXPORTS) throw new ApiError(503, 'unavailable', `${MAX_EXPORTS} exports are running: try again when one is done`);
      const format = request.body.format ?? 'raw';
      const dir = path.join(exporter.dataDir, 'exports');
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
      const file = path.join(dir, `${point.volumeId}-point-${pointId}.${format === 'vhd' ? 'vhd' : 'img'}`);
      running++;
      try {
        await exporter.run({ dataDir: exporter.dataDir, volumeId: point.volumeId, pointId, out: file, format });
      } catch (err) {
        throw new ApiError(409, 'conflict', (err as Error).message);
      } finally {
        running--;
      }
      return reply.code(201).send({ pointId, volumeId: point.volumeId, format, file, sizeBytes: fs.statSync(file).size });
    },
  );
}
