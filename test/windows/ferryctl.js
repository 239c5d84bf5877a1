#!/usr/bin/env node
// Windows test helper: drives ferryflt's control device (\\.\FerryCtl) through the addon's
// FerryControl, as the agent does. Used by ferry-windows-e2e.ps1 on a Windows test machine; it
// was not run in CI (there is no Windows there). Needs `npm ci` and `npm run build` on Windows.
//
//   node test\windows\ferryctl.js rescan
//   node test\windows\ferryctl.js list
//   node test\windows\ferryctl.js tag --device 0 [--tag-id 7]
//   node test\windows\ferryctl.js vss-tag --volume T:\ --device 0 [--tag-id 7] [--keep]
//
// Prints one JSON document on stdout; exits 1 with the error's code on failure.
'use strict';

const path = require('path');

const { FerryControl } = require(path.join(__dirname, '..', '..', 'dist', 'native', 'addon'));

function parseArgs(argv) {
  const opts = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    const key = a.slice(2);
    const next = argv[i + 1];
    if (next === undefined || next.startsWith('--')) opts[key] = true;
    else opts[key] = argv[++i];
  }
  return opts;
}

function int(opts, key, fallback) {
  if (opts[key] === undefined) {
    if (fallback === undefined) throw new Error(`--${key} is required`);
    return fallback;
  }
  const n = Number(opts[key]);
  if (!Number.isInteger(n) || n < 0) throw new Error(`--${key} must be an integer >= 0`);
  return n;
}

async function run(ctl, cmd, opts) {
  switch (cmd) {
    case 'rescan':
      return ctl.rescan();
    case 'list':
      return (await ctl.list()).map((d) => ({
        index: d.index,
        name: d.name,
        mode: d.modeName,
        startState: d.startStateName,
        suspended: d.suspended,
        sizeBytes: d.sizeBytes,
        nextSeq: d.nextSeq,
        committedSeq: d.committedSeq,
        dirtyBits: d.dirtyBits,
        counters: d.counters,
      }));
    case 'tag':
      return ctl.tag([int(opts, 'device')], { tagId: int(opts, 'tag-id', 0) });
    case 'vss-tag':
      if (typeof opts.volume !== 'string') throw new Error('--volume is required (for example T:\\)');
      return ctl.vssTag([opts.volume], [int(opts, 'device')], {
        tagId: int(opts, 'tag-id', 0),
        keepSnapshot: opts.keep === true,
        timeoutMs: 120000,
      });
    default:
      throw new Error(`unknown command ${cmd} (rescan, list, tag, vss-tag)`);
  }
}

async function main() {
  const [cmd, ...rest] = process.argv.slice(2);
  const opts = parseArgs(rest);
  const ctl = await FerryControl.open();
  try {
    const result = await run(ctl, cmd, opts);
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  } finally {
    await ctl.close();
  }
}

main().catch((err) => {
  process.stderr.write(`ferryctl: ${err.code ? `${err.code}: ` : ''}${err.message}\n`);
  if (err.result) process.stderr.write(`${JSON.stringify(err.result)}\n`);
  process.exit(1);
});
