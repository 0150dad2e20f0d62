import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createUpstreamHeaders } from '../../src/policy/upstream-headers.js';

describe('upstream header hygiene', () => {
  const hygiene = createUpstreamHeaders({ header: 'x-user-id', forward: { user: 'x-tollgate-user', tier: 'x-tollgate-tier' } });

  it('always drops X-Real-IP and the identity.forward names, whoever sent them, in any case', () => {
    for (const trusted of [true, false]) {
      for (const name of ['X-Real-IP', 'x-real-ip', 'X-Tollgate-User', 'x-tollgate-tier']) assert.equal(hygiene.drops(name, trusted), true, `${name} ${trusted}`);
    }
  });

  it('drops Forwarded and the identity header only from untrusted peers', () => {
    for (const name of ['Forwarded', 'forwarded', 'X-User-Id']) {
      assert.equal(hygiene.drops(name, false), true, name);
      assert.equal(hygiene.drops(name, true), false, name);
    }
  });

  it('keeps everything else', () => {
    for (const name of ['content-type', 'authorization', 'cookie', 'x-forwarded-for', 'x-user-ids', 'x-real-ipv6']) assert.equal(hygiene.drops(name, false), false, name);
  });

  it('sets X-Real-IP always and the identity headers from the believed identity', () => {
    const flat: string[] = [];
    hygiene.append(flat, '203.0.113.7', { userId: 'alice', tier: 'pro' });
    assert.deepEqual(flat, ['x-real-ip', '203.0.113.7', 'x-tollgate-user', 'alice', 'x-tollgate-tier', 'pro']);
    const anonymous: string[] = [];
    hygiene.append(anonymous, '203.0.113.7', {});
    assert.deepEqual(anonymous, ['x-real-ip', '203.0.113.7']);
    const unmatched: Record<string, string | string[]> = {};
    hygiene.assign(unmatched, '203.0.113.7', undefined);
    assert.deepEqual(unmatched, { 'x-real-ip': '203.0.113.7' });
    const record: Record<string, string | string[]> = {};
    hygiene.assign(record, '::1', { userId: 'bob' });
    assert.deepEqual(record, { 'x-real-ip': '::1', 'x-tollgate-user': 'bob' });
  });

  it('without identity settings only X-Real-IP and Forwarded are handled', () => {
    const plain = createUpstreamHeaders(undefined);
    assert.equal(plain.drops('x-real-ip', true), true);
    assert.equal(plain.drops('forwarded', false), true);
    assert.equal(plain.drops('x-user-id', false), false);
  });
});
