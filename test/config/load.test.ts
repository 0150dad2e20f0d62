import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { formatIssue, loadPolicyFile, loadPolicyText, type LoadedPolicy } from '../../src/config/load.js';
import type { PolicyConfig } from '../../src/config/types.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/config/', import.meta.url));
const SHIPPED_POLICY = fileURLToPath(new URL('../../policies.yaml', import.meta.url));
const LONG_SECRET = 'test-secret-with-at-least-32-bytes-0123456789';
const ENV = { JWT_SECRET: LONG_SECRET };

function fixture(name: string): string {
  return join(FIXTURES, `${name}.yaml`);
}

/** `LINE:COL message` of every error, checking each names the file as given. */
function errorsOf(name: string, env: Record<string, string> = ENV): string[] {
  const file = fixture(name);
  const result = loadPolicyFile(file, env);
  assert.equal(result.ok, false, `${name} should not load`);
  if (result.ok) return [];
  for (const issue of result.errors) assert.equal(issue.file, file);
  return result.errors.map((issue) => `${issue.line}:${issue.col} ${issue.message}`);
}

function load(file: string, env: Record<string, string>): LoadedPolicy {
  const result = loadPolicyFile(file, env);
  assert.ok(result.ok, result.ok ? '' : result.errors.map(formatIssue).join('\n'));
  return result.policy;
}

