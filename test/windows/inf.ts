/**
 * An INF parser (the subset Windows' SetupAPI reads: [sections], `key = value` and bare entries,
 * comma-separated fields, quoted strings, `;` comments, `\` line continuation, %string% tokens)
 * and a check of a class-filter INF against what makes it install safely:
 *  - it appends itself to the class's UpperFilters (FLG_ADDREG_APPEND) - overwriting that
 *    value would drop volsnap and the other filters, and can leave volumes unusable;
 *  - the uninstall removes only its own entry;
 *  - a boot-start kernel service whose binary is copied where ServiceBinary points;
 *  - every section and %string% it names exists; [Version] is complete.
 * Used by test/native/windows-compile.test.ts (CI has no Windows and no InfVerif).
 */

export class InfSyntaxError extends Error {
  constructor(
    message: string,
    readonly line: number,
  ) {
    super(`line ${line}: ${message}`);
  }
}

export interface InfEntry {
  line: number;
  key?: string; // lower case, when the line is `key = value`
  fields: string[]; // the value (or the whole line) split on commas, unquoted
}

export interface Inf {
  sections: Map<string, InfEntry[]>; // keys in lower case
  strings: Map<string, string>;
}

/** Splits on a separator outside double quotes; "" inside quotes is a literal quote. */
function splitOutsideQuotes(text: string, sep: string, line: number, limit = Infinity): string[] {
  const parts: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (ch === '"') {
      if (quoted && text[i + 1] === '"') {
        cur += '""';
        i++;
        continue;
      }
      quoted = !quoted;
      cur += ch;
    } else if (ch === sep && !quoted && parts.length < limit) {
      parts.push(cur);
      cur = '';
    } else {
      cur += ch;
    }
  }
  if (quoted) throw new InfSyntaxError('unterminated quoted string', line);
  parts.push(cur);
  return parts;
}

function unquote(field: string): string {
  const t = field.trim();
  if (t.length >= 2 && t.startsWith('"') && t.endsWith('"')) return t.slice(1, -1).replace(/""/g, '"');
  return t;
}

function stripComment(text: string): string {
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    if (text[i] === '"') quoted = !quoted;
    else if (text[i] === ';' && !quoted) return text.slice(0, i);
  }
  return text;
}

export function parseInf(text: string): Inf {
  const sections = new Map<string, InfEntry[]>();
  let current: InfEntry[] | undefined;
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    let raw = stripComment(lines[i]).trimEnd();
    // a trailing backslash continues the line
    while (raw.endsWith('\\') && i + 1 < lines.length) {
      raw = raw.slice(0, -1) + stripComment(lines[++i]).trim();
    }
    const t = raw.trim();
    if (t === '') continue;
    if (t.startsWith('[')) {
      if (!t.endsWith(']')) throw new InfSyntaxError(`bad section header ${t}`, lineNo);
      const name = t.slice(1, -1).trim().toLowerCase();
      if (name === '') throw new InfSyntaxError('empty section name', lineNo);
      if (sections.has(name)) throw new InfSyntaxError(`section [${name}] appears twice`, lineNo);
      current = [];
      sections.set(name, current);
      continue;
    }
    if (!current) throw new InfSyntaxError('entry outside any section', lineNo);
    const kv = splitOutsideQuotes(t, '=', lineNo, 1);
    if (kv.length === 2) {
      const key = kv[0].trim();
      if (key === '') throw new InfSyntaxError('empty key', lineNo);
      current.push({ line: lineNo, key: key.toLowerCase(), fields: splitOutsideQuotes(kv[1], ',', lineNo).map(unquote) });
    } else {
      current.push({ line: lineNo, fields: splitOutsideQuotes(t, ',', lineNo).map(unquote) });
    }
  }
  const strings = new Map<string, string>();
  for (const e of sections.get('strings') ?? []) {
    if (e.key === undefined) throw new InfSyntaxError('[Strings] entry without a key', e.line);
    strings.set(e.key, e.fields.join(','));
  }
  return { sections, strings };
}

/** Values of `key` in a section (all of them: AddReg = a, b allows several lines). */
function values(inf: Inf, section: string, key: string): InfEntry[] {
  return (inf.sections.get(section.toLowerCase()) ?? []).filter((e) => e.key === key.toLowerCase());
}

