/**
 * A small reader for PE32+ images (the fields a kernel driver check needs) and the check itself:
 * what ntoskrnl's loader requires of a driver image built by mingw-w64. Used by
 * test/native/windows-compile.test.ts; no Windows needed.
 */

export interface PeSection {
  name: string;
  virtualAddress: number;
  virtualSize: number;
  rawOffset: number;
  rawSize: number;
  characteristics: number;
}

export interface PeImport {
  dll: string;
  functions: string[];
}

export interface PeInfo {
  machine: number;
  characteristics: number;
  magic: number;
  entryRva: number;
  subsystem: number;
  dllCharacteristics: number;
  sections: PeSection[];
  imports: PeImport[];
  relocBytes: number;
}

export const IMAGE_SUBSYSTEM_NATIVE = 1;
const IMAGE_FILE_MACHINE_AMD64 = 0x8664;
const IMAGE_FILE_RELOCS_STRIPPED = 0x0001;
const IMAGE_FILE_EXECUTABLE_IMAGE = 0x0002;
const PE32_PLUS = 0x20b;
const IMAGE_SCN_MEM_EXECUTE = 0x20000000;
const IMAGE_DLLCHARACTERISTICS_NX_COMPAT = 0x0100;

export class PeFormatError extends Error {}

function need(buf: Buffer, off: number, len: number, what: string): void {
  if (off < 0 || off + len > buf.length) throw new PeFormatError(`truncated image: ${what} at ${off}`);
}

function cString(buf: Buffer, off: number): string {
  const end = buf.indexOf(0, off);
  if (end < 0) throw new PeFormatError(`unterminated string at ${off}`);
  return buf.toString('latin1', off, end);
}

function rvaToOffset(sections: PeSection[], rva: number): number {
  for (const s of sections) {
    const span = Math.max(s.virtualSize, s.rawSize);
    if (rva >= s.virtualAddress && rva < s.virtualAddress + span) {
      const off = rva - s.virtualAddress;
      if (off >= s.rawSize) throw new PeFormatError(`RVA 0x${rva.toString(16)} is not backed by file data`);
      return s.rawOffset + off;
    }
  }
  throw new PeFormatError(`RVA 0x${rva.toString(16)} is in no section`);
}

function readImports(buf: Buffer, sections: PeSection[], rva: number): PeImport[] {
  const imports: PeImport[] = [];
  if (rva === 0) return imports;
  for (let desc = rvaToOffset(sections, rva); ; desc += 20) {
    need(buf, desc, 20, 'import descriptor');
    const lookup = buf.readUInt32LE(desc) || buf.readUInt32LE(desc + 16);
    const nameRva = buf.readUInt32LE(desc + 12);
    if (lookup === 0 && nameRva === 0) break;
    const dll = cString(buf, rvaToOffset(sections, nameRva));
    const functions: string[] = [];
    for (let t = rvaToOffset(sections, lookup); ; t += 8) {
      need(buf, t, 8, 'import thunk');
      const entry = buf.readBigUInt64LE(t);
      if (entry === 0n) break;
      if (entry & (1n << 63n)) functions.push(`#${Number(entry & 0xffffn)}`);
      else functions.push(cString(buf, rvaToOffset(sections, Number(entry & 0x7fffffffn)) + 2));
    }
    imports.push({ dll, functions });
  }
  return imports;
}

/** Parses the headers, sections and import table of a PE32+ image. */
export function readPe(buf: Buffer): PeInfo {
  need(buf, 0, 64, 'DOS header');
  if (buf.toString('latin1', 0, 2) !== 'MZ') throw new PeFormatError('no MZ signature');
  const pe = buf.readUInt32LE(0x3c);
  need(buf, pe, 24, 'PE header');
  if (buf.readUInt32LE(pe) !== 0x00004550) throw new PeFormatError('no PE signature');
  const coff = pe + 4;
  const machine = buf.readUInt16LE(coff);
  const nsections = buf.readUInt16LE(coff + 2);
  const optSize = buf.readUInt16LE(coff + 16);
  const characteristics = buf.readUInt16LE(coff + 18);
  const opt = coff + 20;
  need(buf, opt, optSize, 'optional header');
  const magic = buf.readUInt16LE(opt);
  if (magic !== PE32_PLUS) throw new PeFormatError(`not PE32+ (magic 0x${magic.toString(16)})`);
  const entryRva = buf.readUInt32LE(opt + 16);
  const subsystem = buf.readUInt16LE(opt + 68);
  const dllCharacteristics = buf.readUInt16LE(opt + 70);
  const ndirs = buf.readUInt32LE(opt + 108);
  const dir = (i: number): [number, number] =>
    i < ndirs ? [buf.readUInt32LE(opt + 112 + i * 8), buf.readUInt32LE(opt + 116 + i * 8)] : [0, 0];
  const sections: PeSection[] = [];
  for (let i = 0, s = opt + optSize; i < nsections; i++, s += 40) {
    need(buf, s, 40, 'section header');
    sections.push({
      name: buf.toString('latin1', s, s + 8).replace(/\0+$/, ''),
      virtualSize: buf.readUInt32LE(s + 8),
      virtualAddress: buf.readUInt32LE(s + 12),
      rawSize: buf.readUInt32LE(s + 16),
      rawOffset: buf.readUInt32LE(s + 20),
      characteristics: buf.readUInt32LE(s + 36),
    });
  }
  return {
    machine,
    characteristics,
    magic,
    entryRva,
    subsystem,
    dllCharacteristics,
    sections,
    imports: readImports(buf, sections, dir(1)[0]),
    relocBytes: dir(5)[1],
  };
}

/**
 * What a 64-bit kernel driver image must look like; returns the problems (empty: fine).
 * Imports may come only from the kernel and the HAL: a driver linked against a user-mode DLL
 * (msvcrt.dll, kernel32.dll) would not load.
 */
export function checkNativeDriver(pe: PeInfo, allowedDlls: string[] = ['ntoskrnl.exe', 'hal.dll']): string[] {
  const problems: string[] = [];
  if (pe.machine !== IMAGE_FILE_MACHINE_AMD64) problems.push(`machine 0x${pe.machine.toString(16)} is not AMD64`);
  if (pe.subsystem !== IMAGE_SUBSYSTEM_NATIVE) problems.push(`subsystem ${pe.subsystem} is not native (1)`);
  if (!(pe.characteristics & IMAGE_FILE_EXECUTABLE_IMAGE)) problems.push('not marked executable');
  if (pe.characteristics & IMAGE_FILE_RELOCS_STRIPPED) problems.push('relocations stripped: cannot load at a kernel address');
  if (pe.relocBytes === 0) problems.push('no base relocation table');
  if (!(pe.dllCharacteristics & IMAGE_DLLCHARACTERISTICS_NX_COMPAT)) problems.push('not NX compatible');
  const entry = pe.sections.find(
    (s) => pe.entryRva >= s.virtualAddress && pe.entryRva < s.virtualAddress + s.virtualSize,
  );
  if (pe.entryRva === 0 || !entry) problems.push('entry point outside every section');
  else if (!(entry.characteristics & IMAGE_SCN_MEM_EXECUTE)) problems.push(`entry point in non-executable section ${entry.name}`);
  const allowed = new Set(allowedDlls.map((d) => d.toLowerCase()));
  for (const imp of pe.imports)
    if (!allowed.has(imp.dll.toLowerCase())) problems.push(`imports from ${imp.dll} (${imp.functions.slice(0, 3).join(', ')}...)`);
  if (pe.imports.length === 0) problems.push('imports nothing from the kernel');
  return problems;
}
