import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { GuardsConfig } from '../../src/config/types.js';
import { checkAccess, checkBody, checkHead, compileGuards, mergeGuards, needsBody } from '../../src/guards/index.js';
import { constantTimeEqual } from '../../src/guards/checks.js';
import type { CompiledGuards } from '../../src/guards/types.js';
import { ANONYMOUS } from '../../src/policy/types.js';

function compiled(config: GuardsConfig): CompiledGuards {
  const guards = compileGuards(config);
  assert.ok(guards !== null);
  return guards;
}

const JSON_HEADERS = { 'content-type': 'application/json', 'content-length': '2' };

describe('guard checks', () => {
  it('a route without guards, or with only securityHeaders: off, compiles to null', () => {
    assert.equal(compileGuards(undefined), null);
    assert.equal(compileGuards({}), null);
    assert.equal(compileGuards({ securityHeaders: 'off' }), null);
    assert.equal(compileGuards({ auth: 'optional' }), null);
    assert.notEqual(compileGuards({ securityHeaders: 'strict' }), null);
  });

  it('methods: 405 with Allow; GET covers HEAD', () => {
    const guards = compiled({ methods: ['GET', 'POST'] });
    assert.equal(checkHead(guards, 'GET', {}), null);
    assert.equal(checkHead(guards, 'HEAD', {}), null);
    const refusal = checkHead(guards, 'DELETE', {});
    assert.deepEqual(refusal, { guard: 'methods', code: 'METHOD_NOT_ALLOWED', status: 405, headers: { allow: 'GET, POST, HEAD' } });
    assert.equal(checkHead(guards, 'OPTIONS', { origin: 'https://a.example', 'access-control-request-method': 'POST' })?.code, 'METHOD_NOT_ALLOWED', 'without cors OPTIONS is a method');
  });

  it('origins: listed passes, others 403; no Origin passes unless requireOrigin', () => {
    const guards = compiled({ origins: ['https://a.example'] });
    assert.equal(checkHead(guards, 'POST', { origin: 'https://a.example' }), null);
    assert.equal(checkHead(guards, 'POST', {}), null);
    assert.deepEqual(checkHead(guards, 'POST', { origin: 'https://b.example' }), { guard: 'origins', code: 'ORIGIN_NOT_ALLOWED', status: 403 });
    assert.equal(checkHead(guards, 'POST', { origin: 'null' })?.code, 'ORIGIN_NOT_ALLOWED');
    const strict = compiled({ origins: ['https://a.example'], requireOrigin: true });
    assert.equal(checkHead(strict, 'POST', {})?.code, 'ORIGIN_NOT_ALLOWED');
    assert.equal(checkHead(strict, 'POST', { origin: 'https://a.example' }), null);
  });

  it('maxBodySize by Content-Length before anything is read', () => {
    const guards = compiled({ maxBodySize: 10 });
    assert.equal(checkHead(guards, 'POST', { 'content-length': '10' }), null);
    assert.deepEqual(checkHead(guards, 'POST', { 'content-length': '11' }), { guard: 'maxBodySize', code: 'PAYLOAD_TOO_LARGE', status: 413 });
    assert.equal(checkHead(guards, 'POST', { 'transfer-encoding': 'chunked' }), null, 'a chunked body is counted while it streams');
  });

  it('contentTypes: the media type without parameters, any case; a body needs one; no body passes', () => {
    const guards = compiled({ contentTypes: ['application/json'] });
    for (const type of ['application/json', 'application/json; charset=utf-8', 'Application/JSON ;charset=UTF-8']) {
      assert.equal(checkHead(guards, 'POST', { 'content-type': type, 'content-length': '2' }), null, type);
    }
    for (const type of ['text/plain', 'application/jsonx', 'application/json-patch+json', undefined]) {
      assert.equal(checkHead(guards, 'POST', { 'content-type': type, 'content-length': '2' })?.code, 'UNSUPPORTED_MEDIA_TYPE', String(type));
    }
    assert.equal(checkHead(guards, 'POST', { 'content-type': 'text/plain', 'transfer-encoding': 'chunked' })?.status, 415);
    assert.equal(checkHead(guards, 'POST', { 'content-length': '0' }), null, 'Content-Length: 0 is no body');
    assert.equal(checkHead(guards, 'GET', {}), null);
  });

  it('head checks run in order: methods, origins, maxBodySize, contentTypes', () => {
    const guards = compiled({ methods: ['POST'], origins: ['https://a.example'], maxBodySize: 1, contentTypes: ['application/json'] });
    const bad = { origin: 'https://b.example', 'content-length': '5', 'content-type': 'text/plain' };
    assert.equal(checkHead(guards, 'PUT', bad)?.guard, 'methods');
    assert.equal(checkHead(guards, 'POST', bad)?.guard, 'origins');
    assert.equal(checkHead(guards, 'POST', { ...bad, origin: 'https://a.example' })?.guard, 'maxBodySize');
    assert.equal(checkHead(guards, 'POST', { ...bad, origin: 'https://a.example', 'content-length': '1' })?.guard, 'contentTypes');
  });

  it('body: read when there is one or a POST/PUT/PATCH expects one; empty bodies of those are missing', () => {
    const guards = compiled({ maxBodySize: 100, body: { json: true } });
    assert.equal(needsBody(guards, 'POST', {}), true);
    assert.equal(needsBody(guards, 'GET', {}), false);
    assert.equal(needsBody(guards, 'GET', JSON_HEADERS), true);
    assert.equal(needsBody(compiled({ maxBodySize: 100 }), 'POST', JSON_HEADERS), false, 'no body guard: streamed, never buffered');
    assert.equal(checkBody(guards, 'POST', Buffer.from('{}')), null);
    assert.deepEqual(checkBody(guards, 'POST', Buffer.from('{')), { guard: 'body', code: 'INVALID_BODY', status: 400, details: { errors: [{ path: '', message: 'must be valid JSON' }] } });
    assert.deepEqual(checkBody(guards, 'POST', Buffer.alloc(0))?.details, { errors: [{ path: '', message: 'a JSON body is required' }] });
    assert.equal(checkBody(guards, 'DELETE', Buffer.alloc(0)), null);
  });

  it('csrf: unsafe methods need a non-empty cookie and an equal header', () => {
    const guards = compiled({ csrf: { cookie: 'csrf_token', header: 'x-csrf-token' } });
    const ok = { cookie: 'theme=dark; csrf_token=abc123', 'x-csrf-token': 'abc123' };
    for (const method of ['POST', 'PUT', 'PATCH', 'DELETE']) {
      assert.equal(checkAccess(guards, method, ok, ANONYMOUS), null, method);
      assert.deepEqual(checkAccess(guards, method, { ...ok, 'x-csrf-token': 'abc124' }, ANONYMOUS), { guard: 'csrf', code: 'CSRF_TOKEN_INVALID', status: 403 });
    }
    for (const headers of [
      { cookie: 'csrf_token=abc123' },
      { 'x-csrf-token': 'abc123' },
      { cookie: 'csrf_token=', 'x-csrf-token': '' },
      { cookie: 'csrf_token=abc123', 'x-csrf-token': 'abc1234' },
      { cookie: 'other=abc123', 'x-csrf-token': 'abc123' },
    ]) {
      assert.equal(checkAccess(guards, 'POST', headers, ANONYMOUS)?.code, 'CSRF_TOKEN_INVALID', JSON.stringify(headers));
    }
    assert.equal(checkAccess(guards, 'GET', {}, ANONYMOUS), null, 'safe methods need no token');
  });

  it('auth: required refuses anonymous with WWW-Authenticate, invalid_token when a token failed', () => {
    const guards = compiled({ auth: 'required' });
    assert.equal(checkAccess(guards, 'POST', {}, { userId: 'alice' }), null);
    assert.deepEqual(checkAccess(guards, 'POST', {}, ANONYMOUS), { guard: 'auth', code: 'AUTH_REQUIRED', status: 401, headers: { 'www-authenticate': 'Bearer' } });
    assert.equal(checkAccess(guards, 'POST', {}, { tokenPresented: true, tokenError: true })?.headers?.['www-authenticate'], 'Bearer error="invalid_token"');
    assert.equal(checkAccess(guards, 'POST', {}, { tokenPresented: true })?.headers?.['www-authenticate'], 'Bearer', 'unchecked (JWKS down) is not an invalid token');
  });

  it('csrf is checked before auth', () => {
    const guards = compiled({ csrf: { cookie: 'c', header: 'x-c' }, auth: 'required' });
    assert.equal(checkAccess(guards, 'POST', {}, ANONYMOUS)?.guard, 'csrf');
  });

  it('constant-time equality is exact, for unequal lengths too', () => {
    assert.equal(constantTimeEqual('abc', 'abc'), true);
    assert.equal(constantTimeEqual('abc', 'abd'), false);
    assert.equal(constantTimeEqual('abc', 'abcd'), false);
    assert.equal(constantTimeEqual('abcd', 'abc'), false);
    assert.equal(constantTimeEqual('é', 'e\u0301'), false);
  });

  it('defaults merge key by key; the route wins per key; off turns them off', () => {
    const defaults: GuardsConfig = { securityHeaders: 'strict', maxBodySize: 1000, origins: ['https://a.example'] };
    assert.deepEqual(mergeGuards(defaults, { maxBodySize: 10, methods: ['POST'] }), { securityHeaders: 'strict', maxBodySize: 10, origins: ['https://a.example'], methods: ['POST'] });
    assert.deepEqual(mergeGuards(defaults, undefined), defaults);
    assert.equal(mergeGuards(defaults, 'off'), undefined);
    assert.deepEqual(mergeGuards(undefined, { auth: 'required' }), { auth: 'required' });
    assert.equal(mergeGuards(defaults, { securityHeaders: 'off' })?.securityHeaders, 'off');
  });
});