/** One fixture per failure, named after it, with every error it must produce. */
const FAILURES: Record<string, string[]> = {
  misspelled_key: ['4:5 routes[0]: unknown key "limts" (did you mean "limits"?)'],
  duplicate_key: ['3:1 duplicate key "upstream": each key may appear once in a map (remove or rename one)'],
  yaml_syntax_error: ['4:1 invalid YAML: Flow map in block collection must be sufficiently indented and end with a }'],
  env_reference_unquoted_in_flow: [
    '5:27 invalid YAML: Unexpected flow-map-start at node end (inside { } or [ ], quote environment references: "${NAME}" gives text; for a number use block style)',
  ],
  empty: ['1:1 the policy file is empty; it needs at least a map of settings such as `routes: []`'],
  not_a_map: ['1:1 the policy file must be a map of settings (upstream:, routes:, ...), not a list or a single value'],
  routes_not_a_list: ['2:3 routes: expected a list, got a map'],
  missing_required_key: ['5:9 routes[0].limits[0].window: is required'],
  user_limit_for_anonymous: [
    '7:49 routes[0].limits[0].for: a limit by user cannot apply to anonymous requests (they have no user); use by: ip',
  ],
  tiers_without_tier_claim: [
    '9:50 routes[0].limits[0].tiers: tiers need identity.jwt.tierClaim (the token claim that names the tier)',
  ],
  user_limit_without_identity: [
    '5:15 routes[0].limits[0].by: limiting by user needs an identity section (identity.jwt or identity.header)',
  ],
  authenticated_without_identity: [
    '5:47 routes[0].limits[0].for: authenticated needs an identity section (without one every request is anonymous)',
  ],
  identity_without_jwt_or_header: ['1:11 identity: give jwt or header (or remove identity to limit by IP only)'],
  duplicate_route_id: ['5:9 routes[1].id: duplicate route id "api" (already used by routes[0]); ids must be unique'],
  invalid_route_id: [
    '2:9 routes[0].id: route id "api {v1}" may only use letters, digits, ".", "_" and "-" (it is part of store keys)',
  ],
  match_path_and_regex: ['3:12 routes[0].match: give path or regex, not both'],
  match_without_path_or_regex: ['4:7 routes[0].match: give path or regex'],
  path_without_leading_slash: ['3:20 routes[0].match.path: path "api/*" must start with /'],
  path_star_not_trailing: [
    '3:20 routes[0].match.path: path "/api/*/items" may contain * only in a trailing /* (prefix match); use regex for other patterns',
  ],
  regex_does_not_compile: ['3:21 routes[0].match.regex: regex does not compile: Unterminated group'],
  case_sensitive_conflict: ['3:20 routes[0].caseSensitive: contradicts match.caseSensitive; set it in one place'],
  jwt_without_key: ['3:5 identity.jwt: give exactly one of secret (HS*), publicKey (PEM) or jwksUrl, found none'],
  jwt_several_keys: [
    '3:5 identity.jwt: give exactly one of secret (HS*), publicKey (PEM) or jwksUrl, found secret and jwksUrl',
  ],
  jwt_algorithm_none: [
    '4:25 identity.jwt.algorithms[1]: "none" is never accepted: unsigned tokens would let anyone claim any identity',
  ],
  jwt_hs_with_public_key: [
    '7:25 identity.jwt.algorithms[1]: HS256 needs a secret, but this jwt has publicKey; use RS*, PS*, ES* or EdDSA with a public key',
  ],
  jwt_rs_with_secret: [
    '4:18 identity.jwt.algorithms[0]: RS256 needs publicKey or jwksUrl, but this jwt has a secret; use HS256, HS384 or HS512 with a secret',
  ],
  jwt_public_key_not_pem: [
    '3:16 identity.jwt.publicKey: must be a PEM public key (-----BEGIN PUBLIC KEY----- ... -----END PUBLIC KEY-----)',
  ],
  invalid_trusted_proxy: [
    '4:7 clientIp.trustedProxies[1]: must be an IP address or CIDR (e.g. 10.0.0.0/8, ::1), got "10.0.0.0/33"',
  ],
  invalid_allow_ip: ['2:22 allow.ips[1]: must be an IP address or CIDR (e.g. 10.0.0.0/8, ::1), got "10.1.0.256"'],
  ipv6_prefix_out_of_range: ['2:15 clientIp.ipv6Prefix: must be an integer from 0 to 128, got 129'],
  limit_not_positive_integer: ['5:26 routes[0].limits[0].limit: must be a positive integer, got 0'],
  tier_limit_not_positive_integer: ['10:57 routes[0].limits[0].tiers.pro: must be a positive integer, got 2.5'],
  invalid_duration: ['6:39 routes[0].limits[1].window: invalid duration "1x" (use 500ms, 30s, 1m, 2h, 1d)'],
  duration_without_unit: [
    '1:18 upstreamTimeout: a duration needs a unit: write 30s, 30ms, ... (use 500ms, 30s, 1m, 2h, 1d)',
  ],
  zero_duration: ['5:49 routes[0].limits[0].block: duration must be longer than 0, got "0s"'],
  unknown_algorithm: [
    '2:14 defaults.algorithm: must be one of sliding-window, sliding-log, fixed-window, token-bucket, got "leaky-bucket"',
  ],
  invalid_header_name: [
    '5:15 routes[0].limits[0].by: "header:x api key" does not name a valid HTTP header (write header:NAME, e.g. header:x-api-key)',
  ],
  upstream_not_http: ['1:11 upstream: must be an http:// or https:// URL (e.g. http://127.0.0.1:3000)'],
  duplicate_limit_identity: ['9:9 routes[0].limits[2]: same by, window, algorithm and for as limits[0], so both would count one counter; merge them (use tiers for per-plan limits) or change the window'],
  redis_url_and_cluster: ['4:5 store.redis: give only one of url, sentinels or cluster, found url and cluster'],
  redis_url_not_redis: ['4:10 store.redis.url: must be a redis:// or rediss:// URL (e.g. redis://127.0.0.1:6379)'],
  sentinels_without_name: ['5:7 store.redis.sentinels: needs name (the sentinel master name, e.g. mymaster)'],
  on_error_status_not_an_error: [
    '5:20 store.redis.onErrorStatus: must be an HTTP error status from 400 to 599, got 200',
  ],
  secret_in_wrong_type: [
    '3:13 identity.jwt.secret: must be text, got a list',
    '9:15 store.redis.password: must be text, got a number (put the value in quotes to use it as text)',
  ],
  env_quoted_number: [
    '5:26 routes[0].limits[0].limit: must be a positive integer, got "20" (quoted values are text: remove the quotes)',
  ],
  guards_cors_without_origins: [
    '6:13 routes[0].guards.cors: needs origins (the origins whose preflights are answered); a CORS answer for any origin is never given',
  ],
  guards_origins_star: [
    '6:44 routes[0].guards.origins[1]: "*" would let every site in; leave origins out instead (without it any origin passes)',
  ],
  guards_body_without_max_body_size: [
    '3:19 defaults.guards.body: needs maxBodySize (the most Tollgate buffers to check a body, e.g. maxBodySize: 16kb)',
  ],
  guards_schema_missing: [
    `7:23 routes[0].guards.body.schema: cannot read the JSON Schema "schemas/does-not-exist.json" (${join(FIXTURES, 'schemas/does-not-exist.json')}): no such file`,
  ],
  guards_schema_invalid: [
    '7:23 routes[0].guards.body.schema: "schemas/not-a-schema.json": not a valid JSON Schema (draft 2020-12): schema is invalid: data/properties/voice/enum must be array, data/type must be equal to one of the allowed values, data/type must be array, data/type must match a schema in anyOf',
    '13:17 routes[1].guards.body.schema: "schemas/not-json.json" is not JSON: Expected double-quoted property name in JSON at position 21',
  ],
  guards_unknown_key: [
    '6:7 routes[0].guards: unknown key "methds" (did you mean "methods"?)',
    '7:15 routes[0].guards.cors: unknown key "origins" (allowed here: methods, headers, exposeHeaders, credentials, maxAge)',
    '7:45 routes[0].guards.cors: unknown key "method" (did you mean "methods"?)',
  ],
  guards_invalid_values: [
    '6:13 routes[0].guards.auth: must be one of required, optional, got "always"',
    '7:17 routes[0].guards.origins[0]: an origin has no path, query or fragment: write "https://app.example.com"',
    '7:43 routes[0].guards.origins[1]: a wildcard may only be a leading "*." label (e.g. https://*.example.com), got "https://app.*.example.com"',
    '7:72 routes[0].guards.origins[2]: must be an origin (scheme://host[:port], e.g. https://app.example.com) or null, got "app.example.com"',
    '8:20 routes[0].guards.maxBodySize: invalid size "16KB" (use 512b, 64kb, 1mb; units are lower-case and 1024-based)',
    '9:22 routes[0].guards.contentTypes[0]: must be a media type without parameters (type/subtype, e.g. application/json), got "json"',
    '10:24 routes[0].guards.securityHeaders: must be strict, off or a map of header names to values, got "lax"',
    '13:13 routes[1].guards: must be a map of guards, or off to turn defaults.guards off here, got "on"',
  ],
  identity_forward_reserved: [
    '4:20 identity.forward.user: must not be authorization: the forward names are removed from every client request; pick a name of your own (e.g. x-tollgate-user)',
    '4:41 identity.forward.tier: must differ from identity.header (x-user-id): the client\'s header would be removed before Tollgate reads it from a trusted proxy',
  ],
  guards_auth_without_identity: [
    '5:21 routes[0].guards.auth: required needs an identity section (identity.jwt or identity.header), else every request is refused',
  ],
  session_on_plain_route: [
    '5:14 routes[0].session: session limits apply to WebSocket sessions only: set match.websocket: true (this route also matches plain requests)',
  ],
  session_zero_duration: ['7:20 routes[0].session.idleTimeout: duration must be longer than 0, got "0s"'],
  // Node's timers fire after 1 ms for a longer delay: refused rather than a timeout storm.
  timer_duration_too_long: [
    '1:18 upstreamTimeout: must be at most 24d: a timer cannot wait longer',
    '7:20 routes[0].session.maxDuration: must be at most 24d: a timer cannot wait longer',
    '12:16 store.redis.slotLease: must be at most 24d: a timer cannot wait longer',
  ],
  session_size_zero: ['6:23 routes[0].session.maxMessageSize: size must be larger than 0, got "0kb"'],
  session_size_upper_case: [
    '6:23 routes[0].session.maxMessageSize: invalid size "1MB" (use 512b, 64kb, 1mb; units are lower-case and 1024-based)',
  ],
  session_size_too_large: ['6:23 routes[0].session.maxMessageSize: must be at most 2047mb (the largest limit the frame parser can enforce)'],
  session_messages_without_window: ['6:17 routes[0].session.messages.window: is required'],
  session_unknown_key: ['6:7 routes[0].session: unknown key "maxMesageSize" (did you mean "maxMessageSize"?)'],
  session_empty: ['5:14 routes[0].session: give at least one of maxDuration, idleTimeout, maxMessageSize, messages (or remove session)'],
  calendar_window_without_fixed_window: [
    '5:40 routes[0].limits[0].window: "1mo" is a calendar period, which only fixed-window counts (set algorithm: fixed-window on this limit, or use a duration such as 7d)',
  ],
  sliding_log_with_cost: [
    '6:49 routes[0].limits[0].cost: sliding-log keeps one entry per request and cannot weigh requests or give them back; use fixed-window, sliding-window or token-bucket with cost',
  ],
  concurrent_with_window: [
    '5:42 routes[0].limits[0].window: does not apply to a concurrency limit (concurrent: N counts requests in flight; it takes the place of limit and window and has no window)',
  ],
  cost_above_limit: ['5:47 routes[0].limits[0].cost: 10 is above the limit (5): no request could ever be admitted'],
  misspelled_top_level_key: ['1:1 unknown key "upsteam" (did you mean "upstream"?)'],
  unknown_store_type: ['2:9 store.type: must be one of memory, redis, got "postgres"'],
  boolean_as_text: ['2:11 log.access: must be true or false, got "yes"'],
  size_without_unit: ['4:28 routes[0].guards.maxBodySize: a size needs a unit: write 1024b, 1024kb, ... (use 512b, 64kb, 1mb)'],
  route_without_match: ['2:5 routes[0].match: is required'],
  responses_format_unknown: ['2:11 responses.format: must be one of envelope, problem, got "json"'],
  ipv6_prefix_not_a_number: [
    '2:15 clientIp.ipv6Prefix: must be an integer from 0 to 128, got "64" (quoted values are text: remove the quotes)',
  ],
};

