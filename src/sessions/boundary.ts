import { OPCODE_CLOSE } from './frames.js';

/** Header length (2-14 bytes) from a frame's second byte: the length form and the mask bit. */
function headerLength(second: number): number {
  const len7 = second & 0x7f;
  return 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + (second & 0x80 ? 4 : 0);
}

/**
 * Where frames end in one direction of a raw tunnel, read from the frame headers
 * alone: each header says how many payload bytes follow, which are skipped unread
 * (no unmasking, no buffering; a header split across chunks is the only thing kept).
 * It is not a parser: it trusts the two ends to speak RFC 6455 and only needs to know
 * where Tollgate may put a frame of its own (a close frame) without landing inside
 * another one. Cost: a few operations per frame header, nothing per payload byte.
 */
export class FrameBoundaries {
  /** Payload bytes of the current frame not yet seen. */
  #remaining = 0;
  /** A header that straddles chunks, collected byte by byte. */
  readonly #header = Buffer.alloc(14);
  #headerHave = 0;
  /** A close frame's header has gone by. */
  closeSeen = false;

  /** Between two frames (or before the first). */
  get atBoundary(): boolean {
    return this.#remaining === 0 && this.#headerHave === 0;
  }

  /**
   * Reads `chunk` from `from` on. Returns `chunk.length`; with `stopAtBoundary`, the
   * offset of the first frame boundary at or after `from` instead (`chunk.length`
   * when the current frame goes on past this chunk; check `atBoundary`).
   */
  scan(chunk: Buffer, from = 0, stopAtBoundary = false): number {
    let pos = from;
    const end = chunk.length;
    while (pos < end) {
      if (this.#remaining > 0) {
        const left = end - pos;
        if (this.#remaining >= left) {
          this.#remaining -= left;
          return end;
        }
        pos += this.#remaining;
        this.#remaining = 0;
        continue;
      }
      if (this.#headerHave === 0) {
        if (stopAtBoundary) return pos;
        // The usual case: the whole header is in this chunk.
        if (end - pos >= 2) {
          const length = headerLength(chunk[pos + 1]);
          if (end - pos >= length) {
            this.#frame(chunk, pos);
            pos += length;
            continue;
          }
        }
      }
      this.#header[this.#headerHave++] = chunk[pos++];
      if (this.#headerHave >= 2 && this.#headerHave === headerLength(this.#header[1])) {
        this.#frame(this.#header, 0);
        this.#headerHave = 0;
      }
    }
    return pos;
  }

  /** A complete header at `buf[at]`: note a close frame and how much payload follows. */
  #frame(buf: Buffer, at: number): void {
    if ((buf[at] & 0x0f) === OPCODE_CLOSE) this.closeSeen = true;
    const len7 = buf[at + 1] & 0x7f;
    this.#remaining = len7 < 126 ? len7 : len7 === 126 ? buf.readUInt16BE(at + 2) : buf.readUInt32BE(at + 2) * 2 ** 32 + buf.readUInt32BE(at + 6);
  }
}
