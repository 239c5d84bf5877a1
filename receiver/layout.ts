import * as path from 'path';

/** Where everything lives under a receiver's data directory. */
export class DataLayout {
  constructor(readonly root: string) {}

  get configFile(): string {
    return path.join(this.root, 'receiver.json');
  }
  get tlsDir(): string {
    return path.join(this.root, 'tls');
  }
  get certFile(): string {
    return path.join(this.tlsDir, 'cert.pem');
  }
  get keyFile(): string {
    return path.join(this.tlsDir, 'key.pem');
  }
  get catalogFile(): string {
    return path.join(this.root, 'catalog.db');
  }
  get statusFile(): string {
    return path.join(this.root, 'status.json');
  }
  get volumesDir(): string {
    return path.join(this.root, 'volumes');
  }
  volumeDir(volumeId: string): string {
    return path.join(this.volumesDir, volumeId);
  }
  replicaFile(volumeId: string): string {
    return path.join(this.volumeDir(volumeId), 'replica.img');
  }
  /** Block checksums of the replica (storage/block-sums.ts). */
  sumsFile(volumeId: string): string {
    return path.join(this.volumeDir(volumeId), 'replica.sums');
  }
  spoolDir(volumeId: string): string {
    return path.join(this.volumeDir(volumeId), 'spool');
  }
  journalDir(volumeId: string): string {
    return path.join(this.volumeDir(volumeId), 'journal');
  }
  checkpointFile(volumeId: string): string {
    return path.join(this.volumeDir(volumeId), 'checkpoint');
  }
  /** While this file exists, apply holds off for the volume (ingest and acks go on, up to the spool cap). */
  applyPauseFile(volumeId: string): string {
    return path.join(this.volumeDir(volumeId), 'apply.paused');
  }
  /** Space kept back so that checkpoints and the catalog can still be written on a full disk. */
  get reserveFile(): string {
    return path.join(this.root, 'reserve');
  }
  /** flock'd shared by exports, exclusive by recovery and journal pruning. */
  lockFile(volumeId: string): string {
    return path.join(this.volumeDir(volumeId), 'lock');
  }
}