describe('each invalid fixture reports its problems at FILE:LINE:COL', () => {
  for (const [name, expected] of Object.entries(FAILURES)) {
    test(name, () => {
      assert.deepEqual(errorsOf(name, { ...ENV, LIMIT: '20' }), expected);
    });
  }
});

test('a file with several problems reports all of them, sorted by position', () => {
  assert.deepEqual(errorsOf('multiple_errors'), [
    '5:5 routes[0]: unknown key "limts" (did you mean "limits"?)',
    '6:9 routes[1].id: duplicate route id "token" (already used by routes[0]); ids must be unique',
    '9:15 routes[1].limits[0].by: limiting by user needs an identity section (identity.jwt or identity.header)',
    '9:40 routes[1].limits[0].window: invalid duration "1x" (use 500ms, 30s, 1m, 2h, 1d)',
    '10:48 routes[1].limits[1].tiers: tiers need identity.jwt.tierClaim (the token claim that names the tier)',
    '13:22 store.memory.maxKeys: must be a positive integer, got -5',
  ]);
});

test('a missing required key that is not misspelled points at the map that lacks it', () => {
  const result = loadPolicyText('routes:\n  - id: api\n    match: { path: /x }\n', 'inline.yaml', {});
  assert.equal(result.ok, false);
  if (!result.ok) assert.deepEqual(result.errors.map(formatIssue), ['inline.yaml:2:5 routes[0].limits: is required']);
});

