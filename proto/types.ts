import { ferry } from './generated/ferry';

/** `noop` holds a seq and changes nothing (a resync read that matched the receiver's hash). */
export type ExtentKind = 'write' | 'discard' | 'flush' | 'noop';
export type AccuracyName = 'exact' | 'approximate' | 'none';
export type TagKindName = 'crash' | 'app';

/** One change record of a validated change set. */
export interface ChangeExtent {
  seq: number;
  kind: ExtentKind;
  offset: number;
  length: number;
  captureTimeUs: number;
  /** Offset of this extent's data in ChangeBatch.data (WRITE only). */
  dataOffset: number;
}

/** A validated, decompressed change set. */
export interface ChangeBatch {
  volumeId: string;
  firstSeq: number;
  lastSeq: number;
  extents: ChangeExtent[];
  accuracy: AccuracyName;
  data: Buffer;
  pendingSinceUs: number;
}

export interface TagCut {
  volumeId: string;
  seq: number;
  accuracy: AccuracyName;
}

export interface ValidTag {
  kind: TagKindName;
  groupId: string;
  name: string;
  timeUs: number;
  cuts: TagCut[];
}

export interface ValidHashRequest {
  volumeId: string;
  offset: number;
  blockSize: number;
  count: number;
  requestId: number;
}

export interface VolumeSpec {
  volumeId: string;
  sizeBytes: number;
  blockSize: number;
}

const accuracyNames: Record<number, AccuracyName> = {
  [ferry.Accuracy.EXACT]: 'exact',
  [ferry.Accuracy.APPROXIMATE]: 'approximate',
  [ferry.Accuracy.NONE]: 'none',
};

export function accuracyName(value: number): AccuracyName | undefined {
  return accuracyNames[value];
}

export function accuracyValue(name: AccuracyName): ferry.Accuracy {
  return name === 'exact' ? ferry.Accuracy.EXACT : name === 'approximate' ? ferry.Accuracy.APPROXIMATE : ferry.Accuracy.NONE;
}

const accuracyRank: Record<AccuracyName, number> = { exact: 0, approximate: 1, none: 2 };

/** The weaker of two accuracies (a point is only as good as its weakest input). */
export function weakerAccuracy(a: AccuracyName, b: AccuracyName): AccuracyName {
  return accuracyRank[a] >= accuracyRank[b] ? a : b;
}
