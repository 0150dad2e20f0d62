/**
 * src/proxy/responses.ts: the one renderer of Tollgate's own bodies (envelope or RFC 9457
 * problem details) and the Accept negotiation between them. Over sockets: problem.test.ts.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ERRORS, type ErrorCode } from '../../src/proxy/errors.js';
import { errorResponse, render, responseFormat } from '../../src/proxy/responses.js';

const README = readFileSync(fileURLToPath(new URL('../../README.md', import.meta.url)), 'utf8');

describe('responseFormat', () => {
  it('keeps the configured format without an Accept, with */* and with plain JSON', () => {
    for (const accept of [undefined, '*/*', 'application/json', 'text/html,application/xhtml+xml,*/*;q=0.8', 'application/json, text/plain, */*']) {
      assert.equal(responseFormat('envelope', accept), 'envelope', String(accept));
      assert.equal(responseFormat('problem', accept), 'problem', String(accept));
    }
  });

  it('gives problem details to a client that prefers application/problem+json, q-values honoured', () => {
    const cases: [string, 'envelope' | 'problem'][] = [
      ['application/problem+json', 'problem'],
      ['Application/Problem+JSON', 'problem'],
      ['application/problem+json, application/json;q=0.9', 'problem'],
      ['application/json;q=0.5, application/problem+json', 'problem'],
      ['application/problem+json, */*;q=0.1', 'problem'],
      ['application/json, application/problem+json', 'envelope'], // equal: the configured one
      ['application/problem+json;q=0.1, application/json', 'envelope'],
      ['application/problem+json;q=0.5, application/*', 'envelope'],
      ['application/problem+json;q=0, */*', 'envelope'],
      ['application/problem+json, */*', 'envelope'], // */* covers application/json at q=1 too
      ['text/problem', 'envelope'],
    ];
    for (const [accept, format] of cases) assert.equal(responseFormat('envelope', accept), format, accept);
  });
});

describe('render', () => {
  it('envelope: the body Tollgate always sent', () => {
    assert.equal(
      render(errorResponse('UPSTREAM_TIMEOUT', 'req-1'), 'envelope'),
      '{"success":false,"error":{"code":"UPSTREAM_TIMEOUT","message":"Upstream service timed out","details":{"requestId":"req-1"}}}',
    );
  });

  it('problem: type, title, status, detail, requestId, and retryAfter from the Retry-After the response carries', () => {
    assert.deepEqual(JSON.parse(render(errorResponse('RATE_LIMITER_UNAVAILABLE', 'req-2', 503, { 'retry-after': '1' }), 'problem')), {
      type: 'tag:tollgate,2026:rate-limiter-unavailable',
      title: 'Rate limiter unavailable, please retry shortly',
      status: 503,
      detail: 'Rate limiter unavailable, please retry shortly',
      requestId: 'req-2',
      retryAfter: 1,
    });
  });

  it('every code the proxy answers with has a stable problem type, documented in README', () => {
    const types = new Set<string>();
    for (const [code, error] of Object.entries(ERRORS) as [ErrorCode, { type?: string }][]) {
      if (code.startsWith('ADMIN_')) {
        assert.equal(error.type, undefined, `${code}: the admin API answers in the envelope`);
        continue;
      }
      assert.ok(error.type !== undefined && !types.has(error.type), code);
      types.add(error.type);
      assert.match(README, new RegExp(`^\\| \`${code}\` \\| [^\\n]*\\| \`${error.type.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\` \\|`, 'm'), `${code} with its type in README's errors table`);
    }
    assert.equal(ERRORS.RATE_LIMIT_EXCEEDED.type, 'https://iana.org/assignments/http-problem-types#quota-exceeded');
  });
});
