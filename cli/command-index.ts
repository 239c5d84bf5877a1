// The top-level commands and their one-line descriptions, without their code: `ferry --help`
// lists these, and main.ts loads only the module of the command that runs.
export const COMMAND_DESCRIPTIONS = {
  agent: 'the protection agent that runs on each protected machine',
  receiver: 'the receiving side: durable spool, replicas, undo journal, recovery points',
  points: 'list recovery points (id, time, kind, accuracy, seq); with --group, the group points (one per done group round)',
  export: 'write the image of a volume at a recovery point, or of every member volume of a group point (replication keeps running)',
  quickstart: 'try the whole product on this machine (no root): receiver, agent with scan capture, churn, a recovery point, its export, a byte check',
  'push-install': 'install the agent on remote machines: Linux over SSH (SFTP + install.sh), Windows over SMB (smbclient + svcctl)',
  login: 'log in to the management API: saves a bearer token and pins the API certificate (~/.config/ferry/api.json, 0600)',
  logout: 'revoke the saved token and forget it',
  group: 'protection groups: machines of one workload and their shared policy (management API)',
  machine: 'protected machines (registered agents) and their recovery properties (management API)',
  events: 'alerts and events (RPO over threshold, disconnects, resyncs, aborted rounds...), newest first',
  plan: 'recovery plans: machines in boot groups, scripts and manual steps, the health check (management API)',
  failover: 'recovery runs of a plan: test failover in a sandbox, failover, commit (management API)',
  failback: 'after a failover: copy the recovered disks back to the original machines (only what differs) and protect them again (management API)',
  jobs: 'recovery jobs, newest first: kind, plan, state, point, RTO',
  job: 'one recovery job: show, wait for, resume or cancel it (management API)',
} as const;

export type CommandName = keyof typeof COMMAND_DESCRIPTIONS;
