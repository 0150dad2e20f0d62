import assert from 'node:assert/strict';
import { test } from 'node:test';
import { REDACTED, redactPolicy, redactUrlPassword } from '../../src/config/redact.js';
import type { PolicyConfig } from '../../src/config/types.js';

function policy(): PolicyConfig {
  return {
    upstream: 'http://svc:pw-upstream@127.0.0.1:3000/base',
    upstreamTimeoutMs: 30_000,
    clientIp: { trustedProxies: ['127.0.0.1/32'], ipv6Prefix: 64 },
    identity: {
      jwt: { secret: 'jwt-secret-value', algorithms: ['HS256'], userClaim: 'sub', tierClaim: 'plan' },
      header: 'x-user-id',
    },
    paths: { escapedSlashes: 'decode' },
    responses: { format: 'envelope' },
    allow: { ips: [], users: ['bot'] },
    defaults: { algorithm: 'sliding-window', mode: 'enforce' },
    routes: [{ id: 'api', match: { path: '/api/*', caseSensitive: false }, limits: [{ by: 'ip', limit: 5, windowMs: 1000, for: 'any' }] }],
    store: {
      type: 'redis',
      memory: { maxKeys: 10, maxBlocks: 10 },
      redis: {
        url: 'rediss://default:pw-url@cache:6380/0',
        sentinels: [{ host: 's1', port: 26379, password: 'pw-sentinel' }, { host: 's2', port: 26379 }],
        cluster: [{ host: 'n1', port: 6379, username: 'u', password: 'pw-node' }],
        name: 'mymaster',
        password: 'pw-redis',
        prefix: 'tollgate:',
        timeoutMs: 50,
        onError: 'local',
        onErrorStatus: 503,
        slotLeaseMs: 30_000,
        clock: 'redis',
        expectedReplicas: 1,
      },
    },
    log: { access: false },
  };
}

test('redactPolicy hides every secret and keeps everything else', () => {
  const original = policy();
  const redacted = redactPolicy(original) as PolicyConfig;

  const expected = policy();
  expected.upstream = `http://svc:${REDACTED}@127.0.0.1:3000/base`;
  expected.identity!.jwt!.secret = REDACTED;
  const redis = expected.store.redis!;
  redis.url = `rediss://default:${REDACTED}@cache:6380/0`;
  redis.password = REDACTED;
  redis.sentinels![0].password = REDACTED;
  redis.cluster![0].password = REDACTED;
  assert.deepStrictEqual(redacted, expected);

  const shown = JSON.stringify(redacted);
  for (const secret of ['jwt-secret-value', 'pw-upstream', 'pw-url', 'pw-sentinel', 'pw-node', 'pw-redis']) {
    assert.ok(!shown.includes(secret), secret);
  }
});

test('redactPolicy copies: the loaded config keeps its secrets', () => {
  const original = policy();
  redactPolicy(original);
  assert.deepStrictEqual(original, policy());
});

test('redactPolicy hides a public key and leaves absent secrets absent', () => {
  const config = policy();
  config.identity = { jwt: { publicKey: '-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----', algorithms: ['EdDSA'], userClaim: 'sub' } };
  config.store = { type: 'memory', memory: { maxKeys: 1, maxBlocks: 1 } };
  const redacted = redactPolicy(config) as PolicyConfig;
  assert.deepStrictEqual(redacted.identity, { jwt: { publicKey: REDACTED, algorithms: ['EdDSA'], userClaim: 'sub' } });
  assert.deepStrictEqual(redacted.store, config.store);
});

test('redactUrlPassword', () => {
  assert.equal(redactUrlPassword('redis://127.0.0.1:6379'), 'redis://127.0.0.1:6379');
  assert.equal(redactUrlPassword('redis://user:p@ss@host:6379'), `redis://user:${REDACTED}@host:6379`);
  assert.equal(redactUrlPassword('redis://:only-password@host'), `redis://:${REDACTED}@host`);
  assert.equal(redactUrlPassword('redis://maybe-a-password@host'), `redis://${REDACTED}@host`);
  assert.equal(redactUrlPassword('http://host/path?next=a@b'), 'http://host/path?next=a@b');
});