function one(inf: Inf, section: string, key: string, problems: string[]): string | undefined {
  const v = values(inf, section, key);
  if (v.length === 0) {
    problems.push(`[${section}] has no ${key}`);
    return undefined;
  }
  if (v.length > 1) problems.push(`[${section}] sets ${key} ${v.length} times`);
  return v[0].fields.join(',');
}

/** Section names listed by a directive (CopyFiles = a, b). */
function listed(inf: Inf, section: string, key: string): string[] {
  return values(inf, section, key).flatMap((e) => e.fields.map((f) => f.trim()).filter((f) => f !== ''));
}

function parseFlags(text: string): number | undefined {
  const t = text.trim();
  if (/^0x[0-9a-f]+$/i.test(t)) return parseInt(t, 16);
  if (/^[0-9]+$/.test(t)) return parseInt(t, 10);
  return undefined;
}

const FLG_ADDREG_TYPE_MULTI_SZ = 0x00010000;
const FLG_ADDREG_APPEND = 0x00000008;
const FLG_DELREG_MULTI_SZ_DELSTRING = 0x00018002;

export interface FilterInfSpec {
  className: string; // "Volume"
  classGuid: string; // "{71A27CDD-812A-11D0-BEC7-08002BE10318}"
  service: string; // "ferryflt"
  binary: string; // "ferryflt.sys"
  arch: string; // "NTamd64"
}

