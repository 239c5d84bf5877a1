/**
 * The management API's JSON shapes. The server's own models are the one source: these are
 * type-only re-exports (erased from the bundle; the console runs no server code), plus the
 * shapes that exist only as route schemas (session, export, group points).
 */

export type {
  ControlEvent,
  EventSeverity,
  EventSubjectKind,
  Group,
  GroupPolicy,
  GroupRound,
  Machine,
  MachineState,
  MachineVolume,
  RecoveryProperties,
  RoundState,
} from '../../control/model';
export type { PointKind, PointRow } from '../../receiver/catalog';
export type {
  BootGroup,
  HealthCheck,
  Job,
  JobKind,
  JobMachine,
  JobState,
  JobStep,
  MachineRunState,
  Plan,
  PlanAction,
  PlanInput,
  PointSpec,
  ProtectionState,
  StepState,
} from '../../recovery/model';
export type { MachineProtection } from '../../recovery/contract';
export type { Operator } from '../../control/operators';
export type { HistorySample, HistoryWindow, MachineHistory } from '../../control/history';
export type { ErrorBody } from '../../control/api/errors';

import type { GroupRound, PlaneOverview, ReceiverOverview } from '../../control/model';
import type { PointRow } from '../../receiver/catalog';
import type { ProtectionState } from '../../recovery/model';

export type Accuracy = PointRow['accuracy'];
export type ReceiverSummary = ReceiverOverview;
export type StorageFree = ReceiverOverview['storage'][number];
export type ReceiverAlert = ReceiverOverview['alerts'][number];

/** GET /overview and each `overview` event of its stream. */
export type Overview = PlaneOverview & { protection: Record<string, ProtectionState> };

/** GET /groups/:id/points: each done round with every member volume's point. */
export interface GroupPoints {
  round: GroupRound;
  points: PointRow[];
}

/** POST /points/:id/export. */
export interface ExportResult {
  file: string;
  sizeBytes: number;
  format: 'raw' | 'vhd';
  pointId: number;
  volumeId: string;
}

/** POST and GET /session. */
export interface Session {
  operator: string;
  expiresMs: number;
  csrfToken: string;
}
