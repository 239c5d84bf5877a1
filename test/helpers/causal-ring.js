'use strict';
// One member of a causal ring of writers (plain JS: it runs on the host and in the VM guest).
// Usage: node causal-ring.js <role> <volume> <maxK> [host:port]
// Tokens travel on stdin/stdout, or with host:port over a TCP relay (first line: the role) that
// passes each role's tokens to the next role: machines that talk over the network.
// Role 0 writes its record 1 at once; every role, when a token k arrives on stdin, writes its
// record k and makes it durable (fsync), then passes k on stdout. The next role's record k is
// therefore written only after this one's record k is on disk: a causal chain across machines.
// Record k of a role sits at byte k * 512 of its volume: magic, role, k, a checksum, and the
// ring's id (environment FERRY_RING, default 0), so that two rings on one volume stay apart.
const fs = require('fs');

const RECORD = 512;
const MAGIC = 0x55414346; // "FCAU"
const [role, volume, maxK] = [Number(process.argv[2]), process.argv[3], Number(process.argv[4])];
const fd = fs.openSync(volume, 'r+');
const record = Buffer.alloc(RECORD);
const ringId = Number(process.env.FERRY_RING ?? 0);

function write(k) {
  record.fill(0);
  record.writeUInt32LE(MAGIC, 0);
  record.writeUInt32LE(role, 4);
  record.writeUInt32LE(k, 8);
  record.writeUInt32LE((MAGIC ^ (role * 0x9e3779b1) ^ (k * 0x85ebca6b) ^ (ringId * 0xc2b2ae35)) >>> 0, 12);
  record.writeUInt32LE(ringId, 16);
  fs.writeSync(fd, record, 0, RECORD, k * RECORD);
  fs.fdatasyncSync(fd);
}

const relay = process.argv[5];
let output = process.stdout;
let input = process.stdin;
if (relay) {
  const [host, port] = relay.split(':');
  const socket = require('net').connect(Number(port), host);
  socket.setNoDelay(true);
  socket.write(`${role}\n`);
  socket.on('error', (err) => {
    console.error(`relay ${relay}: ${err.message}`);
    process.exit(2);
  });
  output = socket;
  input = socket;
}

function pass(k) {
  if (k >= maxK) return;
  output.write(`${k}\n`);
}

if (role === 0) {
  write(1);
  pass(1);
}
let pending = '';
input.on('data', (chunk) => {
  pending += chunk.toString();
  const lines = pending.split('\n');
  pending = lines.pop();
  for (const line of lines) {
    const k = Number(line) + (role === 0 ? 1 : 0);
    write(k);
    pass(k);
  }
});
input.on('end', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
