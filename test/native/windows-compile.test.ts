/**
 * What can be checked of the Windows capture path on a Linux CI machine (there is no Windows
 * here; test/windows/README.md is the procedure for a Windows test machine):
 *  - ferryflt.sys and the portable core compile warning-free (-Wall -Wextra -Werror) with
 *    mingw-w64's DDK headers and link as a native PE that imports only from the kernel;
 *  - the addon's Windows sources pass mingw-w64's C++ syntax check, and binding.gyp builds
 *    exactly those sources on Windows;
 *  - the driver's portable parts (control calls, DSM parsing) pass their host unit tests;
 *  - ferryflt.inf is well-formed and installs a safe, appended Volume-class upper filter;
 *  - the WDK project (ferryflt.vcxproj) builds the same sources as the mingw check;
 *  - the Windows test procedure's PowerShell script parses and its Node helper compiles.
 * Needs: apt-get install mingw-w64 (plus gcc, make, python3, which CI has). Without mingw-w64
 * the compile checks are skipped locally and fail when CI=true.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { powershellSyntaxErrors } from '../helpers/powershell';
import { InfSyntaxError, checkFilterInf, parseInf, type FilterInfSpec } from '../windows/inf';
import { checkNativeDriver, readPe } from '../windows/pe';

const ROOT = path.resolve(__dirname, '..', '..');
const WIN = path.join(ROOT, 'native', 'windows');
const DDK = '/usr/x86_64-w64-mingw32/include/ddk/ntifs.h';
const TOOLS = ['x86_64-w64-mingw32-gcc', 'x86_64-w64-mingw32-g++-posix', 'make', 'gcc', 'python3'];

function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

const missing = [...TOOLS.filter((t) => !have(t)), ...(fs.existsSync(DDK) ? [] : [DDK])];
// CI must run these: a missing tool is a failure there, a skip on a developer machine.
const skip = missing.length > 0 && process.env.CI !== 'true';

function run(cmd: string, args: string[], cwd = ROOT): { status: number | null; output: string } {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  return { status: r.status, output: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}` };
}

const SPEC: FilterInfSpec = {
  className: 'Volume',
  classGuid: '{71A27CDD-812A-11D0-BEC7-08002BE10318}',
  service: 'ferryflt',
  binary: 'ferryflt.sys',
  arch: 'NTamd64',
};

describe.skipIf(skip)('Windows driver and addon compile checks (mingw-w64)', () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-win-'));

  it('has the tools (apt-get install mingw-w64)', () => {
    expect(missing, `missing: ${missing.join(', ')}`).toEqual([]);
  });

  it('compiles ferryflt.sys and the portable core warning-free and links a native kernel PE', () => {
    const r = run('make', ['-C', WIN, `OUT=${out}`, 'sys']);
    expect(r.status, r.output).toBe(0);
    expect(r.output).not.toMatch(/warning:/);
    // the core was compiled by the same rule, against the kernel shim
    for (const f of ['ferry_core', 'ferry_stream', 'ferry_md'])
      expect(fs.existsSync(path.join(out, 'sys', `common_${f}.o`)), f).toBe(true);
    const pe = readPe(fs.readFileSync(path.join(out, 'ferryflt.sys')));
    expect(checkNativeDriver(pe)).toEqual([]);
    expect(pe.subsystem).toBe(1);
    const kernel = pe.imports.find((i) => i.dll.toLowerCase() === 'ntoskrnl.exe');
    // the filter's key calls resolved against the kernel
    for (const fn of ['IoAttachDeviceToDeviceStackSafe', 'IoRegisterLastChanceShutdownNotification', 'IoCsqInitialize', 'KeAcquireSpinLockRaiseToDpc', 'MmMapLockedPagesSpecifyCache'])
      expect(kernel?.functions, fn).toContain(fn);
  }, 300_000);

  it('rejects a user-mode program in the PE check (the check can fail)', () => {
    const src = path.join(out, 'hello.c');
    fs.writeFileSync(src, '#include <stdio.h>\nint main(void) { puts("hi"); return 0; }\n');
    const exe = path.join(out, 'hello.exe');
    const r = run('x86_64-w64-mingw32-gcc', ['-o', exe, src]);
    expect(r.status, r.output).toBe(0);
    const problems = checkNativeDriver(readPe(fs.readFileSync(exe)));
    expect(problems.join('\n')).toMatch(/subsystem 3 is not native/);
    expect(problems.join('\n')).toMatch(/imports from (msvcrt|KERNEL32|api-ms)/i);
  }, 120_000);

  it("passes the addon's Windows sources through mingw-w64's C++ syntax check", () => {
    const r = run('make', ['-C', WIN, 'addon']);
    expect(r.status, r.output).toBe(0);
    expect(r.output).toContain('mingw syntax check ok');
    expect(r.output).not.toMatch(/warning:/);
    // a broken source fails the same command line (the check is not vacuous)
    const bad = path.join(out, 'broken_win.cc');
    fs.writeFileSync(bad, '#include "win_io.h"\nnamespace ferry { int f() { return Ioctl(nullptr, 0, nullptr, 0); } }\n');
    const b = run('make', ['-C', WIN, 'addon', `ADDON_WIN_SRCS=${bad}`]);
    expect(b.status).not.toBe(0);
    expect(b.output).toMatch(/error/);
  }, 300_000);

  it('builds exactly the checked addon sources on Windows (binding.gyp conditions)', () => {
    const dir = fs.mkdtempSync(path.join(out, 'gyp-'));
    fs.copyFileSync(path.join(ROOT, 'binding.gyp'), path.join(dir, 'binding.gyp'));
    fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
    // binding.gyp asks this script whether the eBPF addon can be built
    fs.mkdirSync(path.join(dir, 'native', 'bpf'), { recursive: true });
    fs.copyFileSync(path.join(ROOT, 'native', 'bpf', 'have-toolchain.js'), path.join(dir, 'native', 'bpf', 'have-toolchain.js'));
    fs.writeFileSync(path.join(dir, 'defaults.gypi'), "{'target_defaults': {'type': 'loadable_module'}}\n");
    const gyp = path.join(ROOT, 'node_modules', 'node-gyp', 'gyp', 'gyp_main.py');
    const sourcesFor = (osName: string): string[] => {
      const r = run('python3', [gyp, '--depth=.', '-f', 'gypd', `-DOS=${osName}`, '-I', 'defaults.gypi', 'binding.gyp'], dir);
      expect(r.status, r.output).toBe(0);
      const p = run('python3', ['-c', "import ast,json;print(json.dumps(ast.literal_eval(open('binding.gypd').read())['targets'][0]['sources']))"], dir);
      expect(p.status, p.output).toBe(0);
      return (JSON.parse(p.output) as string[]).sort();
    };
    const win = sourcesFor('win');
    const checked = [
      'native/addon/args.cc',
      'native/addon/ctl_values.cc',
      'native/addon/errors.cc',
      ...fs.readdirSync(path.join(ROOT, 'native', 'addon', 'win')).filter((f) => f.endsWith('.cc')).map((f) => `native/addon/win/${f}`),
    ].sort();
    expect(win).toEqual(checked);
    // the Linux build is untouched by the Windows condition
    const linux = sourcesFor('linux');
    expect(linux).toContain('native/addon/control.cc');
    expect(linux.some((s) => s.includes('/win/'))).toBe(false);
  }, 120_000);

  it('passes the host tests of the control calls and DSM parsing (plain and ASan+UBSan)', () => {
    const r = run('make', ['-C', WIN, `OUT=${out}`, 'test']);
    expect(r.status, r.output).toBe(0);
    expect(r.output.match(/all windows host tests passed/g)?.length).toBe(2);
    expect(r.output).toContain('native/windows: host tests passed');
  }, 300_000);
});

describe('ferryflt.inf, the WDK project and the Windows test procedure', () => {
  const infText = fs.readFileSync(path.join(WIN, 'ferryflt.inf'), 'utf8');

  it('installs ferryflt as an appended upper filter of the Volume class, boot start', () => {
    const inf = parseInf(infText);
    expect(checkFilterInf(inf, SPEC)).toEqual([]);
  });

  it('rejects unsafe or broken variants (the checker can fail)', () => {
    const problems = (text: string): string => checkFilterInf(parseInf(text), SPEC).join('\n');
    const swap = (from: string | RegExp, to: string): string => {
      const t = infText.replace(from, to);
      expect(t, `mutation ${String(from)}`).not.toBe(infText);
      return t;
    };
    // overwriting UpperFilters would drop volsnap
    expect(problems(swap('UpperFilters, 0x00010008', 'UpperFilters, 0x00010000'))).toMatch(/replaced, not appended/);
    expect(problems(swap('UpperFilters, 0x00010008', 'UpperFilters, 0x00000000'))).toMatch(/REG_MULTI_SZ/);
    expect(problems(swap(/(AddReg\]\r?\nHKLM, System\\CurrentControlSet\\Control\\Class\\)\{71A27CDD/, '$1{4D36E967'))).toMatch(/no AddReg line appends/);
    expect(problems(swap('StartType      = 0', 'StartType      = 3'))).toMatch(/StartType must be 0/);
    expect(problems(swap('ServiceName  = "Ferry volume capture filter"\n', ''))).toMatch(/%ServiceName% is not defined/);
    expect(problems(swap('UpperFilters, 0x00018002', 'UpperFilters, 0x00004000'))).toMatch(/does not remove only/);
    expect(problems(swap('ClassGuid   = {71A27CDD', 'ClassGuid   = {4D36E967'))).toMatch(/ClassGuid must be/);
    expect(problems(swap('DriverVer   = 11/01/2026', 'DriverVer   = 2026-11-01'))).toMatch(/DriverVer/);
    expect(problems(swap('ServiceBinary  = %12%', 'ServiceBinary  = %13%'))).toMatch(/ServiceBinary/);
    expect(problems(swap('ferryflt.sys = 1,,', 'ferryflt.sys = 2,,'))).toMatch(/not in \[SourceDisksNames\]/);
    expect(() => parseInf(`${infText}\n[Version]\nSignature = "$WINDOWS NT$"\n`)).toThrow(InfSyntaxError);
    expect(() => parseInf(infText.replace('"$WINDOWS NT$"', '"$WINDOWS NT$'))).toThrow(/unterminated quoted string/);
    expect(() => parseInf(`Signature = x\n${infText}`)).toThrow(/outside any section/);
  });

  it('builds the same sources with the WDK (ferryflt.vcxproj) as the mingw check', () => {
    const xml = run('python3', [
      '-c',
      [
        'import sys, json, xml.etree.ElementTree as E',
        'r = E.parse(sys.argv[1]).getroot()',
        "ns = '{http://schemas.microsoft.com/developer/msbuild/2003}'",
        "print(json.dumps(sorted(c.get('Include').replace('\\\\', '/') for c in r.iter(ns + 'ClCompile') if c.get('Include'))))",
      ].join('\n'),
      path.join(WIN, 'ferryflt.vcxproj'),
    ]);
    expect(xml.status, xml.output).toBe(0);
    const make = run('make', ['-s', '-C', WIN, 'sources']);
    expect(make.status, make.output).toBe(0);
    expect(JSON.parse(xml.output)).toEqual(make.output.trim().split(/\s+/).sort());
  });

  it('has a Windows test script that parses as PowerShell, and a helper that compiles', async () => {
    const script = fs.readFileSync(path.join(ROOT, 'test', 'windows', 'ferry-windows-e2e.ps1'), 'utf8');
    expect(await powershellSyntaxErrors(script)).toEqual([]);
    // the parser does report broken scripts
    expect((await powershellSyntaxErrors(script.replace('function Invoke-Run {', 'function Invoke-Run {{'))).length).toBeGreaterThan(0);
    const helper = run(process.execPath, ['--check', path.join(ROOT, 'test', 'windows', 'ferryctl.js')]);
    expect(helper.status, helper.output).toBe(0);
  });
});
