import { ExitCode, FerryError } from '../common/errors';
import { formatBytes, formatDuration } from '../common/units';
import type { MachineHistory } from '../control/history';
import type { PointRow } from '../receiver/catalog';
import type { Group, GroupPolicy, Machine } from '../control/model';
import { formatAge, formatTable } from './api-command';

/**
 * How the management commands show machines and groups (pure: tested without an API), and
 * how a machine named on the command line is found.
 */

/** A machine by id, else by its unique name. */
export function resolveMachine(machines: Machine[], ref: string): Machine {
  const byId = machines.find((m) => m.id === ref);
  if (byId) return byId;
  const byName = machines.filter((m) => m.name === ref);
  if (byName.length === 1) return byName[0];
  if (byName.length > 1) throw new FerryError(`${byName.length} machines are named ${ref} (${byName.map((m) => m.id).join(', ')}): give the id`, ExitCode.usage);
  throw new FerryError(`no machine ${ref} (neither an id nor a name): see ferry machine list`, ExitCode.notFound);
}

export function formatPolicyValue(ms: number, offAllowed = false): string {
  return ms === 0 && offAllowed ? 'off' : formatDuration(ms);
}

/** The progress of a machine towards Protected, in one line. */
export function machineProgress(m: Machine): string {
  const resyncing = m.volumes.filter((v) => v.state === 'resyncing');
  const parts = [`${m.name}: ${m.state}`];
  if (resyncing.length > 0) parts.push(`resync ${resyncing.map((v) => `${v.volumeId} ${v.resyncPercent.toFixed(0)}%`).join(', ')}`);
  if (m.volumes.length > 0) parts.push(`RPO ${m.rpoSeconds.toFixed(1)}s`);
  if (!m.connected) parts.push('agent not connected');
  return parts.join(', ');
}

export function machinesTable(machines: Machine[], now = Date.now()): string {
  return formatTable(
    ['ID', 'NAME', 'STATE', 'GROUP', 'RPO', 'VOLUMES', 'OS', 'LAST SEEN'],
    machines.map((m) => [m.id, m.name, m.state, m.groupId ?? '-', `${m.rpoSeconds.toFixed(1)}s`, String(m.volumes.length), m.os, m.connected ? 'connected' : formatAge(m.lastSeenMs, now)]),
  );
}

export function machineDetails(m: Machine, now = Date.now()): string {
  const r = m.recovery;
  const head = [
    `machine ${m.id} (${m.name})`,
    `state ${m.state}, ${m.connected ? 'connected' : `last seen ${formatAge(m.lastSeenMs, now)}`}, RPO ${m.rpoSeconds.toFixed(1)}s`,
    `group ${m.groupId ?? '(none)'}; ${m.os}, agent ${m.agentVersion}`,
    `recovery: name ${r.recoveredName}, ${r.vcpus} vCPU, ${r.memoryMiB} MiB, network ${r.network || '(isolated default)'}, boot order ${r.bootOrder}`,
    '',
  ].join('\n');
  const volumes = formatTable(
    ['VOLUME', 'SIZE', 'STATE', 'MODE', 'RPO', 'RESYNC', 'BACKLOG', 'THROUGHPUT'],
    m.volumes.map((v) => [
      v.volumeId,
      `${(v.sizeBytes / 2 ** 30).toFixed(1)} GiB`,
      v.state,
      v.mode,
      `${v.rpoSeconds.toFixed(1)}s`,
      `${v.resyncPercent.toFixed(0)}%`,
      formatBytes(v.backlogBytes ?? 0),
      `${formatBytes(v.bytesPerSecond ?? 0)}/s`,
    ]),
  );
  return `${head}\n${volumes}`;
}

export function historyTable(h: MachineHistory): string {
  if (h.samples.length === 0) return `no samples over the last ${h.window} yet (the receiver keeps them in memory since it started)\n`;
  return formatTable(
    ['TIME', h.window === 'hour' ? 'RPO' : 'WORST RPO', h.window === 'hour' ? 'THROUGHPUT' : 'MEAN THROUGHPUT'],
    h.samples.map((x) => [new Date(x.timeMs).toISOString(), `${x.rpoSeconds.toFixed(2)}s`, `${formatBytes(x.bytesPerSecond)}/s`]),
  );
}

export function pointsTable(points: PointRow[]): string {
  return formatTable(
    ['ID', 'TIME', 'VOLUME', 'KIND', 'ACCURACY', 'ROUND'],
    points.map((p) => [String(p.id), new Date(p.timeUs / 1000).toISOString(), p.volumeId, p.kind, p.damaged ? `damaged: ${p.damaged}` : p.accuracy, p.groupRound > 0 ? String(p.groupRound) : '-']),
  );
}

function policyCells(p: GroupPolicy): string[] {
  return [
    formatPolicyValue(p.rpoThresholdMs),
    formatPolicyValue(p.retentionMs),
    formatPolicyValue(p.crashConsistentIntervalMs),
    formatPolicyValue(p.appConsistentIntervalMs, true),
    p.multiMachineConsistency ? 'on' : 'off',
  ];
}

export function groupsTable(groups: Group[]): string {
  return formatTable(
    ['GROUP', 'MEMBERS', 'RPO THRESHOLD', 'RETENTION', 'CRASH', 'APP', 'MULTI-MACHINE', 'REVISION'],
    groups.map((g) => {
      const [rpo, retention, crash, app, multi] = policyCells(g.policy);
      return [g.name, String(g.members.length), rpo, retention, crash, app, multi, String(g.revision)];
    }),
  );
}

export function groupDetails(g: Group, members: Machine[], now = Date.now()): string {
  const [rpo, retention, crash, app, multi] = policyCells(g.policy);
  const head = [
    `group ${g.name} (revision ${g.revision}, created ${new Date(g.createdMs).toISOString()})`,
    `policy: RPO threshold ${rpo}, retention ${retention}, crash-consistent every ${crash}, app-consistent ${app === 'off' ? 'off' : `every ${app}`}, multi-machine consistency ${multi}`,
    '',
  ].join('\n');
  if (members.length === 0) return `${head}no members (add one with ferry group add ${g.name} MACHINE)\n`;
  return `${head}\n${machinesTable(members, now)}`;
}
