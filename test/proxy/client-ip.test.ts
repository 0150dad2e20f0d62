import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { echo, request, statuses } from '../helpers/http.js';
import { startWithEcho, type TollgateWithEcho } from '../helpers/tollgate.js';

const policy = (trustedProxies: string): string => `
upstream: http://127.0.0.1:9
clientIp:
  trustedProxies: ${trustedProxies}
routes:
  - id: xff
    match: { path: /xff }
    limits:
      - { by: ip, limit: 3, window: 1m }
`;

describe('client IP and X-Forwarded-* from an untrusted peer', () => {
  let tg: TollgateWithEcho;

  before(async () => {
    // 127.0.0.1 (the test client) is not a trusted proxy here.
    tg = await startWithEcho(policy('[10.0.0.0/8]'));
  });
  after(() => tg.close());

  it('counts every spoofed X-Forwarded-For against the socket peer', async () => {
    const spoofs = ['198.51.100.1', '198.51.100.2, 203.0.113.5', '10.0.0.7', 'garbage'];
    const results = [];
    for (const xff of spoofs) results.push(await request(tg.url, '/xff', { from: '127.0.0.1', headers: { 'x-forwarded-for': xff } }));
    assert.deepEqual(results.map((r) => r.status), [200, 200, 200, 429]);
    const violation = tg.logs.events('rate_limit_exceeded').at(-1);
    assert.equal(violation?.clientIp, '127.0.0.1');
  });

  it('replaces X-Forwarded-For/-Proto/-Host instead of appending to them', async () => {
    const reply = await request(tg.url, '/unlimited', {
      from: '127.0.0.1',
      headers: { 'x-forwarded-for': '198.51.100.1', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'evil.example', host: 'tollgate.test' },
    });
    const seen = echo(reply).headers;
    assert.equal(seen['x-forwarded-for'], '127.0.0.1');
    assert.equal(seen['x-forwarded-proto'], 'http');
    assert.equal(seen['x-forwarded-host'], 'tollgate.test');
    assert.equal(seen.host, 'tollgate.test', 'the Host header is forwarded as sent');
  });
});

describe('client IP and X-Forwarded-* from a trusted proxy', () => {
  let tg: TollgateWithEcho;

  before(async () => {
    tg = await startWithEcho(policy('[127.0.0.1/32]'));
  });
  after(() => tg.close());

  it('counts the client named by X-Forwarded-For, each client separately', async () => {
    const client = (xff: string) => ({ from: '127.0.0.1', headers: { 'x-forwarded-for': xff } });
    assert.deepEqual(await statuses(tg.url, '/xff', 4, client('203.0.113.7')), [200, 200, 200, 429]);
    const violation = tg.logs.events('rate_limit_exceeded').at(-1);
    assert.equal(violation?.clientIp, '203.0.113.7');
    assert.deepEqual(await statuses(tg.url, '/xff', 1, client('203.0.113.8')), [200]);
    // The rightmost untrusted hop is the client; whatever it put to its left is ignored.
    assert.deepEqual(await statuses(tg.url, '/xff', 1, client('198.51.100.1, 203.0.113.7')), [429]);
    assert.deepEqual(await statuses(tg.url, '/xff', 1, client('203.0.113.7, 203.0.113.9')), [200]);
  });

  it('ignores X-Forwarded-For from a peer that is not in trustedProxies', async () => {
    const fromOther = { from: '127.0.0.2', headers: { 'x-forwarded-for': '203.0.113.50' } };
    assert.deepEqual(await statuses(tg.url, '/xff', 4, fromOther), [200, 200, 200, 429]);
    assert.equal(tg.logs.events('rate_limit_exceeded').at(-1)?.clientIp, '127.0.0.2');
    // The spoofed address itself still has its whole quota.
    assert.deepEqual(await statuses(tg.url, '/xff', 1, { from: '127.0.0.1', headers: { 'x-forwarded-for': '203.0.113.50' } }), [200]);
  });

  it('appends to X-Forwarded-For/-Proto/-Host', async () => {
    const reply = await request(tg.url, '/unlimited', {
      from: '127.0.0.1',
      headers: { 'x-forwarded-for': '203.0.113.7', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'public.example', host: 'internal:8080' },
    });
    const seen = echo(reply).headers;
    assert.equal(seen['x-forwarded-for'], '203.0.113.7, 127.0.0.1');
    assert.equal(seen['x-forwarded-proto'], 'https, http');
    assert.equal(seen['x-forwarded-host'], 'public.example, internal:8080');
  });
});
