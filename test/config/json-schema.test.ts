import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import { parse } from 'yaml';
import { ENV_REFERENCE_PATTERN, policyJsonSchema, policyJsonSchemaText } from '../../src/config/json-schema.js';
import { formatIssue, loadPolicyText } from '../../src/config/load.js';
import { runCli } from '../helpers/process.js';

const SCHEMA_FILE = fileURLToPath(new URL('../../schema/policies.schema.json', import.meta.url));

type Node = Record<string, unknown>;

/** Every `properties` entry of the schema, with its path (`.routes[].limits[].window`). */
function keysOf(node: unknown, path = ''): { path: string; schema: Node; parent: Node }[] {
  if (typeof node !== 'object' || node === null) return [];
  if (Array.isArray(node)) return node.flatMap((item) => keysOf(item, path));
  const schema = node as Node;
  const found: { path: string; schema: Node; parent: Node }[] = [];
  for (const [name, sub] of Object.entries((schema.properties as Record<string, Node> | undefined) ?? {})) {
    found.push({ path: `${path}.${name}`, schema: sub, parent: schema });
    found.push(...keysOf(sub, `${path}.${name}`));
  }
  for (const key of ['items', 'additionalProperties', 'anyOf', 'oneOf', 'then', 'else']) {
    if (typeof schema[key] === 'object') found.push(...keysOf(schema[key], key === 'items' ? `${path}[]` : path));
  }
  return found;
}

let compiled: ValidateFunction | undefined;
/** The schema compiled with ajv (strict, types too), once per file. */
function validator(): ValidateFunction {
  compiled ??= new Ajv2020({ allErrors: true, strictTypes: true }).compile(policyJsonSchema());
  return compiled;
}

test('schema/policies.schema.json is the generated schema (stale: run `npm run gen:schema`)', () => {
  assert.ok(readFileSync(SCHEMA_FILE, 'utf8') === policyJsonSchemaText(), 'schema/policies.schema.json is out of date: run `npm run gen:schema` and commit the result');
});

test('`tollgate schema` prints schema/policies.schema.json byte for byte', async () => {
  const run = await runCli(['schema']);
  assert.equal(run.code, 0, run.stderr);
  assert.ok(run.stdout === readFileSync(SCHEMA_FILE, 'utf8'));
});

test('the schema is draft 2020-12 and compiles with ajv in strict mode', () => {
  const schema = policyJsonSchema();
  assert.equal(schema.$schema, 'https://json-schema.org/draft/2020-12/schema');
  validator();
});

test('every key has a description and examples, as an editor shows on hover', () => {
  const keys = keysOf(policyJsonSchema());
  assert.ok(keys.length > 100, `${keys.length} keys`);
  const undocumented = keys.filter(({ schema }) => typeof schema.description !== 'string' || schema.description === '').map((k) => k.path);
  assert.deepEqual(undocumented, []);
  const withoutExamples = keys.filter(({ schema }) => !Array.isArray(schema.examples) || schema.examples.length === 0).map((k) => k.path);
  assert.deepEqual(withoutExamples, []);
});

test('every map of keys refuses unknown keys (additionalProperties: false), except maps of names the user chooses', () => {
  const open: string[] = [];
  const visit = (node: unknown, path: string): void => {
    if (typeof node !== 'object' || node === null) return;
    if (Array.isArray(node)) return node.forEach((item) => visit(item, path));
    const schema = node as Node;
    if (schema.properties !== undefined && schema.additionalProperties !== false) open.push(path);
    for (const [key, value] of Object.entries(schema)) {
      if (key === 'properties') for (const [name, sub] of Object.entries(value as Node)) visit(sub, `${path}.${name}`);
      else if (key !== 'examples' && key !== 'default') visit(value, path);
    }
  };
  visit(policyJsonSchema(), '');
  // securityHeaders' map: header names of the user's choice (plus `override`).
  assert.deepEqual(open, ['.defaults.guards.securityHeaders', '.routes.guards.securityHeaders']);
});

test('a key the schema does not know is refused, at the top and deep inside', () => {
  const validate = validator();
  for (const text of ['limts: []\n', 'routes:\n  - id: a\n    match: { path: /a }\n    limits: [{ by: ip, limit: 1, window: 1m, blcok: 5m }]\n']) {
    assert.equal(validate(parse(text)), false, text);
    assert.ok(validate.errors?.some((error) => error.keyword === 'additionalProperties'), JSON.stringify(validate.errors));
  }
});