test('an unknown key with no near match lists the allowed keys', () => {
  const result = loadPolicyText('log:\n  verbose: true\n', 'inline.yaml', {});
  assert.equal(result.ok, false);
  if (!result.ok) assert.deepEqual(result.errors.map(formatIssue), ['inline.yaml:2:3 log: unknown key "verbose" (allowed here: access)']);
});

test('duplicate keys are reported together with the other problems', () => {
  const result = loadPolicyText('log: { access: true }\nlog: { access: maybe }\n', 'inline.yaml', {});
  assert.equal(result.ok, false);
  if (!result.ok) {
    assert.deepEqual(result.errors.map(formatIssue), [
      'inline.yaml:2:1 duplicate key "log": each key may appear once in a map (remove or rename one)',
      'inline.yaml:2:16 log.access: must be true or false, got "maybe"',
    ]);
  }
});

test('a second YAML document is refused where it starts', () => {
  const result = loadPolicyText('routes: []\n---\nroutes: []\n', 'inline.yaml', {});
  assert.equal(result.ok, false);
  if (!result.ok) {
    assert.deepEqual(result.errors.map(formatIssue), [
      'inline.yaml:2:1 the policy file must hold one YAML document; remove this second document (---)',
    ]);
  }
});

test('an unreadable file is an error at 1:1 and does not throw', () => {
  const file = join(FIXTURES, 'does-not-exist.yaml');
  const result = loadPolicyFile(file, {});
  assert.equal(result.ok, false);
  if (!result.ok) {
    assert.equal(result.errors.length, 1);
    assert.deepEqual([result.errors[0].file, result.errors[0].line, result.errors[0].col], [file, 1, 1]);
    assert.match(result.errors[0].message, /^cannot read the policy file: ENOENT/);
  }
});