/** Checks a class upper-filter INF; returns the problems (empty: fine). */
export function checkFilterInf(inf: Inf, spec: FilterInfSpec): string[] {
  const problems: string[] = [];
  const has = (s: string): boolean => inf.sections.has(s.toLowerCase());
  const classKey = `system\\currentcontrolset\\control\\class\\${spec.classGuid.toLowerCase()}`;

  // every %token% must be a DIRID (number) or a [Strings] key
  for (const [name, entries] of inf.sections) {
    if (name === 'strings') continue;
    for (const e of entries)
      for (const f of e.fields)
        for (const m of f.matchAll(/%([^%]*)%/g))
          if (!/^[0-9]+$/.test(m[1]) && !inf.strings.has(m[1].toLowerCase()))
            problems.push(`line ${e.line}: %${m[1]}% is not defined in [Strings]`);
  }

  // [Version]
  if (!has('Version')) problems.push('no [Version] section');
  if (one(inf, 'Version', 'Signature', problems)?.toLowerCase() !== '$windows nt$')
    problems.push('[Version] Signature must be "$WINDOWS NT$"');
  if (one(inf, 'Version', 'Class', problems) !== spec.className) problems.push(`[Version] Class must be ${spec.className}`);
  if (one(inf, 'Version', 'ClassGuid', problems)?.toLowerCase() !== spec.classGuid.toLowerCase())
    problems.push(`[Version] ClassGuid must be ${spec.classGuid}`);
  one(inf, 'Version', 'Provider', problems);
  const ver = one(inf, 'Version', 'DriverVer', problems) ?? '';
  const vm = /^(\d{2})\/(\d{2})\/(\d{4}),\d+\.\d+\.\d+\.\d+$/.exec(ver);
  if (!vm || +vm[1] < 1 || +vm[1] > 12 || +vm[2] < 1 || +vm[2] > 31)
    problems.push(`[Version] DriverVer "${ver}" is not mm/dd/yyyy,w.x.y.z`);
  if (!/\.cat$/i.test(one(inf, 'Version', 'CatalogFile', problems) ?? '')) problems.push('[Version] CatalogFile must name a .cat');

  // install: copy the binary, append the filter, add the service
  const install = `DefaultInstall.${spec.arch}`;
  if (!has(install)) problems.push(`no [${install}] section`);
  const copy = listed(inf, install, 'CopyFiles');
  const addreg = listed(inf, install, 'AddReg');
  for (const s of [...copy, ...addreg]) if (!has(s)) problems.push(`[${install}] names missing section [${s}]`);
  if (!copy.some((s) => (inf.sections.get(s.toLowerCase()) ?? []).some((e) => e.fields[0]?.toLowerCase() === spec.binary)))
    problems.push(`[${install}] CopyFiles does not copy ${spec.binary}`);

  let appended = false;
  for (const s of addreg) {
    for (const e of inf.sections.get(s.toLowerCase()) ?? []) {
      const [root, key, value, flags, ...data] = e.fields;
      if (root?.toUpperCase() !== 'HKLM' || key?.toLowerCase() !== classKey) continue;
      if (value?.toLowerCase() !== 'upperfilters') continue;
      const f = parseFlags(flags ?? '');
      if (f === undefined || (f & FLG_ADDREG_TYPE_MULTI_SZ) === 0)
        problems.push(`line ${e.line}: UpperFilters must be written as REG_MULTI_SZ (0x00010000)`);
      else if ((f & FLG_ADDREG_APPEND) === 0)
        problems.push(`line ${e.line}: UpperFilters is replaced, not appended to (0x00010008): the class's other filters (volsnap) would be dropped`);
      else if (data.length !== 1 || data[0].toLowerCase() !== spec.service.toLowerCase())
        problems.push(`line ${e.line}: UpperFilters must get exactly "${spec.service}"`);
      else appended = true;
    }
  }
  if (!appended) problems.push(`no AddReg line appends ${spec.service} to the ${spec.className} class's UpperFilters`);

  const services = `${install}.Services`;
  const addService = values(inf, services, 'AddService');
  let serviceSection: string | undefined;
  for (const e of addService) if (e.fields[0]?.toLowerCase() === spec.service.toLowerCase()) serviceSection = e.fields[2];
  if (!serviceSection) problems.push(`[${services}] does not add service ${spec.service}`);
  else if (!has(serviceSection)) problems.push(`[${services}] names missing section [${serviceSection}]`);
  else {
    if (one(inf, serviceSection, 'ServiceType', problems) !== '1') problems.push('ServiceType must be 1 (kernel driver)');
    if (one(inf, serviceSection, 'StartType', problems) !== '0')
      problems.push('StartType must be 0 (boot start): the filter must be in every volume stack before the first write');
    const ec = one(inf, serviceSection, 'ErrorControl', problems);
    if (ec !== '0' && ec !== '1') problems.push('ErrorControl must be 0 or 1');
    const bin = (one(inf, serviceSection, 'ServiceBinary', problems) ?? '').toLowerCase();
    const destDir = values(inf, 'DestinationDirs', 'DefaultDestDir')[0]?.fields[0];
    if (bin !== `%${destDir}%\\${spec.binary}`)
      problems.push(`ServiceBinary "${bin}" is not where DefaultDestDir (${destDir}) copies ${spec.binary}`);
    for (const s of listed(inf, serviceSection, 'AddReg')) if (!has(s)) problems.push(`[${serviceSection}] names missing section [${s}]`);
  }

  // the binary must be on a declared source disk
  const srcFile = (inf.sections.get('sourcedisksfiles') ?? []).find((e) => e.key === spec.binary);
  const disks = new Set((inf.sections.get('sourcedisksnames') ?? []).map((e) => e.key));
  if (!srcFile) problems.push(`[SourceDisksFiles] does not list ${spec.binary}`);
  else if (!disks.has(srcFile.fields[0])) problems.push(`${spec.binary} is on disk ${srcFile.fields[0]}, not in [SourceDisksNames]`);

  // uninstall removes exactly our entry
  const uninstall = `DefaultUninstall.${spec.arch}`;
  const delreg = listed(inf, uninstall, 'DelReg');
  const removes = delreg.some((s) =>
    (inf.sections.get(s.toLowerCase()) ?? []).some(
      (e) =>
        e.fields[0]?.toUpperCase() === 'HKLM' &&
        e.fields[1]?.toLowerCase() === classKey &&
        e.fields[2]?.toLowerCase() === 'upperfilters' &&
        parseFlags(e.fields[3] ?? '') === FLG_DELREG_MULTI_SZ_DELSTRING &&
        e.fields[4]?.toLowerCase() === spec.service.toLowerCase(),
    ),
  );
  if (!removes) problems.push(`[${uninstall}] does not remove only ${spec.service} from UpperFilters (0x00018002)`);
  return problems;
}
