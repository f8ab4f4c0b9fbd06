/**
 * Accepting client connections in `net.Socket`'s `onread` mode: each read lands in one buffer the
 * process shares and is handed to the connection's reader at once, without the stream machinery
 * (a new 64 KiB backing store per read, `push`, the `'data'` event and a `read(0)` on the next tick).
 * The proxy's upstream sockets read this way since session 6; this does the same for the client side,
 * whose sockets `net.Server` creates itself (it has no `onread` option).
 *
 * How: once the server listens, its listening handle's connection callback — the function Node's
 * `net.Server` installs on the handle to wrap each accepted handle in a `net.Socket` and emit
 * `'connection'` — is replaced by one that wraps it the same way, with `onread` (a documented
 * `net.Socket` option) and `noDelay`. The socket is an ordinary `net.Socket` on an ordinary TCP
 * handle: writes, back-pressure (`write()` → false, `'drain'`), errors (`EPIPE`, `ECONNRESET` →
 * `'error'`, `'close'`), `end()`, `pause()`/`resume()` and the peer's FIN (`'end'`) behave as for a
 * socket Node accepted itself (the `onread` documentation: "the socket will emit events like 'error',
 * 'end', and 'close' as usual; pause() and resume() behave as expected"); only the bytes go to the
 * reader instead of `'data'`. What the server no longer does for these sockets: count them
 * (`server.getConnections()`, `maxConnections`, `close()`'s wait for them — the proxy tracks its own
 * connections and never uses these) and emit `'connection'`.
 *
 * The handle's callback is Node's internal (as `net._createServerHandle` is, which the master uses):
 * when a Node version does not have it where expected, or wrapping a handle throws, the server keeps
 * (or goes back to) Node's own callback and its `'connection'` event with stream-mode sockets, which
 * the connection loop also reads (`ClientConnection` takes either).
 */
import { Socket, type Server, type SocketConstructorOpts } from 'node:net';

/**
 * The client sockets' read buffer, one per process: a read is handled whole before the next one
 * (the request parser copies what it keeps — llhttp's binding copies body pieces and saves partial
 * header strings —, the connection copies the bytes it holds for an upgrade).
 */
const READ_BUFFER = Buffer.allocUnsafe(64 * 1024);

/** Where an accepted socket's bytes go: `chunk` is valid during the call only. */
export interface SocketReader {
  read(chunk: Buffer): void;
}

/** A listening handle's connection callback (`this` is the listening handle). */
type OnConnection = (this: object, err: number, clientHandle: object | undefined) => void;

/**
 * Makes the listening `server` hand each accepted connection to `accept` as a socket in `onread`
 * mode; `accept` returns the socket's reader (or `undefined` after destroying it). Returns false when
 * the server keeps emitting `'connection'` with stream-mode sockets (see the file's comment).
 */
export function acceptWithSharedBuffer(
  server: Server,
  accept: (socket: Socket) => SocketReader | undefined,
): boolean {
  const handle = (server as unknown as { _handle?: { onconnection?: unknown } | null })._handle;
  if (handle === null || handle === undefined || typeof handle.onconnection !== 'function') return false;
  const nodes = handle.onconnection as OnConnection;
  const ours: OnConnection = function (this: object, err, clientHandle) {
    if (err !== 0 || clientHandle === undefined) {
      nodes.call(this, err, clientHandle); // the server's own error handling
      return;
    }
    let reader: SocketReader | undefined = undefined; // (set once the socket exists)
    let socket: Socket;
    try {
      socket = new Socket({
        handle: clientHandle,
        readable: true,
        writable: true,
        onread: {
          buffer: READ_BUFFER,
          callback: (n: number): boolean => {
            reader?.read(READ_BUFFER.subarray(0, n));
            return true; // a pause is the reader's `socket.pause()`
          },
        },
      } as SocketConstructorOpts);
    } catch {
      handle.onconnection = nodes; // this Node wraps handles differently: back to its own way
      nodes.call(this, err, clientHandle);
      return;
    }
    socket.setNoDelay(true);
    reader = accept(socket);
  };
  handle.onconnection = ours;
  return true;
}