test('session limits load as milliseconds and bytes (1024-based)', () => {
  const policy = load(fixture('session_valid'), {});
  assert.deepEqual(policy.config.routes[0].session, {
    maxDurationMs: 2 * 60 * 60 * 1000,
    idleTimeoutMs: 30 * 60 * 1000,
    maxMessageBytes: 1024 * 1024,
    messages: { limit: 600, windowMs: 60_000 },
  });
  // Each limit is optional; a route without session: has none.
  const partial = loadPolicyText('routes:\n  - id: ws\n    match: { path: /ws, websocket: true }\n    limits: []\n    session: { maxMessageSize: 64kb }\n', 'inline.yaml', {});
  assert.ok(partial.ok);
  if (partial.ok) assert.deepEqual(partial.policy.config.routes[0].session, { maxMessageBytes: 65_536 });
  const none = loadPolicyText('routes:\n  - id: ws\n    match: { path: /ws, websocket: true }\n    limits: []\n', 'inline.yaml', {});
  assert.ok(none.ok);
  if (none.ok) assert.equal(none.policy.config.routes[0].session, undefined);
});

test('formatIssue prints FILE:LINE:COL message', () => {
  assert.equal(formatIssue({ file: 'p.yaml', line: 3, col: 7, message: 'boom' }), 'p.yaml:3:7 boom');
});

