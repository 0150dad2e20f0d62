import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startTollgate, type TestTollgate } from '../helpers/tollgate.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';
import { request, statuses } from './client.js';

const POLICY = `
upstream: http://127.0.0.1:9
routes:
  - id: keyed
    match: { path: /keyed }
    limits:
      - { by: header:x-api-key, limit: 1, window: 1m, block: 5m }
store:
  type: memory
  memory:
    maxKeys: 50
`;

describe('the memory bound', () => {
  let upstream: EchoUpstream;
  let tg: TestTollgate;

  before(async () => {
    upstream = await startEchoUpstream();
    tg = await startTollgate(POLICY, { upstream: upstream.url });
  });
  after(async () => {
    await tg.close();
    await upstream.close();
  });

  it('a flood of distinct keys past maxKeys does not lift a running block', async () => {
    const victim = { 'x-api-key': 'abuser' };
    assert.deepEqual(await statuses(tg.url, '/keyed', 2, { headers: victim }), [200, 429]);
    // 200 new keys evict every counter, the abuser's included.
    for (let i = 0; i < 200; i++) {
      assert.equal((await request(tg.url, '/keyed', { headers: { 'x-api-key': `flood-${i}` } })).status, 200);
    }
    const evictions = await metricValue(tg, 'tollgate_store_evictions_total');
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

async function metricValue(tg: TestTollgate, name: string): Promise<number> {
  const text = await (await fetch(`${tg.adminUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? Number.NaN : Number(line.slice(name.length + 1));
}