test('durations, sizes, calendar windows, blocks, costs and `guards: off` are described as written', () => {
  const validate = validator();
  const accepted = `
upstream: http://127.0.0.1:3000
upstreamTimeout: 30s
defaults: { guards: { securityHeaders: strict } }
routes:
  - id: a
    match: { path: /a/*, methods: [POST] }
    guards: { maxBodySize: 16kb, cors: { maxAge: 24h }, origins: [https://app.example.com], securityHeaders: { Permissions-Policy: "microphone=(self)", override: true } }
    limits:
      - { by: user, limit: 10, window: 1m, block: [1m, 10m, 1h], forgetAfter: 24h, tiers: { pro: 30 }, count: { status: [401, "5xx"] } }
      - { by: "header:x-api-key", limit: 100000, window: 1mo, algorithm: fixed-window, timezone: Europe/Berlin, cost: { header: x-usage-tokens, default: 1 } }
      - { by: ip, limit: 600, window: 1w, algorithm: fixed-window, cost: 10, block: 5m }
      - { by: global, concurrent: 4 }
  - id: b
    match: { path: /b, websocket: true }
    guards: off
    limits: [{ by: ip, limit: 1, window: 1s }]
    session: { maxDuration: 2h, maxMessageSize: 1mb, messages: { limit: 600, window: 1m } }
`;
  assert.ok(validate(parse(accepted)), JSON.stringify(validate.errors));
  const refused: Record<string, string> = {
    'a duration without its unit': 'upstreamTimeout: 30\n',
    'a duration with an unknown unit': 'upstreamTimeout: 30sec\n',
    'a calendar window outside a window': 'upstreamTimeout: 1w\n',
    'a size in upper case': 'routes: [{ id: a, match: { path: /a }, guards: { maxBodySize: 1MB } }]\n',
    'a block list of text': 'routes: [{ id: a, match: { path: /a }, limits: [{ by: ip, limit: 1, window: 1m, block: [1m, soon] }] }]\n',
    'a cost of 0': 'routes: [{ id: a, match: { path: /a }, limits: [{ by: ip, limit: 1, window: 1m, cost: 0 }] }]\n',
    'guards neither off nor a map': 'routes: [{ id: a, match: { path: /a }, guards: on }]\n',
    'an unknown algorithm': 'defaults: { algorithm: leaky-bucket }\n',
    'a by that is none': 'routes: [{ id: a, match: { path: /a }, limits: [{ by: cookie, limit: 1, window: 1m }] }]\n',
    'a rate limit without a window': 'routes: [{ id: a, match: { path: /a }, limits: [{ by: ip, limit: 1 }] }]\n',
  };
  for (const [what, text] of Object.entries(refused)) assert.equal(validate(parse(text)), false, what);
});

test('a number or boolean may be a ${VAR} reference, in the schema as when loaded', () => {
  const validate = validator();
  const text = `
upstream: \${UPSTREAM:-http://127.0.0.1:3000}
upstreamTimeout: \${UPSTREAM_TIMEOUT:-30s}
clientIp:
  ipv6Prefix: \${IPV6_PREFIX}
log:
  access: \${ACCESS_LOG:-false}
routes:
  - id: a
    match: { path: /a }
    limits:
      - by: ip
        limit: \${LIMIT}
        window: 1m
        algorithm: \${ALGORITHM:-fixed-window}
store:
  type: \${STORE:-memory}
`;
  assert.ok(validate(parse(text)), JSON.stringify(validate.errors));
  const loaded = loadPolicyText(text, 'env.yaml', { IPV6_PREFIX: '56', LIMIT: '20' });
  assert.ok(loaded.ok, loaded.ok ? '' : loaded.errors.map(formatIssue).join('\n'));
  assert.equal(loaded.policy.config.routes[0].limits[0].limit, 20);
  assert.equal(loaded.policy.config.clientIp.ipv6Prefix, 56);
  // The reference is what env.ts expands: a malformed one is refused by both.
  assert.equal(new RegExp(ENV_REFERENCE_PATTERN).test('${LIMIT'), false);
  assert.equal(validate(parse('clientIp: { ipv6Prefix: "${1X}" }\n')), false);
  assert.equal(loadPolicyText('clientIp:\n  ipv6Prefix: ${1X}\n', 'env.yaml', {}).ok, false);
});
