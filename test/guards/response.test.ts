import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { GuardsConfig } from '../../src/config/types.js';
import { answerPreflight, compileGuards, corsOrigin, decorateResponse, isPreflight, wantsHsts, type MutableHeaders } from '../../src/guards/index.js';
import type { CompiledGuards } from '../../src/guards/types.js';

function compiled(config: GuardsConfig): CompiledGuards {
  const guards = compileGuards(config);
  assert.ok(guards !== null);
  return guards;
}

const CORS: GuardsConfig = {
  methods: ['POST'],
  origins: ['https://app.example.com'],
  cors: { methods: ['POST'], headers: ['authorization', 'content-type'], exposeHeaders: ['retry-after', 'ratelimit'], credentials: true, maxAgeMs: 24 * 3600 * 1000 },
};
const APP = 'https://app.example.com';

describe('CORS preflights', () => {
  const guards = compiled(CORS);

  it('a preflight is OPTIONS with Origin and Access-Control-Request-Method', () => {
    assert.equal(isPreflight('OPTIONS', { origin: APP, 'access-control-request-method': 'POST' }), true);
    assert.equal(isPreflight('OPTIONS', { origin: APP }), false);
    assert.equal(isPreflight('OPTIONS', { 'access-control-request-method': 'POST' }), false);
    assert.equal(isPreflight('POST', { origin: APP, 'access-control-request-method': 'POST' }), false);
  });

  it('an allowed origin and method get 204 with the origin itself (never *), the lists, credentials, Max-Age and Vary', () => {
    const answer = answerPreflight(guards, { origin: APP, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type, x-unlisted' });
    assert.deepEqual(answer, {
      status: 204,
      headers: {
        'access-control-allow-origin': APP,
        'access-control-allow-methods': 'POST',
        'access-control-allow-headers': 'authorization, content-type',
        'access-control-allow-credentials': 'true',
        'access-control-max-age': '86400',
        vary: 'Origin',
      },
    });
  });

  it('a disallowed origin: ORIGIN_NOT_ALLOWED; an unlisted method: CORS_METHOD_NOT_ALLOWED', () => {
    assert.deepEqual(answerPreflight(guards, { origin: 'https://evil.example', 'access-control-request-method': 'POST' }), {
      status: 403,
      refusal: { guard: 'origins', code: 'ORIGIN_NOT_ALLOWED', status: 403 },
    });
    assert.deepEqual(answerPreflight(guards, { origin: APP, 'access-control-request-method': 'DELETE' }), {
      status: 403,
      refusal: { guard: 'cors', code: 'CORS_METHOD_NOT_ALLOWED', status: 403 },
    });
  });

  it('cors.methods defaults to the methods guard, else GET, HEAD, POST; no credentials, no Max-Age unless set', () => {
    const fromMethods = compiled({ methods: ['PUT'], origins: [APP], cors: { methods: [], headers: [], exposeHeaders: [], credentials: false } });
    const answer = answerPreflight(fromMethods, { origin: APP, 'access-control-request-method': 'PUT' });
    assert.deepEqual(answer, { status: 204, headers: { 'access-control-allow-origin': APP, 'access-control-allow-methods': 'PUT', vary: 'Origin' } });
    const plain = compiled({ origins: [APP], cors: { methods: [], headers: [], exposeHeaders: [], credentials: false } });
    assert.equal(answerPreflight(plain, { origin: APP, 'access-control-request-method': 'POST' }).status, 204);
    assert.equal(answerPreflight(plain, { origin: APP, 'access-control-request-method': 'PATCH' }).status, 403);
  });
});

describe('response decoration', () => {
  it('CORS headers for an allowed origin replace the upstream own; Origin is appended to Vary', () => {
    const guards = compiled(CORS);
    const headers: MutableHeaders = {
      'content-type': 'application/json',
      'access-control-allow-origin': '*',
      'access-control-allow-methods': 'GET',
      vary: 'Accept-Encoding',
    };
    decorateResponse(guards, headers, corsOrigin(guards, { origin: APP }, true), false);
    assert.deepEqual(headers, {
      'content-type': 'application/json',
      'access-control-allow-origin': APP,
      'access-control-allow-credentials': 'true',
      'access-control-expose-headers': 'retry-after, ratelimit',
      vary: 'Accept-Encoding, Origin',
    });
  });

  it('no Origin or a disallowed one: no CORS headers (the upstream ones removed too), Vary still says Origin', () => {
    const guards = compiled(CORS);
    for (const request of [{}, { origin: 'https://evil.example' }]) {
      const headers: MutableHeaders = { 'access-control-allow-origin': '*', vary: 'origin' };
      decorateResponse(guards, headers, corsOrigin(guards, request, false), false);
      assert.deepEqual(headers, { vary: 'origin' });
    }
    const star: MutableHeaders = { vary: '*' };
    decorateResponse(guards, star, undefined, false);
    assert.equal(star.vary, '*');
  });

  it('origins without cors leave CORS alone', () => {
    const guards = compiled({ origins: [APP], securityHeaders: 'off', methods: ['GET'] });
    const headers: MutableHeaders = { 'access-control-allow-origin': '*' };
    decorateResponse(guards, headers, corsOrigin(guards, { origin: APP }, true), false);
    assert.deepEqual(headers, { 'access-control-allow-origin': '*' });
  });

  it('strict security headers fill in what the upstream lacks; the app own values win; HSTS only over HTTPS', () => {
    const guards = compiled({ securityHeaders: 'strict' });
    const headers: MutableHeaders = { 'x-frame-options': 'SAMEORIGIN', 'cache-control': 'max-age=60' };
    decorateResponse(guards, headers, undefined, false);
    assert.deepEqual(headers, {
      'x-frame-options': 'SAMEORIGIN',
      'cache-control': 'max-age=60',
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'strict-origin-when-cross-origin',
      'content-security-policy': "default-src 'none'; frame-ancestors 'none'",
    });
    assert.ok(!('x-xss-protection' in headers), 'X-XSS-Protection is obsolete');
    const https: MutableHeaders = {};
    decorateResponse(guards, https, undefined, true);
    assert.equal(https['strict-transport-security'], 'max-age=31536000; includeSubDomains');
  });

  it('HTTPS is X-Forwarded-Proto: https from a trusted proxy, the leftmost of a chain', () => {
    const guards = compiled({ securityHeaders: 'strict' });
    assert.equal(wantsHsts(guards, { 'x-forwarded-proto': 'https' }, true), true);
    assert.equal(wantsHsts(guards, { 'x-forwarded-proto': 'HTTPS, http' }, true), true);
    assert.equal(wantsHsts(guards, { 'x-forwarded-proto': 'http, https' }, true), false);
    assert.equal(wantsHsts(guards, { 'x-forwarded-proto': 'https' }, false), false, 'an untrusted peer says nothing');
    assert.equal(wantsHsts(guards, {}, true), false);
    assert.equal(wantsHsts(compiled({ securityHeaders: { headers: { 'X-A': 'b' }, override: false } }), { 'x-forwarded-proto': 'https' }, true), false);
  });

  it('the map form sets exactly its headers; override replaces the upstream values', () => {
    const keep = compiled({ securityHeaders: { headers: { 'Permissions-Policy': 'microphone=(self)', 'X-Frame-Options': 'DENY' }, override: false } });
    const headers: MutableHeaders = { 'x-frame-options': 'SAMEORIGIN' };
    decorateResponse(keep, headers, undefined, true);
    assert.deepEqual(headers, { 'x-frame-options': 'SAMEORIGIN', 'permissions-policy': 'microphone=(self)' });
    const override = compiled({ securityHeaders: { headers: { 'X-Frame-Options': 'DENY' }, override: true } });
    const replaced: MutableHeaders = { 'x-frame-options': 'SAMEORIGIN' };
    decorateResponse(override, replaced, undefined, false);
    assert.deepEqual(replaced, { 'x-frame-options': 'DENY' });
  });
});
