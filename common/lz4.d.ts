declare module 'lz4' {
  export function encodeBound(size: number): number;
  /** Returns the compressed size, or 0 when the input is not compressible. */
  export function encodeBlock(input: Buffer, output: Buffer, startIdx?: number, endIdx?: number): number;
  /** Returns the decoded size, or a negative number at the offset of the first error. */
  export function decodeBlock(input: Buffer, output: Buffer, startIdx?: number, endIdx?: number): number;
}
