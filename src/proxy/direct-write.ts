/**
 * Socket writes without the stream machinery: a latin1 string written straight to the socket's TCP
 * handle, as `net.Socket` itself does at the bottom of `socket.write()`, when the socket's writable
 * stream holds nothing (no queued or in-flight stream write, not corked, connected, not ended).
 *
 * Why: a `socket.write()` of one small string goes `Writable.write` → `writeOrBuffer` → `_write` →
 * `Socket._writeGeneric` → `writeGeneric`, allocates a `WriteWrap` (a native object) per write, and
 * queues an after-write tick; the data path writes twice per request (the upstream request, the
 * client's response), and libuv writes such a string at once in nearly every case. Here the string
 * goes to `handle.writeLatin1String` with one request object the process reuses while writes complete
 * at once (Node's native side only takes over the request object when a write must wait).
 *
 * What stays as with `socket.write()`:
 * - order: libuv keeps one write queue per handle; a write that cannot go at once waits in it, and
 *   every later write (direct or through the stream) goes after it; `end()`'s shutdown waits for it;
 * - back-pressure: a write that had to wait returns false, and `'drain'` is emitted on the socket once
 *   every such write is done (the stream's own writes keep their own `'drain'`);
 * - errors: a failed write destroys the socket with the errno error (`EPIPE`, `ECONNRESET`…), whose
 *   `'error'` and `'close'` follow as for a stream write.
 *
 * The handle's write methods and the `WriteWrap` constructor are Node's internals (`stream_wrap`,
 * reached through `process.binding`, on its allow-list): where they are missing, every write goes
 * through `socket.write()`.
 */
import type { Socket } from 'node:net';
import { getSystemErrorName } from 'node:util';

interface WriteReq {
  handle?: unknown;
  oncomplete?: (this: WriteReq, status: number) => void;
  socket?: Socket;
  error?: string;
}

interface StreamWrapBinding {
  WriteWrap: new () => WriteReq;
  streamBaseState: Int32Array;
  kLastWriteWasAsync: number;
}

interface StreamHandle {
  writeLatin1String(req: WriteReq, data: string): number;
}

function loadBinding(): StreamWrapBinding | undefined {
  try {
    const b = (process as unknown as { binding(name: string): unknown }).binding('stream_wrap') as
      Partial<StreamWrapBinding> | undefined;
    if (
      typeof b?.WriteWrap === 'function' &&
      b.streamBaseState !== undefined &&
      typeof b.kLastWriteWasAsync === 'number'
    )
      return b as StreamWrapBinding;
  } catch {
    // no process.binding (or no stream_wrap on its allow-list): stream writes only
  }
  return undefined;
}

const binding = loadBinding();
const state = binding?.streamBaseState;
const ASYNC = binding?.kLastWriteWasAsync ?? 0;

/** The request object of writes that complete at once (replaced when a write keeps it). */
let spare: WriteReq | undefined = binding === undefined ? undefined : new binding.WriteWrap();

/** Direct writes waiting in a socket's libuv queue. */
const waiting = new WeakMap<Socket, number>();

/**
 * Writes `data` (latin1) to `socket`: straight to its handle when its stream holds nothing, else
 * through `socket.write()`. Returns false when the caller should wait for `'drain'`.
 */
export function writeLatin1(socket: Socket, data: string): boolean {
  const handle = (socket as unknown as { _handle?: StreamHandle | null })._handle;
  const req = spare;
  if (
    req === undefined ||
    typeof handle?.writeLatin1String !== 'function' ||
    socket.writableLength !== 0 ||
    socket.writableCorked !== 0 ||
    socket.connecting ||
    !socket.writable
  )
    return socket.write(data, 'latin1');
  const err = handle.writeLatin1String(req, data);
  if (err !== 0) {
    // (a request object that saw an error is not reused: its `error` would describe the next one)
    spare = new (binding as StreamWrapBinding).WriteWrap();
    socket.destroy(errnoError(err, req.error));
    return true; // nothing to wait for: 'close' follows
  }
  // written whole (libuv writes at once only when nothing waits in the handle's queue)
  if ((state as Int32Array)[ASYNC] === 0) return true;
  // the write waits in libuv's queue and keeps this request object: the next write takes a new one
  spare = new (binding as StreamWrapBinding).WriteWrap();
  req.handle = handle;
  req.socket = socket;
  req.oncomplete = afterWrite;
  waiting.set(socket, (waiting.get(socket) ?? 0) + 1);
  return false;
}

/** A write that waited is done (`this` is its request object). */
function afterWrite(this: WriteReq, status: number): void {
  const socket = this.socket as Socket;
  this.socket = undefined;
  const left = (waiting.get(socket) ?? 1) - 1;
  if (left > 0) waiting.set(socket, left);
  else waiting.delete(socket);
  if (socket.destroyed) return;
  if (status < 0) {
    socket.destroy(errnoError(status, this.error));
    return;
  }
  if (left === 0) socket.emit('drain');
}

/** An error like Node's for a failed write (`code`: the errno's name). */
function errnoError(err: number, detail: string | undefined): Error {
  const code = getSystemErrorName(err);
  const e = new Error(`write ${code}${detail === undefined ? '' : ` ${detail}`}`) as Error & {
    code: string;
    errno: number;
    syscall: string;
  };
  e.code = code;
  e.errno = err;
  e.syscall = 'write';
  return e;
}