test('the full fixture loads to the exact PolicyConfig, defaults included', () => {
  const file = fixture('full');
  const policy = load(file, { JWT_SECRET: LONG_SECRET, IP_LIMIT: '7', SENTINEL_PASSWORD: 'sentinel-pw', REDIS_PASSWORD: 'redis-pw' });
  const expected: PolicyConfig = {
    upstream: 'http://127.0.0.1:3000',
    upstreamTimeoutMs: 30_000,
    clientIp: { trustedProxies: ['127.0.0.1/32', '10.0.0.0/8', '::1'], ipv6Prefix: 56 },
    identity: {
      jwt: {
        secret: LONG_SECRET,
        algorithms: ['HS256', 'HS512'],
        userClaim: 'uid',
        tierClaim: 'plan',
        cookie: 'session',
        issuer: 'https://issuer.example',
        audience: ['my-api', 'other-api'],
        requireExp: true,
      },
      header: 'x-user-id',
    },
    allow: { ips: ['10.1.0.0/16', '192.0.2.7'], users: ['healthcheck-bot'] },
    defaults: { algorithm: 'fixed-window', mode: 'shadow' },
    routes: [
      {
        id: 'livekit-token',
        match: { path: '/api/livekit/token', methods: ['POST', 'GET'], caseSensitive: false },
        mode: 'enforce',
        algorithm: 'sliding-log',
        upstreamTimeoutMs: 10_000,
        message: 'Too many token requests',
        limits: [
          { by: 'user', limit: 10, windowMs: 60_000, blockMs: 300_000, for: 'any' },
          { by: 'ip', limit: 20, windowMs: 60_000, blockMs: 300_000, for: 'any', algorithm: 'token-bucket' },
          { by: 'user', limit: 3, windowMs: 10_000, tiers: { pro: 10, team: 50 }, for: 'any' },
          { by: 'ip', limit: 5, windowMs: 60_000, for: 'anonymous' },
          { by: 'header:x-api-key', limit: 100, windowMs: 3_600_000, for: 'authenticated' },
          { by: 'global', limit: 1000, windowMs: 86_400_000, for: 'any' },
        ],
      },
      {
        id: 'versioned',
        match: { regex: '^/api/v[0-9]+/x$', caseSensitive: true },
        limits: [{ by: 'ip', limit: 7, windowMs: 500, for: 'any' }],
      },
      { id: 'ws.live_1', match: { path: '/ws/*', websocket: true, caseSensitive: false }, limits: [] },
      { id: 'health', match: { path: '/healthz', websocket: false, caseSensitive: true }, limits: [] },
    ],
    store: {
      type: 'redis',
      memory: { maxKeys: 5000, maxBlocks: 100_000 },
      redis: {
        sentinels: [
          { host: 's1', port: 26379 },
          { host: 's2', port: 26379, password: 'sentinel-pw', tls: true },
        ],
        name: 'mymaster',
        username: 'tollgate',
        password: 'redis-pw',
        tls: true,
        prefix: 'tg:',
        timeoutMs: 75,
        onError: 'deny',
        onErrorStatus: 429,
        clock: 'local',
        expectedReplicas: 3,
        slotLeaseMs: 30_000,
      },
    },
    log: { access: true },
    paths: { escapedSlashes: 'decode' },
    responses: { format: 'problem' },
  };
  assert.deepStrictEqual(policy.config, expected);
  assert.deepEqual(policy.warnings, []);
  assert.equal(policy.file, file);
  assert.equal(policy.hash, createHash('sha256').update(readFileSync(file)).digest('hex'));
});

test('a minimal policy gets every default from types.ts', () => {
  const policy = load(fixture('minimal'), {});
  assert.deepStrictEqual(policy.config, {
    upstreamTimeoutMs: 30_000,
    clientIp: { trustedProxies: [], ipv6Prefix: 64 },
    allow: { ips: [], users: [] },
    defaults: { algorithm: 'sliding-window', mode: 'enforce' },
    routes: [],
    store: { type: 'memory', memory: { maxKeys: 1_000_000, maxBlocks: 100_000 } },
    log: { access: false },
    paths: { escapedSlashes: 'decode' },
    responses: { format: 'envelope' },
  } satisfies PolicyConfig);
});

test('an empty map is a valid policy and routes may be absent', () => {
  const result = loadPolicyText('{}\n', 'inline.yaml', {});
  assert.ok(result.ok);
  if (result.ok) assert.deepEqual(result.policy.config.routes, []);
});

test('store.type redis alone means a local Redis with every default', () => {
  const result = loadPolicyText('store:\n  type: redis\n', 'inline.yaml', {});
  assert.ok(result.ok);
  assert.equal(result.policy.config.store.redis?.url, 'redis://127.0.0.1:6379');
  assert.equal(result.policy.config.store.redis?.onError, 'local');
  assert.equal(result.policy.config.store.redis?.timeoutMs, 50);
});

test('redis defaults are filled in when store.redis is given', () => {
  const result = loadPolicyText('store:\n  type: redis\n  redis:\n    url: rediss://u:p@cache:6380/2\n', 'inline.yaml', {});
  assert.ok(result.ok);
  if (result.ok) {
    assert.deepStrictEqual(result.policy.config.store.redis, {
      url: 'rediss://u:p@cache:6380/2',
      prefix: 'tollgate:',
      timeoutMs: 50,
      onError: 'local',
      onErrorStatus: 503,
      clock: 'redis',
      expectedReplicas: 1,
      slotLeaseMs: 30_000,
    });
  }
});

