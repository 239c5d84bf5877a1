import type { VolumeCut } from './capture/types';
import type { AgentStatus } from './status';
import type { DowngradeCode } from './tags/verdict';
import type { VerifyProgress, VerifyReport } from './verify/verifier';

export interface TagResult {
  pointIds: number[];
  kind: 'crash' | 'app';
  accuracy: VolumeCut['accuracy'];
  cuts: VolumeCut[];
  frozenMs?: number;
  /** An app tag was asked for and the point is one; false for a downgraded app tag (see `reason`). */
  appConsistent: boolean;
  /** Why an app tag became a crash point: the first reason's code, and every reason in words. */
  reasonCode?: DowngradeCode;
  reason?: string;
  /** The post-hook failed after the cut (the point stands). */
  postHookError?: string;
}

/** What the control socket and the metrics endpoint (control.ts) ask of a running agent. */
export interface ControlledAgent {
  status(): AgentStatus;
  /** An operator's tag: app-consistent (freeze + hooks) or a plain crash tag. */
  tag(app: boolean, name: string): Promise<TagResult>;
  /** Online verify of every volume or of one; `cancelled` stops it at its next step. */
  verify(request: { volumeId?: string; repair: boolean }, onProgress: (p: VerifyProgress) => void, cancelled?: () => boolean): Promise<VerifyReport>;
}
