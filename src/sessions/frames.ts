/**
 * RFC 6455 framing from the `ws` package (its own Receiver and Sender.frame, the
 * parser every `ws` server and client runs), typed for the relay. `ws`'s ESM entry
 * exports both by name; @types/ws does not declare them, hence the narrow interfaces
 * below.
 */
import * as wsModule from 'ws';

export const OPCODE_TEXT = 0x1;
export const OPCODE_BINARY = 0x2;
export const OPCODE_CLOSE = 0x8;
export const OPCODE_PING = 0x9;
export const OPCODE_PONG = 0xa;

/** Close code meaning "no status code was present" (never sent on the wire). */
export const NO_STATUS = 1005;

/** The `permessage-deflate` entry of a Receiver's `extensions` map (only `decompress` is called). */
interface DecompressingExtension {
  decompress(data: Buffer, fin: boolean, callback: (error: Error | null, data: Buffer) => void): void;
}

interface ReceiverOptions {
  /** true: frames must be masked (they come from a client). */
  isServer: boolean;
  /** Largest data message in payload bytes summed over its fragments, checked at each frame header; 0 = none. */
  maxPayload: number;
  skipUTF8Validation: boolean;
  extensions: Record<string, DecompressingExtension>;
}

/** ws's Receiver: a Writable that parses frames and emits whole messages and control frames. */
export interface FrameReceiver {
  write(chunk: Buffer): boolean;
  destroy(): void;
  on(event: 'message', listener: (data: Buffer, isBinary: boolean) => void): this;
  on(event: 'ping' | 'pong', listener: (data: Buffer) => void): this;
  /** A close frame: its code (1005 when it had none) and reason bytes. */
  on(event: 'conclude', listener: (code: number, reason: Buffer) => void): this;
  on(event: 'error', listener: (error: Error & { code?: string }) => void): this;
}

interface FrameOptions {
  fin: boolean;
  rsv1: boolean;
  opcode: number;
  mask: boolean;
  /** false: `data` may be masked in place. */
  readOnly: boolean;
}

interface WsInternals {
  Receiver: new (options: ReceiverOptions) => FrameReceiver;
  Sender: { frame(data: Buffer, options: FrameOptions): Buffer[] };
  extension: { parse(header: string): Record<string, unknown[]> };
}

const ws = wsModule as unknown as WsInternals;

/** Receiver error codes that mean "message larger than maxPayload". */
export const TOO_BIG_ERRORS: ReadonlySet<string> = new Set(['WS_ERR_UNSUPPORTED_MESSAGE_LENGTH', 'WS_ERR_UNSUPPORTED_DATA_PAYLOAD_LENGTH']);

/**
 * A Receiver for one direction. With `compressed`, messages that arrived compressed
 * (RSV1, permessage-deflate) are passed through still compressed: `onCompressed` is
 * called just before each such message is emitted, so the relay can set RSV1 when
 * it re-sends it. UTF-8 is not validated (compressed text is not UTF-8; the two ends
 * validate their own messages).
 *
 * The decompress callback is deferred to the next tick: ws's receiver loop expects it
 * to be asynchronous (as zlib is) and calls its write callback twice when it is not
 * (ERR_MULTIPLE_CALLBACK). Later writes wait in the Writable's buffer meanwhile, so
 * frames keep their order.
 */
export function createReceiver(options: { fromClient: boolean; maxPayload: number; compressed: boolean; onCompressed: () => void }): FrameReceiver {
  const extensions: Record<string, DecompressingExtension> = {};
  if (options.compressed) {
    extensions['permessage-deflate'] = {
      decompress(data, fin, callback) {
        process.nextTick(() => {
          if (fin) options.onCompressed();
          callback(null, data);
        });
      },
    };
  }
  return new ws.Receiver({ isServer: options.fromClient, maxPayload: options.maxPayload, skipUTF8Validation: true, extensions });
}

/**
 * Up to this payload size a frame is written as one buffer (header and payload copied
 * together): a copy of a small payload costs less than a second write() call.
 */
const MERGE_BELOW = 2048;

/**
 * One whole frame as buffers to write: header and payload, or one buffer for a small
 * payload. Masked when `mask` (a large payload in place).
 */
export function frame(data: Buffer, opcode: number, mask: boolean, rsv1 = false): Buffer[] {
  const small = data.length < MERGE_BELOW;
  // Sender.frame merges a masked frame itself when it may not mask in place (readOnly).
  const frames = ws.Sender.frame(data, { fin: true, rsv1, opcode, mask, readOnly: small });
  return small && frames.length === 2 ? [Buffer.concat(frames, frames[0].length + frames[1].length)] : frames;
}

/** A close frame's payload: the code and the reason, or nothing for 1005 (no status). */
export function closePayload(code: number, reason: Buffer | string): Buffer {
  if (code === NO_STATUS) return Buffer.alloc(0);
  const text = typeof reason === 'string' ? Buffer.from(reason) : reason;
  const payload = Buffer.allocUnsafe(2 + text.length);
  payload.writeUInt16BE(code, 0);
  text.copy(payload, 2);
  return payload;
}

/** True when the upstream's 101 `Sec-WebSocket-Extensions` accepted permessage-deflate. */
export function negotiatedDeflate(header: string | undefined): boolean {
  if (header === undefined || header === '') return false;
  try {
    return ws.extension.parse(header)['permessage-deflate'] !== undefined;
  } catch {
    // Not a valid header: nothing was negotiated that the relay could follow.
    return false;
  }
}
