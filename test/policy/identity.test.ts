import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { after, before, beforeEach, describe, it } from 'node:test';
import { exportJWK, exportSPKI, generateKeyPair, SignJWT, UnsecuredJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose';
import type { IdentityConfig, JwtConfig } from '../../src/config/types.js';
import { createIdentityResolver, type IdentityErrorKind } from '../../src/policy/identity.js';
import { ANONYMOUS, type Identity, type IdentityResolver, type IncomingHeaders } from '../../src/policy/types.js';
import { freePort } from '../helpers/ports.js';
import { startUpstream, type Upstream } from '../helpers/upstream.js';

const SECRET = 'test-secret-that-is-long-enough-for-hs256';
const T0 = Date.UTC(2030, 0, 1); // pinned clock, unix ms
const T0_SECONDS = T0 / 1000;

function jwtConfig(overrides: Partial<JwtConfig> = {}): JwtConfig {
  return { secret: SECRET, algorithms: ['HS256'], userClaim: 'sub', ...overrides };
}

async function hsToken(claims: JWTPayload, options: { alg?: string; secret?: string; exp?: number } = {}): Promise<string> {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: options.alg ?? 'HS256' })
    .setExpirationTime(options.exp ?? T0_SECONDS + 3600)
    .sign(new TextEncoder().encode(options.secret ?? SECRET));
}

function bearer(token: string): IncomingHeaders {
  return { authorization: `Bearer ${token}` };
}

/** A resolver on a clock the test moves, recording error events. */
function resolverFor(config: IdentityConfig) {
  const clock = { now: T0 };
  const events: IdentityErrorKind[] = [];
  const resolver = createIdentityResolver(config, { onError: (kind) => events.push(kind) }, { now: () => clock.now });
  return { resolver, clock, events };
}

/** Who the request is (user and tier; ANONYMOUS for nobody), without what happened to its token. */
function who(identity: Identity): Identity {
  if (identity.userId === undefined) return ANONYMOUS;
  return identity.tier === undefined ? { userId: identity.userId } : { userId: identity.userId, tier: identity.tier };
}

async function identityOf(resolver: IdentityResolver, headers: IncomingHeaders, peerTrusted = false): Promise<Identity> {
  return who(await resolver.resolve(headers, peerTrusted));
}

