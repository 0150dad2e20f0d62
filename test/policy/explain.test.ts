/**
 * explainRequest (src/policy/explain.ts) on a compiled policy: each answer against the
 * code path it reuses (router, path canonicalisation, client IP, identity, guards,
 * limiter checks). The command and its agreement with a running proxy: test/cli/explain.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadAndCompile } from '../../src/app.js';
import { formatIssue } from '../../src/config/load.js';
import { headerKey } from '../../src/limiter/limiter.js';
import { explainRequest, type ExplainRequest } from '../../src/policy/explain.js';
import type { CompiledPolicy } from '../../src/policy/types.js';
import { bearer, JWT_SECRET } from '../helpers/http.js';
import { writePolicy } from '../helpers/tollgate.js';

const POLICY = `
upstream: http://127.0.0.1:3000
clientIp:
  trustedProxies: [10.0.0.0/8]
identity:
  jwt: { secret: "\${JWT_SECRET}", algorithms: [HS256], tierClaim: plan }
  header: x-user-id
allow:
  ips: [192.0.2.200]
routes:
  - id: token
    match: { path: /api/token, methods: [POST] }
    guards: { origins: [https://app.example.com], cors: { methods: [POST] }, securityHeaders: strict }
    limits:
      - { by: user, limit: 10, window: 1m, block: [1m, 10m], tiers: { pro: 30 } }
      - { by: ip, limit: 20, window: 1m }
      - { by: ip, limit: 5, window: 1m, for: anonymous }
      - { by: header:x-api-key, limit: 100, window: 1h, algorithm: fixed-window }
  - id: live
    match: { path: /ws/live, websocket: true }
    mode: shadow
    limits: [{ by: user, concurrent: 2 }]
store:
  type: redis
  redis: { url: redis://127.0.0.1:6379, prefix: "app:" }
`;

function compiled(text = POLICY): CompiledPolicy {
  const result = loadAndCompile(writePolicy(text), { JWT_SECRET });
  assert.ok(result.ok, result.ok ? '' : result.errors.map(formatIssue).join('\n'));
  return result.policy;
}

function request(overrides: Partial<ExplainRequest>): ExplainRequest {
  return { method: 'POST', target: '/api/token', peer: '203.0.113.7', headers: {}, websocket: false, ...overrides };
}

describe('explainRequest', () => {
  it('matches routes on the canonical path and says why each earlier route failed (path, method, websocket)', async () => {
    const policy = compiled();
    const spelled = await explainRequest(policy, request({ target: '/API//x/../token/?q=1' }));
    assert.deepEqual([spelled.canonicalPath, spelled.route, spelled.tried], ['/api/token', 'token', []]);
    const plainToWs = await explainRequest(policy, request({ method: 'GET', target: '/ws/live' }));
    assert.equal(plainToWs.route, null);
    assert.deepEqual(plainToWs.tried, [{ route: 'token', failed: 'path' }, { route: 'live', failed: 'websocket' }]);
    const wrongMethod = await explainRequest(policy, request({ method: 'GET' }));
    assert.deepEqual(wrongMethod.tried, [{ route: 'token', failed: 'method' }, { route: 'live', failed: 'path' }]);
    const upgrade = await explainRequest(policy, request({ method: 'GET', target: '/ws/live', websocket: true }));
    assert.deepEqual([upgrade.route, upgrade.mode, upgrade.tried], ['live', 'shadow', [{ route: 'token', failed: 'path' }]]);
    // The router's own answer, for every one of them.
    for (const [method, target, websocket] of [['POST', '/API//x/../token/?q=1', false], ['GET', '/ws/live', false], ['GET', '/ws/live', true]] as const) {
      assert.equal(policy.router.explain(method, target, websocket).route, policy.router.match(method, target, websocket));
    }
  });

  it('resolves the client as trustedProxies says: X-Forwarded-For only from a trusted peer', async () => {
    const policy = compiled();
    const viaProxy = await explainRequest(policy, request({ peer: '10.0.0.1', headers: { 'x-forwarded-for': '198.51.100.9, 203.0.113.7' } }));
    assert.deepEqual(viaProxy.client, { ip: '203.0.113.7', key: '203.0.113.7', peerTrusted: true });
    const spoofed = await explainRequest(policy, request({ peer: '203.0.113.7', headers: { 'x-forwarded-for': '198.51.100.9' } }));
    assert.deepEqual(spoofed.client, { ip: '203.0.113.7', key: '203.0.113.7', peerTrusted: false });
    const v6 = await explainRequest(policy, request({ peer: '2001:db8:1:2:3:4:5:6' }));
    assert.equal(v6.client.key, '2001:db8:1:2::/64');
  });

  it('verifies the JWT with the file key; an invalid one is anonymous and says why', async () => {
    const policy = compiled();
    const pro = await explainRequest(policy, request({ headers: await bearer('alice', { plan: 'pro' }) }));
    assert.deepEqual(pro.identity, { user: 'alice', tier: 'pro', anonymous: false, tokenError: null, source: 'jwt' });
    const expired = await explainRequest(policy, request({ headers: await bearer('alice', {}, { exp: 1_000_000_000 }) }));
    assert.equal(expired.identity.anonymous, true);
    assert.match(expired.identity.tokenError ?? '', /"exp" claim timestamp check failed/);
    const forged = await explainRequest(policy, request({ headers: await bearer('alice', {}, { secret: 'another-secret-of-at-least-32-bytes!!' }) }));
    assert.match(forged.identity.tokenError ?? '', /signature verification failed/);
    const header = await explainRequest(policy, request({ peer: '10.0.0.1', headers: { 'x-user-id': 'bob' } }));
    assert.deepEqual([header.identity.user, header.identity.source], ['bob', 'header']);
    const untrustedHeader = await explainRequest(policy, request({ headers: { 'x-user-id': 'bob' } }));
    assert.equal(untrustedHeader.identity.anonymous, true);
  });

  it('lists every limit with the limiter key (Redis prefix, digests for header values), the tier in force, window and block', async () => {
    const policy = compiled();
    const e = await explainRequest(policy, request({ headers: { ...(await bearer('alice', { plan: 'pro' })), 'x-api-key': 'sk_live_secret' } }));
    const [user, ip, anonymous, key] = e.limits;
    assert.deepEqual(user, {
      policy: 'token.user', by: 'user', type: 'rate', storeKey: 'app:{token}:user:60000:sw:u:alice', clientKey: 'u:alice', tier: 'pro', limit: 30,
      window: 60, block: [60, 600], algorithm: 'sliding-window', for: 'any', skipped: null,
    });
    assert.deepEqual([ip.storeKey, ip.tier, ip.limit, ip.block], ['app:{token}:ip:60000:sw:203.0.113.7', null, 20, null]);
    assert.deepEqual([anonymous.storeKey, anonymous.skipped], [null, 'for anonymous requests only; this one has a user']);
    assert.equal(key.storeKey, `app:{token}:header:x-api-key:3600000:fw:${headerKey('sk_live_secret')}`);
    assert.ok(!JSON.stringify(e).includes('sk_live_secret'), 'a header value is never shown');
    const nobody = await explainRequest(policy, request({}));
    assert.equal(nobody.limits[0].skipped, 'by user: the request is anonymous');
    assert.equal(nobody.limits[3].storeKey, 'app:{token}:header:x-api-key:3600000:fw:ip:203.0.113.7');
  });

  it('runs the route guards: a foreign origin is refused, a preflight is answered, an allowlisted client still meets the guards', async () => {
    const policy = compiled();
    const foreign = await explainRequest(policy, request({ headers: { origin: 'https://evil.example' } }));
    assert.deepEqual(foreign.guards.map((step) => [step.guard, step.result, step.code]), [
      ['origins', 'refuse', 'ORIGIN_NOT_ALLOWED'],
      ['cors', 'response', undefined],
      ['securityHeaders', 'response', undefined],
    ]);
    const preflight = await explainRequest(policy, request({ method: 'OPTIONS', headers: { origin: 'https://app.example.com', 'access-control-request-method': 'POST' } }));
    assert.equal(preflight.route, 'token');
    assert.deepEqual([preflight.guards[0].guard, preflight.guards[0].result], ['cors', 'pass']);
    const allowed = await explainRequest(policy, request({ peer: '192.0.2.200', headers: { origin: 'https://app.example.com' } }));
    assert.deepEqual([allowed.allowlisted, allowed.guards[0].result], [true, 'pass']);
  });

  it('a path the proxy refuses before routing is INVALID_PATH, with no route', async () => {
    const e = await explainRequest(compiled(), request({ target: '/api/%00token' }));
    assert.deepEqual([e.route, e.tried, e.guards], [null, [], [{ guard: 'path', result: 'refuse', code: 'INVALID_PATH', status: 400 }]]);
  });
});
