// The pipeline bench's link-limit peer: a wss server (TLS 1.3, permessage-deflate off, like
// the receiver) that only counts bytes and answers "done" when it has `total` of them.
// Usage: node link-server.js CERT KEY TOTAL_BYTES   (prints "port N" when listening)
import * as fs from 'fs';
import * as https from 'https';
import { AddressInfo } from 'net';
import { WebSocketServer } from 'ws';

const [certFile, keyFile, totalText] = process.argv.slice(2);
const total = Number(totalText);
const server = https.createServer({ cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile), minVersion: 'TLSv1.3' });
const wss = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: 128 * 1024 * 1024 });
wss.on('connection', (ws) => {
  let received = 0;
  ws.on('message', (data: Buffer) => {
    received += data.length;
    if (received >= total) ws.send('done');
  });
});
server.listen(0, '127.0.0.1', () => process.stdout.write(`port ${(server.address() as AddressInfo).port}\n`));