describe('identity from an HS256 JWT', () => {
  it('a valid token gives its user and tier', async () => {
    const { resolver } = resolverFor({ jwt: jwtConfig({ tierClaim: 'plan' }) });
    assert.deepEqual(await identityOf(resolver, bearer(await hsToken({ sub: 'alice', plan: 'pro' }))), { userId: 'alice', tier: 'pro' });
    assert.deepEqual(await identityOf(resolver, bearer(await hsToken({ sub: 'bob' }))), { userId: 'bob' });
  });

  it('the bearer scheme is case-insensitive; other schemes carry no token', async () => {
    const { resolver } = resolverFor({ jwt: jwtConfig() });
    const token = await hsToken({ sub: 'alice' });
    assert.deepEqual(await identityOf(resolver, { authorization: `bearer  ${token}` }), { userId: 'alice' });
    assert.equal(await identityOf(resolver, { authorization: `Basic ${token}` }), ANONYMOUS);
  });

  it('a configured userClaim; numbers are stringified; unusable claims are anonymous', async () => {
    const { resolver } = resolverFor({ jwt: jwtConfig({ userClaim: 'uid' }) });
    assert.deepEqual(await identityOf(resolver, bearer(await hsToken({ uid: 'u-1', sub: 'ignored' }))), { userId: 'u-1' });
    assert.deepEqual(await identityOf(resolver, bearer(await hsToken({ uid: 42 }))), { userId: '42' });
    for (const uid of ['', 'x'.repeat(257), true, { id: 1 }, ['a'], null]) {
      assert.equal(await identityOf(resolver, bearer(await hsToken({ uid }))), ANONYMOUS, JSON.stringify(uid));
    }
    assert.equal(await identityOf(resolver, bearer(await hsToken({ sub: 'no-uid' }))), ANONYMOUS);
    assert.deepEqual(await identityOf(resolver, bearer(await hsToken({ uid: 'x'.repeat(256) }))), { userId: 'x'.repeat(256) });
  });

  it('expired, not yet valid, wrong secret, garbage: anonymous', async () => {
    const { resolver } = resolverFor({ jwt: jwtConfig() });
    const expired = await hsToken({ sub: 'alice' }, { exp: T0_SECONDS - 1 });
    const notYet = await new SignJWT({ sub: 'alice' })
      .setProtectedHeader({ alg: 'HS256' })
      .setNotBefore(T0_SECONDS + 60)
      .sign(new TextEncoder().encode(SECRET));
    const forged = await hsToken({ sub: 'alice' }, { secret: 'another-secret-that-is-long-enough!!' });
    for (const token of [expired, notYet, forged, 'not.a.jwt', 'x']) {
      assert.equal(await identityOf(resolver, bearer(token)), ANONYMOUS, token);
    }
  });

  it('alg none and algorithms outside the pinned list are anonymous', async () => {
    const { resolver } = resolverFor({ jwt: jwtConfig() });
    const unsecured = new UnsecuredJWT({ sub: 'alice' }).setExpirationTime(T0_SECONDS + 60).encode();
    const hs512 = await hsToken({ sub: 'alice' }, { alg: 'HS512' });
    assert.equal(await identityOf(resolver, bearer(unsecured)), ANONYMOUS);
    assert.equal(await identityOf(resolver, bearer(hs512)), ANONYMOUS);
    // the same HS512 token is fine once HS512 is allowed
    const { resolver: both } = resolverFor({ jwt: jwtConfig({ algorithms: ['HS256', 'HS512'] }) });
    assert.deepEqual(await identityOf(both, bearer(hs512)), { userId: 'alice' });
    assert.throws(() => createIdentityResolver({ jwt: jwtConfig({ algorithms: ['none'] }) }), /"none" is not supported/);
  });

  it('a token whose header marks an unknown extension critical is anonymous, not a key failure', async () => {
    // jose throws JOSENotSupported for it, as it does for a key that cannot do the algorithm;
    // built by hand because SignJWT refuses to sign an unknown crit.
    const encode = (part: object) => Buffer.from(JSON.stringify(part)).toString('base64url');
    const input = `${encode({ alg: 'HS256', crit: ['zzz'], zzz: 1 })}.${encode({ sub: 'alice', exp: T0_SECONDS + 3600 })}`;
    const token = `${input}.${createHmac('sha256', SECRET).update(input).digest('base64url')}`;
    const { resolver, events } = resolverFor({ jwt: jwtConfig() });
    assert.equal(await identityOf(resolver, bearer(token)), ANONYMOUS);
    const again = resolver.resolve(bearer(token), false);
    assert.ok(!(again instanceof Promise));
    assert.equal(who(again), ANONYMOUS, 'rejected like any bad token, and cached');
    assert.deepEqual(events, []);
  });

  it('issuer and audience are enforced when set', async () => {
    const { resolver } = resolverFor({ jwt: jwtConfig({ issuer: 'https://auth.example', audience: ['api', 'rtc'] }) });
    assert.deepEqual(await identityOf(resolver, bearer(await hsToken({ sub: 'a', iss: 'https://auth.example', aud: 'rtc' }))), { userId: 'a' });
    assert.equal(await identityOf(resolver, bearer(await hsToken({ sub: 'a', iss: 'https://evil.example', aud: 'api' }))), ANONYMOUS);
    assert.equal(await identityOf(resolver, bearer(await hsToken({ sub: 'a', iss: 'https://auth.example', aud: 'other' }))), ANONYMOUS);
    assert.equal(await identityOf(resolver, bearer(await hsToken({ sub: 'a' }))), ANONYMOUS);
  });

  it('reads the token from the configured cookie, never from the query string', async () => {
    const { resolver } = resolverFor({ jwt: jwtConfig({ cookie: 'session' }) });
    const token = await hsToken({ sub: 'carol' });
    assert.deepEqual(await identityOf(resolver, { cookie: `theme=dark; session=${token}; x=1` }), { userId: 'carol' });
    assert.deepEqual(await identityOf(resolver, { cookie: `session="${token}"` }), { userId: 'carol' });
    assert.equal(await identityOf(resolver, { cookie: `xsession=${token}` }), ANONYMOUS);
    const { resolver: noCookie } = resolverFor({ jwt: jwtConfig() });
    assert.equal(await identityOf(noCookie, { cookie: `session=${token}` }), ANONYMOUS);
  });

  it('a repeated token is answered from the cache, synchronously, but never past its exp', async () => {
    const { resolver, clock } = resolverFor({ jwt: jwtConfig() });
    const token = await hsToken({ sub: 'alice' }, { exp: T0_SECONDS + 30 });
    const first = resolver.resolve(bearer(token), false);
    assert.ok(first instanceof Promise);
    assert.deepEqual(who(await first), { userId: 'alice' });
    const second = resolver.resolve(bearer(token), false);
    assert.ok(!(second instanceof Promise), 'cached verdict is synchronous');
    assert.deepEqual(who(second), { userId: 'alice' });
    clock.now = T0 + 31_000;
    assert.equal(await identityOf(resolver, bearer(token)), ANONYMOUS);
  });

  it('says whether a token was presented and refused, without changing who the request is', async () => {
    const { resolver } = resolverFor({ jwt: jwtConfig(), header: 'x-user-id' });
    assert.deepEqual(await resolver.resolve(bearer(await hsToken({ sub: 'alice' })), false), { userId: 'alice', tokenPresented: true });
    const expired = await hsToken({ sub: 'alice' }, { exp: T0_SECONDS - 1 });
    assert.deepEqual(await resolver.resolve(bearer(expired), false), { tokenPresented: true, tokenError: true });
    assert.deepEqual(resolver.resolve(bearer(expired), false), { tokenPresented: true, tokenError: true }, 'cached the same way');
    assert.deepEqual(resolver.resolve(bearer('x'.repeat(9000)), false), { tokenPresented: true, tokenError: true }, 'too long to be ours');
    // The trusted header still says who it is; the refused token is reported beside it.
    assert.deepEqual(await resolver.resolve({ ...bearer('not.a.jwt'), 'x-user-id': 'dave' }, true), { userId: 'dave', tokenPresented: true, tokenError: true });
    assert.equal(resolver.resolve({}, false), ANONYMOUS);
  });

  it('requireExp (default): a token without exp is anonymous; requireExp: false accepts it', async () => {
    const noExp = await new SignJWT({ sub: 'eve' }).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(SECRET));
    const strict = resolverFor({ jwt: jwtConfig() }).resolver;
    assert.deepEqual(await strict.resolve(bearer(noExp), false), { tokenPresented: true, tokenError: true });
    const explicit = resolverFor({ jwt: jwtConfig({ requireExp: true }) }).resolver;
    assert.equal(await identityOf(explicit, bearer(noExp)), ANONYMOUS);
    const lax = resolverFor({ jwt: jwtConfig({ requireExp: false }) }).resolver;
    assert.deepEqual(await identityOf(lax, bearer(noExp)), { userId: 'eve' });
  });

  it('a token that cannot be checked for our reasons is presented, not refused', async () => {
    const port = await freePort(); // nothing listens there: the JWKS is unreachable
    const { resolver } = resolverFor({ jwt: { jwksUrl: `http://127.0.0.1:${port}/jwks.json`, algorithms: ['ES256'], userClaim: 'sub' } });
    const { privateKey } = await generateKeyPair('ES256');
    const token = await new SignJWT({ sub: 'x' }).setProtectedHeader({ alg: 'ES256', kid: 'k' }).setExpirationTime(T0_SECONDS + 60).sign(privateKey);
    assert.deepEqual(await resolver.resolve(bearer(token), false), { tokenPresented: true });
  });

  it('no token: synchronous, and anonymous', () => {
    const { resolver } = resolverFor({ jwt: jwtConfig() });
    assert.equal(resolver.resolve({}, true), ANONYMOUS);
  });
});

