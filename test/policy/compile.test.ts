import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { PolicyConfig, RouteConfig } from '../../src/config/types.js';
import { ALGORITHMS } from '../../src/limiter/algorithms/index.js';
import { compilePolicy, DEFAULT_MESSAGE } from '../../src/policy/compile.js';
import { PolicyError } from '../../src/policy/errors.js';
import type { CompiledLimit, CompiledRateLimit } from '../../src/policy/types.js';

/** The limit as a rate limit (fails the test if it is a concurrency limit). */
function rate(limit: CompiledLimit): CompiledRateLimit {
  assert.equal(limit.type, 'rate');
  return limit as CompiledRateLimit;
}

function policy(routes: RouteConfig[], overrides: Partial<PolicyConfig> = {}): PolicyConfig {
  return {
    upstream: 'http://127.0.0.1:3000',
    upstreamTimeoutMs: 30_000,
    clientIp: { trustedProxies: ['10.0.0.0/8'], ipv6Prefix: 64 },
    allow: { ips: ['192.0.2.1'], users: ['ops'] },
    defaults: { algorithm: 'sliding-window', mode: 'enforce' },
    routes,
    store: { type: 'memory', memory: { maxKeys: 1_000_000, maxBlocks: 100_000 } },
    log: { access: false },
    paths: { escapedSlashes: 'decode' },
    responses: { format: 'envelope' },
    ...overrides,
  };
}

const LIVEKIT: RouteConfig = {
  id: 'livekit-token',
  match: { path: '/api/livekit/*', methods: ['POST'], caseSensitive: false },
  message: 'Slow down',
  mode: 'shadow',
  algorithm: 'token-bucket',
  upstreamTimeoutMs: 5_000,
  limits: [
    { by: 'ip', limit: 10, windowMs: 60_000, blockMs: 300_000, for: 'anonymous' },
    { by: 'user', limit: 100, windowMs: 1_500, tiers: { pro: 1000, free: 50 }, for: 'authenticated', algorithm: 'fixed-window' },
  ],
};

const SEARCH: RouteConfig = {
  id: 'search',
  match: { regex: '^/search$', caseSensitive: false },
  limits: [
    { by: 'header:x-api-key', limit: 5, windowMs: 1_000, for: 'any' },
    { by: 'global', limit: 1000, windowMs: 60_000, for: 'any' },
  ],
};

