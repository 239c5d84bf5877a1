// Run by the server's bundled Node (/opt/ferry/runtime/node) from lib.sh. Plain CommonJS.
//   status.js wait-protected SECONDS   until every volume is protected with no resync running
//   status.js tag                      a crash-consistent point now
// Both talk to the agent's control socket (one JSON line in, one JSON answer), what
// `ferry agent status --json` and `ferry agent tag` read: starting the CLI costs ~30 s of CPU
// under TCG, too much for a poll.
'use strict';
const net = require('net');

const SOCKET = '/var/lib/ferry/agent.sock';
const [cmd, arg] = process.argv.slice(2);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function request(req, timeoutMs) {
  return new Promise((resolve) => {
    const sock = net.createConnection(SOCKET);
    let buf = '';
    const done = (v) => {
      sock.destroy();
      resolve(v);
    };
    sock.setTimeout(timeoutMs, () => done({ ok: false, error: 'timeout' }));
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(`${JSON.stringify(req)}\n`));
    sock.on('data', (c) => (buf += c));
    sock.on('end', () => {
      try {
        done(JSON.parse(buf));
      } catch {
        done({ ok: false, error: `unreadable answer: ${buf}` });
      }
    });
    sock.on('error', (err) => done({ ok: false, error: err.message }));
  });
}

function summary(st) {
  const vols = (st.volumes || []).map((v) => {
    const r = v.resync ? ` resync ${v.resync.kind} ${Math.floor(v.resync.percent / 10) * 10}%${v.resync.finished ? ' finished' : ''}` : '';
    return `${v.volumeId} ${v.state} ${v.mode}${r}`;
  });
  return `capture ${st.capture} connected ${st.connected} ${vols.join('; ')}${st.lastError ? ` lastError ${st.lastError}` : ''}`;
}

async function waitProtected(seconds) {
  const end = Date.now() + seconds * 1000;
  let last = '';
  for (;;) {
    const reply = await request({ cmd: 'status' }, 20000);
    const st = reply.ok ? reply.status : undefined;
    const line = st ? summary(st) : `agent not answering: ${reply.error}`;
    if (line !== last) {
      console.log(`status +${Math.round(process.uptime())}s: ${line}`);
      last = line;
    }
    const vols = (st && st.volumes) || [];
    if (vols.length > 0 && vols.every((v) => v.state === 'protected' && (!v.resync || v.resync.finished))) {
      console.log(`FERRY-FACT status=${JSON.stringify({ running: true, ...st })}`);
      return 0;
    }
    if (Date.now() > end) {
      console.log(`timeout: not protected after ${seconds} s; last: ${line}`);
      if (st) console.log(`FERRY-FACT status=${JSON.stringify({ running: true, ...st })}`);
      return 1;
    }
    await sleep(1000);
  }
}

async function tag() {
  const reply = await request({ cmd: 'tag', app: false, name: '' }, 120000);
  if (!reply.ok || !reply.tag) {
    console.log(`tag failed: ${reply.error}`);
    return 1;
  }
  console.log(`FERRY-FACT points=${reply.tag.pointIds.join(',')}`);
  console.log(`FERRY-FACT point-accuracy=${reply.tag.accuracy}`);
  return 0;
}

async function main() {
  if (cmd === 'wait-protected') return waitProtected(Number(arg));
  if (cmd === 'tag') return tag();
  console.error(`status.js: unknown command ${cmd}`);
  return 2;
}

main().then((code) => process.exit(code));
