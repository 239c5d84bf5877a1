import * as net from 'node:net';
import type { AddressInfo } from 'node:net';

/**
 * The network between the machines of a causal ring (test/helpers/causal-ring.js run with
 * host:port): each member connects and says its role; every token a role sends goes to the
 * next role, queued until that role has connected.
 */
export class RingRelay {
  private readonly sockets = new Map<number, net.Socket>();
  private readonly queued = new Map<number, string[]>();
  tokens = 0;

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
    private readonly members: number,
  ) {}

  static start(members: number, host = '127.0.0.1'): Promise<RingRelay> {
    let relay: RingRelay | undefined;
    const server = net.createServer((socket) => relay?.accept(socket));
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, host, () => {
        relay = new RingRelay(server, (server.address() as AddressInfo).port, members);
        resolve(relay);
      });
    });
  }

  private accept(socket: net.Socket): void {
    socket.setNoDelay(true);
    let role: number | undefined;
    let pending = '';
    socket.on('error', () => undefined);
    socket.on('data', (chunk) => {
      pending += chunk.toString();
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) {
        if (role === undefined) {
          role = Number(line);
          this.sockets.set(role, socket);
          for (const token of this.queued.get(role) ?? []) socket.write(token);
          this.queued.delete(role);
          continue;
        }
        this.tokens++;
        this.send((role + 1) % this.members, `${line}\n`);
      }
    });
  }

  private send(role: number, token: string): void {
    const socket = this.sockets.get(role);
    if (socket && !socket.destroyed) socket.write(token);
    else this.queued.set(role, [...(this.queued.get(role) ?? []), token]);
  }

  close(): Promise<void> {
    for (const s of this.sockets.values()) s.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