test('loadPolicyText hashes the text as UTF-8 bytes', () => {
  const text = 'routes: [] # é\n';
  const result = loadPolicyText(text, 'inline.yaml', {});
  assert.ok(result.ok);
  if (result.ok) assert.equal(result.policy.hash, createHash('sha256').update(Buffer.from(text, 'utf8')).digest('hex'));
});

describe('warnings do not stop a load', () => {
  test('a short HS secret', () => {
    const policy = load(fixture('short_jwt_secret'), {});
    assert.deepEqual(policy.warnings.map((w) => `${w.line}:${w.col} ${w.message}`), [
      '4:13 identity.jwt.secret: JWT secret is shorter than 32 bytes; use at least 32 random bytes',
    ]);
  });

  test('a redis section while the store is memory', () => {
    const policy = load(fixture('redis_section_with_memory_store'), {});
    assert.equal(policy.config.store.type, 'memory');
    assert.deepEqual(policy.warnings.map((w) => `${w.line}:${w.col} ${w.message}`), [
      '5:5 store.redis: is ignored because store.type is memory; set store.type: redis to use it',
    ]);
  });
});

test('no message ever contains a secret value', () => {
  const secrets = ['hunter2', 's3cr3t-value', '12345678', 'env-secret-value', 'sentinel-secret-value'];
  const files = ['redis_url_not_redis', 'secret_in_wrong_type'].map(fixture);
  const env = { JWT_SECRET: 'env-secret-value', SENTINEL_PASSWORD: 'sentinel-secret-value' };
  const texts = [
    ...files.map((file) => readFileSync(file, 'utf8')),
    // secret values in places that fail: a number-looking secret, a broken line, a bad URL
    'identity:\n  jwt:\n    secret: ${JWT_SECRET}\n    algorithms: [RS256]\nupstream: ftp://x:hunter2@y\n',
    'store:\n  redis:\n    url: "http://user:hunter2@x\n',
    'store:\n  redis: { sentinels: [{ host: a, port: x, password: "${SENTINEL_PASSWORD}" }] }\n',
  ];
  for (const text of texts) {
    const result = loadPolicyText(text, 'inline.yaml', env);
    assert.equal(result.ok, false);
    if (result.ok) continue;
    for (const issue of result.errors) {
      for (const secret of secrets) assert.ok(!issue.message.includes(secret), `${formatIssue(issue)} leaks ${secret}`);
    }
  }
});

test('the shipped policies.yaml loads without errors or warnings', () => {
  const policy = load(SHIPPED_POLICY, {});
  assert.deepEqual(policy.warnings, []);
  assert.equal(policy.config.upstream, 'http://127.0.0.1:3000');
  assert.deepEqual(policy.config.clientIp.trustedProxies, ['127.0.0.1/32', '::1/128']);
  assert.equal(policy.config.identity?.header, 'x-user-id');
  assert.equal(policy.config.identity?.jwt?.secret, 'tollgate-demo-secret-change-me-0123456789');
  const routes = new Map(policy.config.routes.map((route) => [route.id, route]));
  assert.deepEqual(routes.get('livekit-token')?.match, { path: '/api/livekit/token', methods: ['POST'], caseSensitive: false });
  assert.ok(routes.get('livekit-token')?.limits.every((limit) => limit.for === 'anonymous' || limit.blockMs === 300_000));
  assert.equal(routes.get('session-start')?.match.path, '/api/session/start');
  assert.equal(routes.get('transcription')?.match.path, '/api/transcription/*');
  assert.deepEqual(routes.get('ws-live')?.match, { path: '/ws/live', websocket: true, caseSensitive: false });
});

test('the shipped policies.yaml takes the JWT secret from JWT_SECRET when set', () => {
  const policy = load(SHIPPED_POLICY, { JWT_SECRET: LONG_SECRET });
  assert.equal(policy.config.identity?.jwt?.secret, LONG_SECRET);
});

