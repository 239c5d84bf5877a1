/**
 * The sandbox network of one job: an L2 hub on a unix socket. Each VM joins with qemu's
 * `-netdev stream` (frames prefixed with their 4-byte big-endian length); every frame goes to
 * every other port. Nothing else is on this L2 (no host interface, no router), so the VMs see
 * each other and nothing else. The hub does not look at addresses.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import { TargetError } from './target';

/** Larger than any Ethernet frame qemu sends (jumbo frames included); more means a broken peer. */
export const MAX_FRAME = 65_536;

/** Splits a stream into length-prefixed frames. Throws on a length no NIC would send. */
export class FrameReader {
  private buffer: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Buffer[] {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    const frames: Buffer[] = [];
    while (this.buffer.length >= 4) {
      const len = this.buffer.readUInt32BE(0);
      if (len === 0 || len > MAX_FRAME) throw new Error(`bad frame length ${len}`);
      if (this.buffer.length < 4 + len) break;
      // The frame with its prefix: forwarded as is.
      frames.push(this.buffer.subarray(0, 4 + len));
      this.buffer = this.buffer.subarray(4 + len);
    }
    return frames;
  }
}

export class SandboxSwitch {
  private readonly ports = new Set<net.Socket>();
  private closed = false;

  private constructor(
    readonly socketPath: string,
    private readonly server: net.Server,
  ) {
    server.on('connection', (socket) => this.join(socket));
  }

  static async start(socketPath: string): Promise<SandboxSwitch> {
    fs.rmSync(socketPath, { force: true });
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) => reject(new TargetError(`sandbox switch: cannot listen on ${socketPath}: ${err.message}`)));
      server.listen(socketPath, () => resolve());
    });
    fs.chmodSync(socketPath, 0o600);
    return new SandboxSwitch(socketPath, server);
  }

  get portCount(): number {
    return this.ports.size;
  }

  private join(socket: net.Socket): void {
    if (this.closed) {
      socket.destroy();
      return;
    }
    this.ports.add(socket);
    const reader = new FrameReader();
    socket.on('data', (chunk: Buffer) => {
      let frames: Buffer[];
      try {
        frames = reader.push(chunk);
      } catch {
        socket.destroy();
        return;
      }
      for (const frame of frames) {
        for (const other of this.ports) {
          // A port that cannot keep up loses frames, like a congested link.
          if (other !== socket && other.writableLength < 4 * MAX_FRAME) other.write(frame);
        }
      }
    });
    socket.on('error', () => socket.destroy());
    socket.on('close', () => this.ports.delete(socket));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const socket of this.ports) socket.destroy();
    this.ports.clear();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    fs.rmSync(this.socketPath, { force: true });
  }
}