describe('compilePolicy', () => {
  it('compiles limits: kind, key prefix, policy name, window seconds, tiers, block', () => {
    const compiled = compilePolicy(policy([LIVEKIT, SEARCH]), 'abc123', { now: () => 42 });
    const [ip, user] = compiled.routes[0].limits.map(rate);
    assert.deepEqual(
      { ...ip },
      {
        index: 0,
        routeId: 'livekit-token',
        by: 'ip',
        kind: 'ip',
        type: 'rate',
        limit: 10,
        windowMs: 60_000,
        blockMs: 300_000,
        blocks: null,
        forgetAfterMs: 0,
        for: 'anonymous',
        algorithm: 'token-bucket',
        keyPrefix: '{livekit-token}:ip:60000:tb:',
        policyName: 'livekit-token.ip',
        windowSeconds: 60,
        policyItem: '"livekit-token.ip";q=10;w=60',
        need: 1,
        take: 1,
        costHeader: null,
        countStatuses: null,
        settles: false,
        calendar: null,
      },
    );
    assert.equal(user.index, 1);
    assert.equal(user.kind, 'user');
    assert.equal(user.algorithm, 'fixed-window');
    assert.equal(user.keyPrefix, '{livekit-token}:user:1500:fw:');
    assert.equal(user.windowSeconds, 2);
    assert.equal(user.blockMs, 0);
    assert.deepEqual([...user.tiers!], [['pro', 1000], ['free', 50]]);

    const [header, global] = compiled.routes[1].limits;
    assert.equal(header.kind, 'header');
    assert.equal(header.headerName, 'x-api-key');
    assert.equal(header.keyPrefix, '{search}:header:x-api-key:1000:sw:');
    assert.equal(header.policyName, 'search.header:x-api-key');
    assert.equal(header.tiers, undefined);
    assert.equal(global.kind, 'global');
    assert.equal(global.keyPrefix, '{search}:global:60000:sw:');
    assert.equal(compiled.hash, 'abc123');
    assert.equal(compiled.loadedAt, 42);
  });

  it('compiles session: limits (null when absent, and null as a whole without session:)', () => {
    const live: RouteConfig = {
      id: 'live',
      match: { path: '/ws/live', websocket: true, caseSensitive: false },
      limits: [],
      session: { idleTimeoutMs: 1_800_000, messages: { limit: 600, windowMs: 60_000 } },
    };
    const [compiledLive, search] = compilePolicy(policy([live, SEARCH]), 'h').routes;
    assert.deepEqual(compiledLive.session, { maxDurationMs: null, idleTimeoutMs: 1_800_000, maxMessageBytes: null, messages: { limit: 600, windowMs: 60_000 } });
    assert.ok(Object.isFrozen(compiledLive.session));
    assert.equal(search.session, null);
  });

  it('route settings inherit: algorithm limit > route > defaults, mode, timeout, message', () => {
    const compiled = compilePolicy(policy([LIVEKIT, SEARCH], { defaults: { algorithm: 'sliding-log', mode: 'shadow' }, upstreamTimeoutMs: 9_000 }), 'h');
    const [livekit, search] = compiled.routes;
    assert.equal(livekit.mode, 'shadow');
    assert.equal(livekit.upstreamTimeoutMs, 5_000);
    assert.equal(livekit.message, 'Slow down');
    assert.equal(search.mode, 'shadow');
    assert.equal(search.upstreamTimeoutMs, 9_000);
    assert.equal(search.message, DEFAULT_MESSAGE);
    assert.equal(rate(search.limits[0]).algorithm, 'sliding-log');
    assert.equal(search.limits[0].keyPrefix, '{search}:header:x-api-key:1000:sl:');
    assert.equal(compiled.upstreamTimeoutMs, 9_000);
    const enforced = compilePolicy(policy([SEARCH]), 'h');
    assert.equal(enforced.routes[0].mode, 'enforce');
    assert.equal(rate(enforced.routes[0].limits[0]).algorithm, 'sliding-window');
  });

  it('wires the router, client IP, allowlist and identity', async () => {
    const compiled = compilePolicy(policy([LIVEKIT, SEARCH], { identity: { header: 'x-user' } }), 'h');
    assert.equal(compiled.router.match('POST', '/API/livekit/room', false)?.id, 'livekit-token');
    assert.equal(compiled.router.match('GET', '/api/livekit/room', false), undefined);
    assert.equal(compiled.router.match('GET', '/search?q=x', false)?.id, 'search');
    const client = compiled.clientIp.resolve('10.1.1.1', '192.0.2.1');
    assert.equal(client.ip, '192.0.2.1');
    assert.equal(compiled.allow.isAllowed(client, {}), true);
    assert.deepEqual(await compiled.identity!.resolve({ 'x-user': 'ops' }, true), { userId: 'ops' });
    assert.equal(compilePolicy(policy([SEARCH]), 'h').identity, null);
  });

  it('the upstream override wins over the file; no upstream at all is an error', () => {
    assert.equal(compilePolicy(policy([]), 'h').upstream.href, 'http://127.0.0.1:3000/');
    assert.equal(compilePolicy(policy([]), 'h', { upstream: 'https://api.internal:8443' }).upstream.href, 'https://api.internal:8443/');
    assert.equal(compilePolicy(policy([], { upstream: undefined }), 'h', { upstream: 'http://x:1' }).upstream.port, '1');
    assert.throws(() => compilePolicy(policy([], { upstream: undefined }), 'h'), /no upstream/);
    assert.throws(() => compilePolicy(policy([]), 'h', { upstream: 'ftp://x' }), /http: or https:/);
    assert.throws(() => compilePolicy(policy([]), 'h', { upstream: 'not a url' }), /upstream is not a URL/);
  });

  it('everything compiled is frozen', () => {
    const compiled = compilePolicy(policy([LIVEKIT]), 'h');
    assert.ok(Object.isFrozen(compiled));
    assert.ok(Object.isFrozen(compiled.routes));
    assert.ok(Object.isFrozen(compiled.routes[0]));
    assert.ok(Object.isFrozen(compiled.routes[0].limits));
    assert.ok(Object.isFrozen(compiled.routes[0].limits[0]));
    assert.ok(Object.isFrozen(ALGORITHMS));
  });

  it('refuses route ids that would break the key hash tag, and duplicates', () => {
    assert.throws(() => compilePolicy(policy([{ ...SEARCH, id: 'a}b' }]), 'h'), /route id "a}b" may only contain/);
    assert.throws(() => compilePolicy(policy([{ ...SEARCH, id: 'a:b' }]), 'h'), /may only contain/);
    assert.throws(() => compilePolicy(policy([SEARCH, SEARCH]), 'h'), /duplicate route id "search"/);
  });

  it('limits sharing by+window+algorithm get separate counters and policy names, told apart by for', () => {
    const route: RouteConfig = {
      id: 'token',
      match: { path: '/token', caseSensitive: false },
      limits: [
        { by: 'ip', limit: 20, windowMs: 60_000, for: 'any' },
        { by: 'ip', limit: 5, windowMs: 60_000, for: 'anonymous' },
        { by: 'ip', limit: 100, windowMs: 3_600_000, for: 'authenticated' },
      ],
    };
    const [any, anonymous, hourly] = compilePolicy(policy([route]), 'h').routes[0].limits;
    assert.equal(any.keyPrefix, '{token}:ip:60000:sw:');
    assert.equal(anonymous.keyPrefix, '{token}:ip:60000:sw~anonymous:');
    assert.equal(anonymous.policyName, 'token.ip.anonymous');
    assert.equal(any.policyName, 'token.ip');
    // No twin: the key stays route + by + window + algorithm, so editing `for` keeps the count.
    assert.equal(hourly.keyPrefix, '{token}:ip:3600000:sw:');
  });

  it('errors name where in the policy they are, for FILE:LINE:COL', () => {
    const pathOf = (config: PolicyConfig): unknown => {
      try {
        compilePolicy(config, 'h');
      } catch (error) {
        assert.ok(error instanceof PolicyError, String(error));
        return error.path;
      }
      assert.fail('compiled');
    };
    assert.deepEqual(pathOf(policy([], { upstream: undefined })), ['upstream']);
    assert.deepEqual(pathOf(policy([SEARCH, SEARCH])), ['routes', 1, 'id']);
    assert.deepEqual(pathOf(policy([SEARCH, { ...SEARCH, id: 'a}b' }])), ['routes', 1]);
    assert.deepEqual(pathOf(policy([], { clientIp: { trustedProxies: ['nope'], ipv6Prefix: 64 } })), ['clientIp']);
    const jwt = { secret: 'x'.repeat(32), algorithms: ['RS256'], userClaim: 'sub' };
    assert.deepEqual(pathOf(policy([], { identity: { jwt } })), ['identity', 'jwt', 'algorithms']);
  });

  it('algorithm codes are the agreed ones', () => {
    const codes = Object.fromEntries(Object.entries(ALGORITHMS).map(([name, algorithm]) => [name, algorithm.code]));
    assert.deepEqual(codes, { 'sliding-window': 'sw', 'sliding-log': 'sl', 'fixed-window': 'fw', 'token-bucket': 'tb' });
  });
});