test('guards, paths and identity.forward load with names normalised and the schema file read', () => {
  const policy = load(fixture('guards_full'), ENV);
  const { config } = policy;
  assert.deepEqual(config.paths, { escapedSlashes: 'reject' });
  assert.deepEqual(config.identity?.forward, { user: 'x-tollgate-user', tier: 'x-tollgate-tier' });
  assert.equal(config.identity?.jwt?.requireExp, false);
  assert.deepEqual(config.defaults.guards, { securityHeaders: 'strict', maxBodySize: 1024 * 1024 });
  const [token, health, guardedOnly] = config.routes;
  const guards = token.guards;
  assert.ok(guards !== undefined && guards !== 'off');
  assert.deepEqual(guards.methods, ['POST']);
  assert.deepEqual(guards.cors, {
    methods: ['POST'],
    headers: ['authorization', 'content-type', 'x-csrf-token'],
    exposeHeaders: ['retry-after', 'ratelimit'],
    credentials: true,
    maxAgeMs: 24 * 3600 * 1000,
  });
  assert.equal(guards.maxBodySize, 16 * 1024);
  assert.deepEqual(guards.contentTypes, ['application/json']);
  assert.equal(guards.body?.schema, 'schemas/token-request.json');
  assert.equal((guards.body?.schemaDocument as { required: string[] }).required[0], 'voice');
  assert.deepEqual(guards.csrf, { cookie: 'csrf_token', header: 'x-csrf-token' });
  assert.deepEqual(guards.securityHeaders, { headers: { 'Permissions-Policy': 'microphone=(self)' }, override: true });
  assert.equal(health.guards, 'off');
  // A route whose only guards come from the defaults may leave out limits.
  assert.equal(guardedOnly.guards, undefined);
  assert.deepEqual(guardedOnly.limits, []);
});

test('a route without guards (own or default) still needs limits; guards: off does not count', () => {
  const result = loadPolicyText('routes:\n  - id: a\n    match: { path: /a }\n    guards: off\n', 'inline.yaml', {});
  assert.equal(result.ok, false);
  if (!result.ok) assert.deepEqual(result.errors.map(formatIssue), ['inline.yaml:2:5 routes[0].limits: is required']);
  assert.ok(loadPolicyText('routes:\n  - id: a\n    match: { path: /a }\n    guards: { methods: [GET] }\n', 'inline.yaml', {}).ok);
});

test('cors needs origins on the effective guards: origins from the defaults are enough', () => {
  const text = 'defaults:\n  guards: { origins: [https://a.example] }\nroutes:\n  - id: a\n    match: { path: /a }\n    guards: { cors: { credentials: true } }\n';
  assert.ok(loadPolicyText(text, 'inline.yaml', {}).ok);
  const off = 'defaults:\n  guards: { cors: {} }\nroutes:\n  - id: a\n    match: { path: /a }\n    guards: { origins: [https://a.example] }\n  - id: b\n    match: { path: /b }\n';
  const result = loadPolicyText(off, 'inline.yaml', {});
  assert.equal(result.ok, false);
  if (!result.ok) {
    assert.deepEqual(result.errors.map(formatIssue), [
      'inline.yaml:2:19 defaults.guards.cors: needs origins (the origins whose preflights are answered); a CORS answer for any origin is never given',
    ]);
  }
});

test('a schema file is part of the content hash, so editing it is a reload', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-schema-'));
  writeFileSync(join(dir, 's.json'), '{"type":"object"}');
  const file = join(dir, 'policies.yaml');
  writeFileSync(file, 'routes:\n  - id: a\n    match: { path: /a }\n    guards: { maxBodySize: 1kb, body: { schema: s.json } }\n');
  const first = load(file, {});
  writeFileSync(join(dir, 's.json'), '{"type":"array"}');
  const second = load(file, {});
  assert.equal(first.hash, second.hash, 'the policy file did not change');
  assert.notEqual(first.contentHash, second.contentHash);
});
