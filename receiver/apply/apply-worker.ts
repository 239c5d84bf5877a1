import { MessagePort, workerData } from 'worker_threads';
import { EngineHost, EngineRequest } from './engine-host';

/** An apply thread: answers engine requests in order, and wakes a caller waiting on `signal`. */
const { port, signal } = workerData as { port: MessagePort; signal: Int32Array };
const host = new EngineHost();

port.on('message', (msg: { id: number; req: EngineRequest }) => {
  const reply = host.handle(msg.id, msg.req);
  const value = reply.value;
  // A hash buffer goes back without a copy.
  const transfer = value instanceof Uint8Array && value.byteOffset === 0 && value.byteLength === value.buffer.byteLength && value.buffer instanceof ArrayBuffer ? [value.buffer] : [];
  // A write pass's buffer goes back to be filled again.
  if (msg.req.op === 'writePass' && !reply.error) transfer.push(msg.req.pass.data.buffer as ArrayBuffer);
  port.postMessage(reply, transfer);
  Atomics.add(signal, 0, 1);
  Atomics.notify(signal, 0);
});
