import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { request, statuses } from '../helpers/http.js';
import { sampleValue } from '../helpers/metrics.js';
import { startWithEcho, type TollgateWithEcho } from '../helpers/tollgate.js';

const POLICY = `
upstream: http://127.0.0.1:9
routes:
  - id: keyed
    match: { path: /keyed }
    limits:
      - { by: header:x-api-key, limit: 1, window: 1m, block: 5m }
`;

describe('the memory bound', () => {
  let tg: TollgateWithEcho;

  before(async () => {
    tg = await startWithEcho(POLICY, { store: { memory: { maxKeys: 50 } } });
  });
  after(() => tg.close());

  it('a flood of distinct keys past maxKeys does not lift a running block', async () => {
    const victim = { 'x-api-key': 'abuser' };
    assert.deepEqual(await statuses(tg.url, '/keyed', 2, { headers: victim }), [200, 429]);
    // 200 new keys evict every counter, the abuser's included.
    for (let i = 0; i < 200; i++) {
      assert.equal((await request(tg.url, '/keyed', { headers: { 'x-api-key': `flood-${i}` } })).status, 200);
    }
    const evictions = sampleValue(await tg.scrape(), 'tollgate_store_evictions_total') ?? 0;
    assert.ok(evictions >= 150, `evictions counted (${evictions})`);
    assert.equal(tg.logs.events('store_eviction').length >= 1, true, 'eviction under pressure is logged');

    tg.clock.advance(4 * 60_000); // 1 minute of the block left; the window is long over
    const still = await request(tg.url, '/keyed', { headers: victim });
    assert.equal(still.status, 429);
    assert.equal(still.headers['retry-after'], '60');
    tg.clock.advance(60_000);
    assert.equal((await request(tg.url, '/keyed', { headers: victim })).status, 200);
  });
});
