import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import { T0 } from '../helpers/clock.js';
import { bearer, echo, JWT_SECRET, request, statuses } from '../helpers/http.js';
import { startWithEcho, type TollgateWithEcho } from '../helpers/tollgate.js';

// A user gets 5 per minute; an anonymous client 1 per minute per IP. Which limit a
// request meets tells whether Tollgate believed its token.
const POLICY = `
upstream: http://127.0.0.1:9
identity:
  jwt:
    secret: \${JWT_SECRET}
    algorithms: [HS256]
routes:
  - id: jwt
    match: { path: /jwt }
    limits:
      - { by: user, limit: 5, window: 1m }
      - { by: ip, limit: 1, window: 1m, for: anonymous }
`;

function base64url(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

describe('JWT identity at the proxy', () => {
  let tg: TollgateWithEcho;
  // Every test starts at T0 (the expiry test moves the clock) and uses its own client address.
  const nowSeconds = Math.floor(T0 / 1000);

  before(async () => {
    tg = await startWithEcho(POLICY, { env: { JWT_SECRET } });
  });
  beforeEach(() => tg.clock.set(T0));
  after(() => tg.close());

  /** Two requests with `headers` from a fresh address: a believed user passes both, an anonymous client gets [200, 429]. */
  async function twoRequests(headers: Record<string, string>, from: string): Promise<{ statuses: number[]; policy: string }> {
    const first = await request(tg.url, '/jwt', { from, headers });
    const second = await request(tg.url, '/jwt', { from, headers });
    return { statuses: [first.status, second.status], policy: String(first.headers['ratelimit-policy']) };
  }

  it('a valid token is counted as its user, and forwarded unchanged', async () => {
    const headers = await bearer('alice');
    const result = await twoRequests(headers, '127.0.4.1');
    assert.deepEqual(result, { statuses: [200, 200], policy: '"jwt.user";q=5;w=60' });
    const forwarded = await request(tg.url, '/jwt', { from: '127.0.4.1', headers });
    assert.equal(echo(forwarded).headers.authorization, headers.authorization);
  });

  it('a token signed with another secret is anonymous', async () => {
    const forged = await bearer('alice', {}, { secret: 'not-the-secret-but-just-as-long-as-it' });
    assert.deepEqual(await twoRequests(forged, '127.0.4.2'), { statuses: [200, 429], policy: '"jwt.ip";q=1;w=60' });
  });

  it('an expired token is anonymous (expiry is judged on the injected clock)', async () => {
    const expired = await bearer('alice', {}, { exp: nowSeconds - 1 });
    assert.deepEqual(await twoRequests(expired, '127.0.4.3'), { statuses: [200, 429], policy: '"jwt.ip";q=1;w=60' });

    // A token that expires while in use stops counting as the user from then on.
    const shortLived = await bearer('bob', {}, { exp: nowSeconds + 30 });
    assert.deepEqual(await twoRequests(shortLived, '127.0.4.4'), { statuses: [200, 200], policy: '"jwt.user";q=5;w=60' });
    tg.clock.advance(31_000);
    assert.deepEqual(await statuses(tg.url, '/jwt', 2, { from: '127.0.4.4', headers: shortLived }), [200, 429]);
  });

  it('an `alg: none` token is anonymous', async () => {
    const unsigned = `${base64url({ alg: 'none', typ: 'JWT' })}.${base64url({ sub: 'alice', exp: 4_102_444_800 })}.`;
    assert.deepEqual(await twoRequests({ authorization: `Bearer ${unsigned}` }, '127.0.4.5'), {
      statuses: [200, 429],
      policy: '"jwt.ip";q=1;w=60',
    });
  });

  it('a token in an algorithm the policy does not list is anonymous, even with the right secret', async () => {
    const hs512 = await bearer('alice', {}, { alg: 'HS512' });
    assert.deepEqual(await twoRequests(hs512, '127.0.4.6'), { statuses: [200, 429], policy: '"jwt.ip";q=1;w=60' });
  });

  it('garbage and tampered tokens are anonymous, never an error', async () => {
    const valid = (await bearer('alice')).authorization.slice('Bearer '.length);
    const [header, , signature] = valid.split('.');
    const tampered = `${header}.${base64url({ sub: 'mallory', exp: 4_102_444_800 })}.${signature}`;
    assert.deepEqual(await twoRequests({ authorization: `Bearer ${tampered}` }, '127.0.4.7'), {
      statuses: [200, 429],
      policy: '"jwt.ip";q=1;w=60',
    });
    assert.deepEqual(await twoRequests({ authorization: 'Bearer not.a.jwt' }, '127.0.4.8'), {
      statuses: [200, 429],
      policy: '"jwt.ip";q=1;w=60',
    });
  });
});
