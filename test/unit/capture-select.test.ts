import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { planCapture, type CaptureFacts, type CaptureStep } from '../../agent/capture/capture-plan';
import { probeEbpfCapture } from '../../agent/capture/ebpf/probe';
import { ferryDeviceFor } from '../../agent/capture/kernel/devices';
import { degradedBootVolumes } from '../../agent/capture/select';
import { parseAgentConfig } from '../../agent/config';
import type { DeviceInfo } from '../../native/addon';
import { FakeTracker } from '../helpers/fake-tracker';
import { tempDirs } from '../helpers/temp-dirs';

const tmp = tempDirs();
const FP = 'ab'.repeat(32);
const base = `receiver: { url: "wss://127.0.0.1:7443", fingerprint: "${FP}" }\n`;

/** Runs the plan the way createCaptureSource does, with the probes' answers given. */
function decide(requested: CaptureFacts['requested'], kernel: CaptureFacts['kernel'], ebpf: CaptureFacts['ebpf']): { step: CaptureStep; probed: string[] } {
  const facts: CaptureFacts = { requested };
  const probed: string[] = [];
  for (;;) {
    const step = planCapture(facts);
    if (step.step === 'probe-kernel') {
      probed.push('kernel');
      facts.kernel = kernel;
    } else if (step.step === 'probe-ebpf') {
      probed.push('ebpf');
      facts.ebpf = ebpf;
    } else return { step, probed };
  }
}

const yes = { ok: true as const };
const no = (reason: string): { ok: false; reason: string } => ({ ok: false, reason });

describe('choosing the capture source', () => {
  it('auto: dm-ferry where it wraps every volume, else ebpf where the tracker loads, else scan, each with its reason', () => {
    expect(decide('auto', yes, yes)).toEqual({ step: { step: 'use', kind: 'kernel', reason: 'dm-ferry wraps every volume (exact points)' }, probed: ['kernel'] });
    const ebpf = decide('auto', no('/dev/ferry-ctl is missing: the dm-ferry module is not loaded'), yes);
    expect(ebpf.probed).toEqual(['kernel', 'ebpf']);
    expect(ebpf.step).toEqual({ step: 'use', kind: 'ebpf', reason: expect.stringMatching(/^dm-ferry does not protect the volumes \(\/dev\/ferry-ctl is missing.*\); the eBPF write tracker loaded/) });
    const scan = decide('auto', no('no module'), no('the kernel has no BTF'));
    expect(scan.step).toEqual({ step: 'use', kind: 'scan', reason: expect.stringMatching(/\(no module\), and the eBPF write tracker cannot run \(the kernel has no BTF\): scan capture/) });
  });

  it('an explicit choice probes only its source and refuses to start when it cannot run', () => {
    expect(decide('scan', yes, yes)).toEqual({ step: { step: 'use', kind: 'scan', reason: 'capture: scan is configured' }, probed: [] });
    expect(decide('ebpf', yes, yes)).toEqual({ step: { step: 'use', kind: 'ebpf', reason: expect.stringMatching(/ebpf is configured/) }, probed: ['ebpf'] });
    expect(decide('ebpf', yes, no('the agent is not root')).step).toEqual({ step: 'refuse', reason: 'capture: ebpf was requested, but the agent is not root' });
    expect(decide('kernel', no('no module'), yes)).toEqual({ step: { step: 'refuse', reason: 'capture: kernel was requested, but no module' }, probed: ['kernel'] });
  });

  it('probes the tracker only where it can run, with reasons an operator can act on', async () => {
    const sys = tmp('btf');
    const btfPath = path.join(sys, 'vmlinux');
    const geometryOf = (): never => {
      throw new Error('/tmp/x.img is not a block device: the ebpf source tracks disks and partitions only');
    };
    const ok = () => ({ disk: { major: 8, minor: 0, sizeBytes: 1 << 30 }, startBytes: 0, sizeBytes: 1 << 30, partition: false });
    const vols = [{ id: 'v', path: '/dev/sda' }];
    const tracker = new FakeTracker();
    expect(await probeEbpfCapture(vols, { openTracker: async () => tracker, geometryOf })).toEqual({ ok: false, reason: expect.stringMatching(/^volume v: .*not a block device/) });
    expect(await probeEbpfCapture(vols, { openTracker: async () => tracker, geometryOf: ok, isRoot: () => false })).toEqual({ ok: false, reason: expect.stringMatching(/not root/) });
    expect(await probeEbpfCapture(vols, { openTracker: async () => tracker, geometryOf: ok, isRoot: () => true, btfPath })).toEqual({ ok: false, reason: expect.stringMatching(/no BTF .*Debian 11\+/) });
    fs.writeFileSync(btfPath, '');
    const refused = await probeEbpfCapture(vols, { openTracker: () => Promise.reject(new Error('bpf(): Operation not permitted (lockdown)')), geometryOf: ok, isRoot: () => true, btfPath });
    expect(refused).toEqual({ ok: false, reason: 'the eBPF write tracker did not load: bpf(): Operation not permitted (lockdown)' });
    expect(await probeEbpfCapture(vols, { openTracker: async () => tracker, geometryOf: ok, isRoot: () => true, btfPath })).toEqual({ ok: true, tracker });
  });

  it('captures a plain partition through the ferry-* device the initramfs put over it', () => {
    const dev = (name: string, major: number, minor: number, dataMajor: number, dataMinor: number): DeviceInfo => ({ name, devMajor: major, devMinor: minor, dataMajor, dataMinor }) as DeviceInfo;
    const devices = [dev('data', 253, 0, 8, 17), dev('ferry-root', 253, 1, 254, 1)];
    expect(ferryDeviceFor(devices, { major: 253, minor: 1 })?.name).toBe('ferry-root');
    expect(ferryDeviceFor(devices, { major: 254, minor: 1 })?.name).toBe('ferry-root');
    // Only devices named ferry-* stand for the partition under them.
    expect(ferryDeviceFor(devices, { major: 8, minor: 17 })).toBeUndefined();
  });
});

describe('boot-protected volumes', () => {
  it('are configured with bootProtected: true and reported once the machine runs without dm-ferry', () => {
    const cfg = parseAgentConfig(`${base}capture: ebpf\nvolumes:\n  - { id: root, path: /dev/vda1, mount: /, bootProtected: true }\n  - { id: data, path: /dev/vdb }\n`, '/etc/ferry/agent.yaml');
    expect(cfg.capture).toBe('ebpf');
    expect(cfg.volumes.map((v) => v.bootProtected)).toEqual([true, undefined]);
    expect(() => parseAgentConfig(`${base}volumes:\n  - { id: root, path: /dev/vda1, bootProtected: yes please }\n`, '/x.yaml')).toThrow(/volumes\[0\]\.bootProtected must be true or false/);
    expect(degradedBootVolumes(cfg, { kind: 'kernel', reason: 'dm-ferry wraps every volume' })).toEqual([]);
    const events = degradedBootVolumes(cfg, { kind: 'ebpf', reason: 'x', kernelUnavailable: '/dev/ferry-ctl is missing: the dm-ferry module is not loaded (modprobe dm-ferry)' });
    expect(events).toEqual([
      {
        volumeId: 'root',
        text: expect.stringMatching(/^volume root \(\/dev\/vda1\) is set up to boot under dm-ferry, but dm-ferry does not capture it \(\/dev\/ferry-ctl is missing.*\): the machine booted without it; using ebpf capture/),
      },
    ]);
  });
});