describe('identity header from a trusted auth layer', () => {
  it('is believed only from a trusted peer', () => {
    const { resolver } = resolverFor({ header: 'x-user-id' });
    assert.deepEqual(resolver.resolve({ 'x-user-id': 'dave' }, true), { userId: 'dave' });
    assert.equal(resolver.resolve({ 'x-user-id': 'dave' }, false), ANONYMOUS);
    assert.equal(resolver.resolve({ 'x-user-id': '' }, true), ANONYMOUS);
    assert.equal(resolver.resolve({ 'x-user-id': 'x'.repeat(257) }, true), ANONYMOUS);
  });

  it('a verified JWT wins over the header; an invalid one falls back to it', async () => {
    const { resolver } = resolverFor({ jwt: jwtConfig(), header: 'x-user-id' });
    const headers = { ...bearer(await hsToken({ sub: 'alice' })), 'x-user-id': 'dave' };
    assert.deepEqual(await identityOf(resolver, headers, true), { userId: 'alice' });
    const forged = await hsToken({ sub: 'alice' }, { secret: 'another-secret-that-is-long-enough!!' });
    assert.deepEqual(await identityOf(resolver, { ...bearer(forged), 'x-user-id': 'dave' }, true), { userId: 'dave' });
    assert.equal(await identityOf(resolver, { ...bearer(forged), 'x-user-id': 'dave' }, false), ANONYMOUS);
  });
});

