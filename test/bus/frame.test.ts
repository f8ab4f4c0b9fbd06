/**
 * The frame decoder (src/bus/frame.ts) over streams cut at random points: frames parsed in place,
 * incomplete frames kept in pieces and joined once, oversized frames skipped (and reported) without
 * disturbing the frames after them, a bad kind stopping the stream. The checker compares what was
 * decoded with what was encoded; its negative test feeds it a stream with one byte changed.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encodeFrame, FrameDecoder, FrameKind } from '../../src/bus/index.js';

type Event = string;

/** Decodes `stream` cut into pieces at random points; returns what the sink saw, one string each. */
function decode(stream: Buffer, seed: number, limit: number): Event[] {
  const events: Event[] = [];
  const decoder = new FrameDecoder(
    {
      frame: (kind, id, body) => events.push(`frame ${kind} ${id} ${JSON.stringify(body)}`),
      oversized: (kind, id, length) => events.push(`oversized ${kind} ${id} ${length}`),
      garbage: (err) => events.push(`garbage ${err.code}`),
    },
    limit,
  );
  let s = seed;
  const rand = (n: number): number => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return s % n;
  };
  for (let off = 0; off < stream.length;) {
    // Mostly small pieces (splitting headers), sometimes large ones (several frames at once).
    const n = 1 + (rand(4) === 0 ? rand(3000) : rand(12));
    decoder.push(stream.subarray(off, off + n));
    off += n;
  }
  return events;
}

/** A random stream of frames and the events a correct decoder reports for it. */
function stream(seed: number, limit: number): { bytes: Buffer; expected: Event[] } {
  let s = seed;
  const rand = (n: number): number => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return s % n;
  };
  const frames: Buffer[] = [];
  const expected: Event[] = [];
  for (let i = 0; i < 300; i++) {
    const kind = (1 + rand(8)) as 1;
    const id = rand(3) === 0 ? 0xffffffff - rand(10) : rand(1000);
    const r = rand(10);
    const body = r === 0 ? undefined : { i, pad: 'é'.repeat(r === 1 ? limit : rand(200)) };
    const frame = encodeFrame(kind, id, body);
    frames.push(frame);
    const length = frame.length - 9;
    expected.push(
      length > limit ? `oversized ${kind} ${id} ${length}` : `frame ${kind} ${id} ${JSON.stringify(body)}`,
    );
  }
  return { bytes: Buffer.concat(frames), expected };
}

test('frames cut at random points decode as encoded; oversized ones are skipped', { timeout: 20_000 }, () => {
  for (let seed = 1; seed <= 30; seed++) {
    const limit = 300;
    const { bytes, expected } = stream(seed, limit);
    assert.ok(
      expected.some((e) => e.startsWith('oversized')),
      'the stream has oversized frames',
    );
    assert.deepEqual(decode(bytes, seed * 7, limit), expected, `seed ${seed}`);
  }
});

test('an unknown frame kind stops the stream with MUSTER_PROTOCOL', { timeout: 10_000 }, () => {
  const good = encodeFrame(FrameKind.Ping, 0, { r: 1 });
  const bad = Buffer.from(encodeFrame(FrameKind.Ping, 0));
  bad[4] = 99;
  const events = decode(Buffer.concat([good, bad, good]), 3, 1000);
  assert.deepEqual(events, ['frame 8 0 {"r":1}', 'garbage MUSTER_PROTOCOL']);
});

test('the checker catches a stream with one byte changed (negative test)', { timeout: 10_000 }, () => {
  const { bytes, expected } = stream(5, 300);
  const changed = Buffer.from(bytes);
  // A byte inside the first frame's body ('{' of the JSON, or the first pad character).
  const first = expected[0] as string;
  assert.ok(first.startsWith('frame'), first);
  changed[9 + 1] = (changed[9 + 1] as number) ^ 0x01;
  assert.notDeepEqual(decode(changed, 11, 300), expected);
});
