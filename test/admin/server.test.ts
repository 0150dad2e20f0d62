/**
 * The admin listener (src/admin/server.ts) over real sockets: /healthz, /readyz,
 * /metrics, /config, 405 for anything but GET/HEAD, 404 for anything else. Its inputs
 * (readiness, the active policy, the registry) are the test's, so each answer is
 * checked against what it was given.
 */
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import { createAdminServer } from '../../src/admin/server.js';
import { createMetrics, type Metrics } from '../../src/observability/metrics.js';
import { request, type Reply } from '../helpers/http.js';
import { metricTypes, sampleValue } from '../helpers/metrics.js';
import { startServer, type Upstream } from '../helpers/upstream.js';

/** Every answer is a complete, uncached body of the stated length. */
function assertWellFormed(reply: Reply): void {
  assert.equal(reply.headers['cache-control'], 'no-store');
  assert.equal(Number(reply.headers['content-length']), Buffer.byteLength(reply.body));
}

describe('admin server', () => {
  let metrics: Metrics;
  let ready = true;
  let config: unknown = {};
  let admin: Upstream;

  before(async () => {
    metrics = createMetrics({ defaultMetrics: false });
    admin = await startServer(createAdminServer({ metrics, ready: () => ready, config: () => config }));
  });
  beforeEach(() => {
    ready = true;
    config = {};
  });
  after(() => admin.close());

  it('/healthz answers 200 ok, ready or not (liveness never depends on readiness)', async () => {
    for (const state of [true, false]) {
      ready = state;
      const reply = await request(admin.url, '/healthz');
      assert.equal(reply.status, 200);
      assert.equal(reply.body, 'ok\n');
      assert.match(String(reply.headers['content-type']), /^text\/plain/);
      assertWellFormed(reply);
    }
  });

  it('/readyz follows ready(): 200 ready, 503 not ready, asked at each request', async () => {
    const first = await request(admin.url, '/readyz');
    assert.deepEqual([first.status, first.body], [200, 'ready\n']);
    ready = false;
    const draining = await request(admin.url, '/readyz');
    assert.deepEqual([draining.status, draining.body], [503, 'not ready\n']);
    assertWellFormed(draining);
    ready = true;
    assert.equal((await request(admin.url, '/readyz')).status, 200);
  });

  it('/metrics is the registry in the Prometheus text format', async () => {
    metrics.configValid.set(1);
    metrics.configReloads.inc({ result: 'failure' });
    const reply = await request(admin.url, '/metrics');
    assert.equal(reply.status, 200);
    assert.equal(reply.headers['content-type'], metrics.registry.contentType);
    assertWellFormed(reply);
    assert.equal(reply.body, await metrics.registry.metrics());
    assert.equal(sampleValue(reply.body, 'tollgate_config_valid'), 1);
    assert.equal(sampleValue(reply.body, 'tollgate_config_reloads_total', { result: 'failure' }), 1);
    assert.equal(metricTypes(reply.body).get('tollgate_config_reloads_total'), 'counter');
  });

  it('/config is config() as JSON, read at each request', async () => {
    config = { hash: 'abc', policy: { routes: [{ id: 'r' }] }, secret: '[redacted]' };
    const reply = await request(admin.url, '/config');
    assert.equal(reply.status, 200);
    assert.match(String(reply.headers['content-type']), /^application\/json/);
    assertWellFormed(reply);
    assert.deepEqual(JSON.parse(reply.body), config);
    config = { hash: 'def' };
    assert.deepEqual(JSON.parse((await request(admin.url, '/config')).body), { hash: 'def' });
  });

  it('the query string does not change the route', async () => {
    assert.equal((await request(admin.url, '/healthz?verbose=1')).status, 200);
    ready = false;
    assert.equal((await request(admin.url, '/readyz?x')).status, 503);
  });

  it('HEAD is answered like GET, without a body', async () => {
    const reply = await request(admin.url, '/healthz', { method: 'HEAD' });
    assert.equal(reply.status, 200);
    assert.equal(reply.body, '');
    assert.equal(reply.headers['content-length'], String(Buffer.byteLength('ok\n')));
  });

  it('any other method is 405, on every path, and changes nothing', async () => {
    for (const method of ['POST', 'PUT', 'DELETE', 'PATCH']) {
      for (const path of ['/healthz', '/readyz', '/metrics', '/config', '/nope']) {
        const reply = await request(admin.url, path, { method, body: '{}' });
        assert.equal(reply.status, 405, `${method} ${path}`);
        assert.equal(reply.body, 'method not allowed\n');
        assertWellFormed(reply);
      }
    }
  });

  it('an unknown path is 404', async () => {
    for (const path of ['/', '/nope', '/healthz/', '/metrics/extra', '/CONFIG']) {
      const reply = await request(admin.url, path);
      assert.equal(reply.status, 404, path);
      assert.equal(reply.body, 'not found\n');
      assertWellFormed(reply);
    }
  });
});

describe('admin server with a failing registry', () => {
  it('/metrics answers 500 instead of hanging or crashing', async (t) => {
    const metrics = createMetrics({ defaultMetrics: false });
    const broken = { ...metrics, registry: Object.assign(Object.create(metrics.registry), { metrics: () => Promise.reject(new Error('collect failed')) }) };
    const admin = await startServer(createAdminServer({ metrics: broken, ready: () => true, config: () => ({}) }));
    t.after(() => admin.close());
    const reply = await request(admin.url, '/metrics');
    assert.deepEqual([reply.status, reply.body], [500, 'metrics unavailable\n']);
    assert.equal((await request(admin.url, '/healthz')).status, 200, 'the listener still answers');
  });
});