describe('identity from a public key', () => {
  it('RS256 with a PEM SPKI key; a token signed by another key is anonymous', async () => {
    const { publicKey, privateKey } = await generateKeyPair('RS256', { extractable: true });
    const other = await generateKeyPair('RS256');
    const { resolver } = resolverFor({ jwt: jwtConfig({ secret: undefined, publicKey: await exportSPKI(publicKey), algorithms: ['RS256'] }) });
    const sign = (key: CryptoKey) =>
      new SignJWT({ sub: 'erin' }).setProtectedHeader({ alg: 'RS256' }).setExpirationTime(T0_SECONDS + 60).sign(key);
    assert.deepEqual(await identityOf(resolver, bearer(await sign(privateKey))), { userId: 'erin' });
    assert.equal(await identityOf(resolver, bearer(await sign(other.privateKey))), ANONYMOUS);
    // an HS256 token signed with the public key as its secret (key confusion) is refused
    const pem = await exportSPKI(publicKey);
    assert.equal(await identityOf(resolver, bearer(await hsToken({ sub: 'erin' }, { secret: pem }))), ANONYMOUS);
  });

  it('refuses keys that cannot verify the configured algorithms, at compile time', async () => {
    const { publicKey } = await generateKeyPair('ES256', { extractable: true });
    const pem = await exportSPKI(publicKey);
    assert.throws(() => createIdentityResolver({ jwt: jwtConfig({ secret: undefined, publicKey: pem, algorithms: ['RS256'] }) }), /cannot verify RS256/);
    assert.throws(() => createIdentityResolver({ jwt: jwtConfig({ secret: undefined, publicKey: 'nope', algorithms: ['ES256'] }) }), /not a PEM public key/);
    assert.throws(() => createIdentityResolver({ jwt: jwtConfig({ secret: undefined, publicKey: pem, algorithms: ['HS256'] }) }), /need a secret/);
    assert.throws(() => createIdentityResolver({ jwt: jwtConfig({ algorithms: ['RS256'] }) }), /secret only verifies/);
    assert.throws(() => createIdentityResolver({ jwt: jwtConfig({ publicKey: pem }) }), /exactly one of/);
  });
});

