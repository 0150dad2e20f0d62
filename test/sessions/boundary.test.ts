/**
 * FrameBoundaries against frames built by ws's Sender.frame: every boundary found in
 * any chunking of a stream is a real one, and no real one is missed.
 * Deterministic: fixed seed; FC_SEED=<n> reruns another one.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { FrameBoundaries } from '../../src/sessions/boundary.js';
import { OPCODE_BINARY, OPCODE_CLOSE, OPCODE_PING, OPCODE_TEXT, closePayload, frame } from '../../src/sessions/frames.js';

const SEED = Number(process.env.FC_SEED ?? 1_764_000_000);

/** A stream of frames and the offsets where each one ends. */
function stream(frames: Buffer[][]): { bytes: Buffer; ends: number[] } {
  const parts = frames.map((f) => Buffer.concat(f));
  const ends: number[] = [];
  let at = 0;
  for (const part of parts) ends.push((at += part.length));
  return { bytes: Buffer.concat(parts), ends };
}

/** Every boundary the scanner reports, feeding `bytes` in chunks cut at `cuts`, asking at each offset. */
function boundariesFound(bytes: Buffer, cuts: number[]): number[] {
  const scanner = new FrameBoundaries();
  const found: number[] = [];
  const points = [...new Set([0, ...cuts.filter((c) => c > 0 && c < bytes.length), bytes.length])].sort((a, b) => a - b);
  for (let i = 0; i + 1 < points.length; i++) {
    const chunk = bytes.subarray(points[i], points[i + 1]);
    let pos = 0;
    while (pos < chunk.length) {
      const next = scanner.scan(chunk, pos, true);
      if (next === chunk.length) break;
      // At a boundary: record it (once) and step over one byte of the next header.
      if (found.at(-1) !== points[i] + next) found.push(points[i] + next);
      pos = scanner.scan(chunk.subarray(0, next + 1), next, false);
    }
    if (scanner.atBoundary && found.at(-1) !== points[i + 1]) found.push(points[i + 1]);
  }
  return found.filter((offset) => offset > 0);
}

describe('FrameBoundaries', () => {
  it('finds the end of every frame: 7-bit, 16-bit and 64-bit lengths, masked or not, empty payloads', () => {
    const { bytes, ends } = stream([
      frame(Buffer.from('hi'), OPCODE_TEXT, false),
      frame(Buffer.alloc(0), OPCODE_PING, true),
      frame(Buffer.alloc(300, 1), OPCODE_BINARY, true),
      frame(Buffer.alloc(70_000, 2), OPCODE_BINARY, false),
      frame(Buffer.alloc(125, 3), OPCODE_TEXT, true),
    ]);
    assert.deepEqual(boundariesFound(bytes, []), ends);
    // One byte at a time: every header straddles chunks.
    assert.deepEqual(boundariesFound(bytes, Array.from({ length: 400 }, (_, i) => i)), ends);
  });

  it('scan() stops at the boundary inside a chunk and reports a frame that goes on', () => {
    const first = Buffer.concat(frame(Buffer.alloc(1000, 7), OPCODE_BINARY, false));
    const second = Buffer.concat(frame(Buffer.from('next'), OPCODE_TEXT, false));
    const scanner = new FrameBoundaries();
    assert.equal(scanner.scan(first.subarray(0, 500), 0, true), 0, 'at a boundary before the first header');
    assert.equal(scanner.scan(first.subarray(0, 500)), 500);
    assert.equal(scanner.atBoundary, false);
    assert.equal(scanner.scan(first.subarray(500, 600), 0, true), 100, 'still inside the frame: whole chunk');
    assert.equal(scanner.atBoundary, false);
    const rest = Buffer.concat([first.subarray(600), second]);
    assert.equal(scanner.scan(rest, 0, true), first.length - 600);
    assert.equal(scanner.atBoundary, true);
  });

  it('notes a close frame going by', () => {
    const scanner = new FrameBoundaries();
    scanner.scan(Buffer.concat(frame(Buffer.from('x'), OPCODE_TEXT, true)));
    assert.equal(scanner.closeSeen, false);
    scanner.scan(Buffer.concat(frame(closePayload(1000, 'bye'), OPCODE_CLOSE, true)));
    assert.equal(scanner.closeSeen, true);
  });

  it('any chunking of any frame sequence gives exactly the frame ends', () => {
    const frameArb = fc.record({
      length: fc.oneof(fc.integer({ min: 0, max: 130 }), fc.integer({ min: 65_530, max: 65_540 })),
      masked: fc.boolean(),
      opcode: fc.constantFrom(OPCODE_TEXT, OPCODE_BINARY, OPCODE_PING),
    });
    fc.assert(
      fc.property(fc.array(frameArb, { minLength: 1, maxLength: 6 }), fc.array(fc.nat(), { maxLength: 12 }), (frames, cuts) => {
        const { bytes, ends } = stream(frames.map((f) => frame(Buffer.alloc(f.opcode === OPCODE_PING ? Math.min(f.length, 125) : f.length, 0x41), f.opcode, f.masked)));
        assert.deepEqual(boundariesFound(bytes, cuts.map((c) => c % (bytes.length + 1))), ends);
      }),
      { seed: SEED, numRuns: 200 },
    );
  });
});
