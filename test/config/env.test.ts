import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { expandString } from '../../src/config/env.js';
import { loadPolicyFile, loadPolicyText } from '../../src/config/load.js';

const fixture = (name: string) => fileURLToPath(new URL(`../fixtures/config/${name}.yaml`, import.meta.url));

describe('expandString', () => {
  test('replaces ${VAR} and keeps the text around it', () => {
    assert.deepEqual(expandString('http://${HOST}:${PORT}/x', { HOST: 'h', PORT: '80' }), { text: 'http://h:80/x', errors: [] });
  });

  test('uses the default when the variable is unset or empty, like the shell', () => {
    assert.equal(expandString('${A:-fallback}', {}).text, 'fallback');
    assert.equal(expandString('${A:-fallback}', { A: '' }).text, 'fallback');
    assert.equal(expandString('${A:-fallback}', { A: 'set' }).text, 'set');
    assert.equal(expandString('${A:-}', {}).text, '');
    assert.equal(expandString('${A:-redis://127.0.0.1:6379}', {}).text, 'redis://127.0.0.1:6379');
  });

  test('an empty variable without a default is empty text', () => {
    assert.deepEqual(expandString('${A}', { A: '' }), { text: '', errors: [] });
  });

  test('reports every unset or malformed reference without revealing values', () => {
    assert.deepEqual(expandString('${A}-${B}', { C: 'secret' }).errors, [
      'environment variable A is not set',
      'environment variable B is not set',
    ]);
    assert.deepEqual(expandString('${my-var}', {}).errors, ['malformed environment variable reference (write ${NAME} or ${NAME:-default})']);
    assert.deepEqual(expandString('abc${NAME', {}).errors, ['unterminated "${" (write ${NAME} or ${NAME:-default})']);
  });

  test('leaves text without references alone, including a lone $', () => {
    assert.deepEqual(expandString('price: $5 {x}', {}), { text: 'price: $5 {x}', errors: [] });
  });
});

describe('${VAR} in a policy file', () => {
  const env = {
    UPSTREAM_HOST: 'backend',
    CASE_SENSITIVE: 'true',
    GREETING: '42',
    MODE: 'shadow',
    LIMIT: '20',
    WINDOW: '',
    LIMIT_BY: 'header:X-Key',
    PREFIX_NAME: 'app',
  };

  test('is expanded in values, re-typed when the whole unquoted value is one reference', () => {
    const result = loadPolicyFile(fixture('env_expansion'), env);
    assert.ok(result.ok, result.ok ? '' : JSON.stringify(result.errors));
    if (!result.ok) return;
    const { config } = result.policy;
    assert.equal(config.upstream, 'http://backend:3000'); // text around a reference stays text
    assert.equal(config.upstreamTimeoutMs, 15_000); // default of an unset variable
    const route = config.routes[0];
    assert.equal(route.match.caseSensitive, true); // "true" became a boolean
    assert.equal(route.message, '42'); // quoted: stays text
    assert.equal(route.mode, 'shadow');
    assert.deepEqual(route.limits[0], { by: 'ip', limit: 20, windowMs: 60_000, for: 'any' }); // "20" became 20; empty WINDOW took the default
    assert.deepEqual(route.limits[1], { by: 'header:x-key', limit: 5, windowMs: 3_600_000, for: 'any' });
    assert.equal(config.store.redis?.url, 'redis://127.0.0.1:6379');
    assert.equal(config.store.redis?.prefix, 'app-x');
  });

  test('an unset variable is an error at its scalar, one per reference', () => {
    const result = loadPolicyFile(fixture('unset_env_vars'), {});
    assert.equal(result.ok, false);
    if (result.ok) return;
    assert.deepEqual(
      result.errors.map((issue) => `${issue.line}:${issue.col} ${issue.message}`),
      [
        '1:11 environment variable UPSTREAM_HOST is not set',
        '7:16 environment variable LIMIT is not set',
        '8:17 environment variable WINDOW is not set',
        '9:38 unterminated "${" (write ${NAME} or ${NAME:-default})',
      ],
    );
  });

  test('the secret from the environment is used, and its absence is named', () => {
    const missing = loadPolicyFile(fixture('unset_env_var'), {});
    assert.equal(missing.ok, false);
    if (!missing.ok) assert.deepEqual(missing.errors.map((i) => `${i.line}:${i.col} ${i.message}`), ['3:13 environment variable JWT_SECRET is not set']);
    const present = loadPolicyFile(fixture('unset_env_var'), { JWT_SECRET: 'x'.repeat(32) });
    assert.ok(present.ok);
    if (present.ok) assert.equal(present.policy.config.identity?.jwt?.secret, 'x'.repeat(32));
  });

  test('keys are never expanded', () => {
    const result = loadPolicyText('${KEY}: 1\n', 'inline.yaml', { KEY: 'log' });
    assert.equal(result.ok, false);
    if (!result.ok) assert.equal(result.errors[0].message.startsWith('unknown key "${KEY}"'), true);
  });

  test('a value that only looks like YAML syntax stays text', () => {
    const result = loadPolicyText('routes:\n  - id: api\n    match:\n      path: /x\n    message: ${MSG}\n    limits: []\n', 'inline.yaml', {
      MSG: 'a: b # not a map',
    });
    assert.ok(result.ok);
    if (result.ok) assert.equal(result.policy.config.routes[0].message, 'a: b # not a map');
  });

  test('an expanded value is validated like a written one, without quoting it', () => {
    const result = loadPolicyText('upstreamTimeout: ${T}\n', 'inline.yaml', { T: 'soon' });
    assert.equal(result.ok, false);
    if (!result.ok) {
      assert.deepEqual(result.errors.map((i) => `${i.line}:${i.col} ${i.message}`), [
        '1:18 upstreamTimeout: invalid duration "soon" (use 500ms, 30s, 1m, 2h, 1d)',
      ]);
    }
  });
});
