import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { Page } from 'playwright-core';
import { browserUnavailable, launchBrowser, type TestBrowser } from '../helpers/browser.js';
import { startTollgate, type TestTollgate } from '../helpers/tollgate.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';

const skip = browserUnavailable();

/** A page server: any path answers a blank HTML page, so each port is an origin to run fetch from. */
async function startPages(): Promise<{ server: http.Server; port: number }> {
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end('<!doctype html><title>page</title><p>tollgate browser test</p>');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port };
}

function closeServer(server: http.Server): Promise<void> {
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

interface FetchResult {
  status?: number;
  retryAfter?: string | null;
  json?: unknown;
  error?: string;
}

/** `fetch` with credentials from inside `page`, as a page script would. */
function pageFetch(page: Page, url: string, init: { headers?: Record<string, string>; body?: string } = {}): Promise<FetchResult> {
  return page.evaluate(
    async ({ url, init }) => {
      try {
        const res = await fetch(url, { method: 'POST', credentials: 'include', headers: init.headers, body: init.body });
        return { status: res.status, retryAfter: res.headers.get('retry-after'), json: await res.json() };
      } catch (error) {
        return { error: String(error) };
      }
    },
    { url, init },
  );
}

/** Opens a WebSocket from inside `page`; 'open' after an echoed message, else how it failed. */
function pageWebSocket(page: Page, url: string): Promise<string> {
  return page.evaluate(
    (url) =>
      new Promise<string>((resolve) => {
        const ws = new WebSocket(url);
        const timer = setTimeout(() => resolve('timeout'), 5_000);
        ws.onopen = () => ws.send('ping');
        ws.onmessage = (event) => {
          clearTimeout(timer);
          ws.close();
          resolve(`echo:${String(event.data)}`);
        };
        ws.onerror = () => {
          clearTimeout(timer);
          resolve('refused');
        };
      }),
    url,
  );
}

const JSON_REQUEST = { headers: { 'content-type': 'application/json', authorization: 'Bearer not-a-session' }, body: '{"voice":"alloy"}' };

describe('a real browser against Tollgate on another origin', { skip, timeout: 120_000 }, () => {
  let upstream: EchoUpstream;
  let allowedPages: { server: http.Server; port: number };
  let foreignPages: { server: http.Server; port: number };
  let tg: TestTollgate;
  let browser: TestBrowser;
  let page: Page;
  /** Tollgate as the page sees it: another host than the page's 127.0.0.1, so every call is cross-origin. */
  let api: string;
  let allowed: string;
  let foreign: string;

  before(async () => {
    upstream = await startEchoUpstream();
    allowedPages = await startPages();
    foreignPages = await startPages();
    allowed = `http://127.0.0.1:${allowedPages.port}`;
    foreign = `http://127.0.0.1:${foreignPages.port}`;
    const cors = `cors: { methods: [POST], headers: [authorization, content-type], exposeHeaders: [retry-after, ratelimit], credentials: true, maxAge: 10m }`;
    tg = await startTollgate(
      `
log: { access: true }
defaults:
  guards: { securityHeaders: strict }
routes:
  - id: token
    match: { path: /api/token }
    guards: { methods: [POST], origins: ["${allowed}"], ${cors} }
    limits:
      - { by: ip, limit: 2, window: 1m }
  - id: cached
    match: { path: /api/cached }
    guards: { methods: [POST], origins: ["${allowed}"], ${cors} }
    limits:
      - { by: ip, limit: 100, window: 1m }
  - id: ws
    match: { path: /ws/live, websocket: true }
    guards: { origins: ["${allowed}"] }
    limits:
      - { by: ip, limit: 100, window: 1m }
`,
      { upstream: upstream.url },
    );
    api = `http://localhost:${tg.tollgate.proxyAddress.port}`;
    browser = await launchBrowser();
    page = await browser.context.newPage();
  });
  after(async () => {
    await browser?.close();
    await tg?.close();
    if (allowedPages !== undefined) await closeServer(allowedPages.server);
    if (foreignPages !== undefined) await closeServer(foreignPages.server);
    await upstream?.close();
  });

  const preflights = (path: string): number => tg.logs.events('access').filter((l) => l.method === 'OPTIONS' && l.path === path).length;

  it('the allowed origin reads the JSON and, after the limit, the 429 status and Retry-After', async () => {
    await page.goto(`${allowed}/`);
    const first = await pageFetch(page, `${api}/api/token`, JSON_REQUEST);
    assert.equal(first.status, 200, JSON.stringify(first));
    assert.equal((first.json as { body: string }).body, '{"voice":"alloy"}');
    assert.equal((await pageFetch(page, `${api}/api/token`, JSON_REQUEST)).status, 200);
    const limited = await pageFetch(page, `${api}/api/token`, JSON_REQUEST);
    assert.equal(limited.status, 429, JSON.stringify(limited));
    assert.ok(Number(limited.retryAfter) >= 1, `Retry-After readable: ${String(limited.retryAfter)}`);
    assert.equal((limited.json as { error: { code: string } }).error.code, 'RATE_LIMIT_EXCEEDED');
  });

  it('a repeated call within Max-Age sends no second preflight', async () => {
    await page.goto(`${allowed}/`);
    const before = upstream.seen.length;
    for (let i = 0; i < 3; i++) assert.equal((await pageFetch(page, `${api}/api/cached`, JSON_REQUEST)).status, 200);
    assert.equal(preflights('/api/cached'), 1);
    assert.equal(upstream.seen.length, before + 3, 'the upstream saw the calls, never a preflight');
    assert.ok(upstream.seen.every((s) => s.method !== 'OPTIONS'));
  });

  it("a disallowed origin's fetch fails in the browser, preflighted or simple, and never reaches the upstream", async () => {
    await page.goto(`${foreign}/`);
    const before = upstream.seen.length;
    const preflighted = await pageFetch(page, `${api}/api/cached`, JSON_REQUEST);
    assert.match(String(preflighted.error), /TypeError/, JSON.stringify(preflighted));
    // text/plain without custom headers: no preflight; Tollgate's origin check refuses it.
    const simple = await pageFetch(page, `${api}/api/cached`, { body: 'hello' });
    assert.match(String(simple.error), /TypeError/, JSON.stringify(simple));
    assert.equal(upstream.seen.length, before);
  });

  it('new WebSocket() from a disallowed origin is refused, from the allowed one it echoes', async () => {
    const url = `${api.replace('http:', 'ws:')}/ws/live`;
    await page.goto(`${foreign}/`);
    assert.equal(await pageWebSocket(page, url), 'refused');
    await page.goto(`${allowed}/`);
    assert.equal(await pageWebSocket(page, url), 'echo:ping');
  });
});
