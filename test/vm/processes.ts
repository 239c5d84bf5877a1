/**
 * Child processes the VM lab starts (qemu, virtiofsd) and the guarantees that none outlives the
 * test process: each runs in its own process group, gets SIGKILL when the spawning thread dies
 * (prctl PDEATHSIG through util-linux `setpriv`), and any still alive when Node exits is killed.
 */
import { ChildProcess, spawn, spawnSync } from 'node:child_process';

export interface Tracked {
  child: ChildProcess;
  name: string;
  /** Resolves with the exit code (or the signal name) once the process has exited. */
  exited: Promise<number | string>;
  /** SIGKILLs the process group (no-op once exited) and waits for the exit. */
  kill: () => Promise<number | string>;
  alive: () => boolean;
}

const live = new Set<Tracked>();
let exitHookInstalled = false;
let setprivPath: string | null | undefined;

function findSetpriv(): string | null {
  if (setprivPath === undefined) {
    const r = spawnSync('setpriv', ['--help'], { stdio: 'ignore' });
    setprivPath = r.status === 0 ? 'setpriv' : null;
  }
  return setprivPath;
}

function killGroup(t: Tracked): void {
  const pid = t.child.pid;
  if (pid === undefined || !t.alive()) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // The group is gone already.
  }
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const t of live) killGroup(t);
  });
}

/**
 * Starts `command args` in a new process group, tied to this process's lifetime.
 * Rejects if the command cannot be started (e.g. not installed).
 */
export async function spawnTracked(name: string, command: string, args: string[], env?: NodeJS.ProcessEnv): Promise<Tracked> {
  installExitHook();
  const setpriv = findSetpriv();
  const [cmd, argv] = setpriv ? [setpriv, ['--pdeathsig', 'KILL', '--', command, ...args]] : [command, args];
  const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'], detached: true, env: env ?? process.env });
  let done = false;
  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => {
      done = true;
      live.delete(tracked);
      resolve(code ?? signal ?? 'unknown');
    });
  });
  const tracked: Tracked = {
    child,
    name,
    exited,
    alive: () => !done,
    kill: async () => {
      killGroup(tracked);
      return exited;
    },
  };
  live.add(tracked);
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', () => resolve());
    child.once('error', (err) => {
      done = true;
      live.delete(tracked);
      reject(new Error(`${name}: cannot start ${command}: ${err.message}`));
    });
  });
  return tracked;
}

/** Number of lab processes still running (for tests that check nothing was left behind). */
export function liveProcessCount(): number {
  return live.size;
}

/** Kills every lab process still running and waits for them. */
export async function killAllLabProcesses(): Promise<void> {
  await Promise.all([...live].map((t) => t.kill()));
}