describe('identity from a JWKS URL', () => {
  let server: Upstream;
  let jwksUrl: string;
  let sign: (claims: JWTPayload, kid?: string) => Promise<string>;
  let keySet: { keys: JWK[] };
  /** What the JWKS server answers; every test starts from a healthy server (beforeEach) and changes it as it needs. */
  const served: { status: number; requests: number; jwks: { keys: JWK[] } } = { status: 200, requests: 0, jwks: { keys: [] } };

  before(async () => {
    const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
    keySet = { keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' }] };
    sign = (claims, kid = 'k1') =>
      new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid }).setExpirationTime(T0_SECONDS + 60).sign(privateKey);
    server = await startUpstream((_request, response) => {
      served.requests++;
      response.writeHead(served.status, { 'content-type': 'application/json' });
      response.end(JSON.stringify(served.jwks));
    });
    jwksUrl = `${server.url}/jwks.json`;
  });
  beforeEach(() => Object.assign(served, { status: 200, requests: 0, jwks: keySet }));
  after(() => server.close());

  const jwksConfig = (url: string): IdentityConfig => ({
    jwt: { jwksUrl: url, algorithms: ['ES256'], userClaim: 'sub' },
  });

  it('verifies tokens with keys fetched from the server, fetching once', async () => {
    const { resolver, events } = resolverFor(jwksConfig(jwksUrl));
    const [a, b] = await Promise.all([
      identityOf(resolver, bearer(await sign({ sub: 'frank' }))),
      identityOf(resolver, bearer(await sign({ sub: 'grace' }))),
    ]);
    assert.deepEqual(a, { userId: 'frank' });
    assert.deepEqual(b, { userId: 'grace' });
    assert.deepEqual(await identityOf(resolver, bearer(await sign({ sub: 'heidi' }))), { userId: 'heidi' });
    assert.equal(served.requests, 1);
    assert.equal(await identityOf(resolver, bearer(await sign({ sub: 'ivan' }, 'unknown-kid'))), ANONYMOUS);
    assert.deepEqual(events, []);
  });

  it('non-200 answers: anonymous, one jwks_unreachable per outage, again after recovery', async (t) => {
    served.status = 503;
    const { resolver, clock, events } = resolverFor(jwksConfig(jwksUrl));
    const token = await sign({ sub: 'judy' });
    for (let i = 0; i < 3; i++) assert.equal(await identityOf(resolver, bearer(token)), ANONYMOUS);
    assert.deepEqual(events, ['jwks_unreachable']);
    assert.equal(served.requests, 1, 'no refetch before the retry delay');

    served.status = 200;
    clock.now += 2_001;
    assert.deepEqual(await identityOf(resolver, bearer(token)), { userId: 'judy' });
    assert.deepEqual(events, ['jwks_unreachable']);

    // A new outage: an unknown kid makes jose refetch once its 30s cooldown (on Date) passed.
    served.status = 503;
    t.mock.timers.enable({ apis: ['Date'], now: Date.now() + 31_000 });
    assert.equal(await identityOf(resolver, bearer(await sign({ sub: 'judy' }, 'rotated'))), ANONYMOUS);
    t.mock.timers.reset();
    assert.deepEqual(events, ['jwks_unreachable', 'jwks_unreachable']);
  });

  it('an unreachable server (closed port): anonymous, onError once for several requests', async () => {
    const port = await freePort();

    const { resolver, clock, events } = resolverFor(jwksConfig(`http://127.0.0.1:${port}/jwks.json`));
    const tokens = await Promise.all(['k', 'l', 'm'].map((sub) => sign({ sub })));
    const concurrent = await Promise.all(tokens.map((token) => identityOf(resolver, bearer(token))));
    assert.deepEqual(concurrent, [ANONYMOUS, ANONYMOUS, ANONYMOUS]);
    clock.now += 5_000; // retried, still down: the same outage
    for (const token of tokens) assert.equal(await identityOf(resolver, bearer(token)), ANONYMOUS);
    assert.deepEqual(events, ['jwks_unreachable']);
  });

  it('a JWKS that is not a key set reports jwt_key_invalid once', async () => {
    served.jwks = { keys: 'nope' as unknown as JWK[] };
    const { resolver, clock, events } = resolverFor(jwksConfig(jwksUrl));
    const token = await sign({ sub: 'kim' });
    assert.equal(await identityOf(resolver, bearer(token)), ANONYMOUS);
    clock.now += 5_000;
    assert.equal(await identityOf(resolver, bearer(token)), ANONYMOUS);
    assert.deepEqual(events, ['jwt_key_invalid']);
  });

  it('refuses a bad URL and HMAC algorithms with a JWKS', () => {
    assert.throws(() => createIdentityResolver({ jwt: { jwksUrl: 'ftp://x/jwks', algorithms: ['ES256'], userClaim: 'sub' } }), /http: or https:/);
    assert.throws(() => createIdentityResolver({ jwt: { jwksUrl, algorithms: ['HS256'], userClaim: 'sub' } }), /need a secret/);
  });
});
