/**
 * A tiny HTTP endpoint on the host that a guest script calls to make the host act at a precise
 * point of the scenario (stop the receiver, pause its apply, ...): `GET /<action>?arg=...`
 * answers once the action is done (200 with its text, 500 with the error). The guest reaches
 * it at http://10.0.2.2:<port> (qemu user networking maps the host's 127.0.0.1 there).
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';

export type HostAction = (arg: string) => Promise<string | void> | string | void;

export class HostControl {
  readonly calls: string[] = [];

  private constructor(
    private readonly server: http.Server,
    readonly port: number,
  ) {}

  static start(actions: Record<string, HostAction>): Promise<HostControl> {
    let control: HostControl | undefined;
    const server = http.createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://host');
      const name = url.pathname.slice(1);
      const arg = url.searchParams.get('arg') ?? '';
      control?.calls.push(arg ? `${name} ${arg}` : name);
      const action = actions[name];
      if (!action) {
        res.writeHead(404).end(`no host action ${name}\n`);
        return;
      }
      Promise.resolve()
        .then(() => action(arg))
        .then(
          (text) => res.writeHead(200).end(`${text ?? 'ok'}\n`),
          (err: unknown) => res.writeHead(500).end(`${(err as Error).message}\n`),
        );
    });
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        control = new HostControl(server, (server.address() as AddressInfo).port);
        resolve(control);
      });
    });
  }

  /** The base URL as the guest sees it. */
  get guestUrl(): string {
    return `http://10.0.2.2:${this.port}`;
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.closeAllConnections();
      this.server.close(() => resolve());
    });
  }
}
