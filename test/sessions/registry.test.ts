/**
 * TunnelRegistry: which tunnel a route gets, the tollgate_websocket_* metrics, the
 * websocket_closed lines (and their budget), and the drain with its one summary line.
 */
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import { createLogger } from '../../src/observability/logger.js';
import { createMetrics, type Metrics } from '../../src/observability/metrics.js';
import { RawTunnel } from '../../src/sessions/raw-tunnel.js';
import { TunnelRegistry, type TunnelContext } from '../../src/sessions/registry.js';
import { SessionRelay } from '../../src/sessions/relay.js';
import type { CompiledSession, Tunnel } from '../../src/sessions/types.js';
import { ManualClock } from '../helpers/session-clock.js';
import { LogCapture } from '../helpers/tollgate.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';
import { openClient, until, within, type TestClient } from '../helpers/ws.js';
import { startFront, type Front } from './front.js';

const IDLE: CompiledSession = { maxDurationMs: null, idleTimeoutMs: 1000, maxMessageBytes: null, messages: null };

/** Route id by path: /raw -> raw, /session -> session (idle 1 s), /access -> raw with log.access. */
function contextFor(path: string): TunnelContext {
  const routeId = path.split('/')[2] ?? 'none';
  return {
    routeId,
    session: routeId === 'session' ? IDLE : null,
    requestId: `req-${routeId}`,
    userId: 'user-1',
    clientIp: '127.0.0.1',
    logAccess: routeId === 'access',
  };
}

/** One sample's value (histograms by their `_count` / `_sum` series). */
async function value(metrics: Metrics, name: string, labels: Record<string, string>): Promise<number | undefined> {
  const base = name.replace(/_(count|sum)$/, '');
  const metric = (await metrics.registry.getMetricsAsJSON()).find((m) => m.name === name || m.name === base);
  const sample = metric?.values.find(
    (v) => ((v as { metricName?: string }).metricName ?? name) === name && Object.entries(labels).every(([k, l]) => v.labels[k] === l),
  );
  return sample?.value;
}

describe('TunnelRegistry', () => {
  let upstream: EchoUpstream;
  let front: Front;
  let metrics: Metrics;
  let logs: LogCapture;
  let registry: TunnelRegistry;
  let clock: ManualClock;
  const opened: Tunnel[] = [];
  const clients: TestClient[] = [];

  before(async () => {
    upstream = await startEchoUpstream();
  });
  after(() => upstream.close());

  async function setUp(linesPerSecond = 100): Promise<void> {
    metrics = createMetrics({ defaultMetrics: false });
    logs = new LogCapture();
    clock = new ManualClock();
    registry = new TunnelRegistry({ metrics, logger: createLogger('info', logs), clock, linesPerSecond });
    const paths: string[] = [];
    front = await startFront(upstream.url, (sockets) => {
      opened.push(registry.open(sockets, contextFor(paths.shift() ?? '/ws/raw')));
    });
    // The path of each next connection, read by the front's open() in order.
    connect = async (path: string) => {
      paths.push(path);
      const client = await openClient(`${front.url}${path}`);
      clients.push(client);
      return client;
    };
  }
  let connect: (path: string) => Promise<TestClient>;

  afterEach(async () => {
    for (const client of clients.splice(0)) client.ws.terminate();
    registry.close();
    await front.close();
    opened.length = 0;
  });

  it('opens a raw tunnel without session: and a relay with it; gauges, closes and durations by route', async () => {
    await setUp();
    const raw = await connect('/ws/raw');
    const session = await connect('/ws/session');
    assert.ok(opened[0] instanceof RawTunnel);
    assert.ok(opened[1] instanceof SessionRelay);
    assert.equal(registry.size, 2);
    assert.equal(metrics.hot.inflight, 2, 'tunnels count as in flight');
    assert.equal(await value(metrics, 'tollgate_websocket_sessions', { route: 'raw' }), 1);
    assert.equal(await value(metrics, 'tollgate_websocket_sessions', { route: 'session' }), 1);

    raw.ws.close(1000);
    await within(raw.closed, 3000, 'raw closed');
    clock.advance(1000); // the session's idle timeout
    assert.deepEqual(await within(session.closed, 3000, 'session closed'), { code: 1001, reason: 'idle timeout' });
    await until(() => registry.size === 0, 'both gone');
    assert.equal(metrics.hot.inflight, 0);
    assert.equal(await value(metrics, 'tollgate_websocket_sessions', { route: 'raw' }), 0);
    assert.equal(await value(metrics, 'tollgate_websocket_closed_total', { route: 'raw', reason: 'client' }), 1);
    assert.equal(await value(metrics, 'tollgate_websocket_closed_total', { route: 'session', reason: 'idle' }), 1);
    assert.equal(await value(metrics, 'tollgate_websocket_session_duration_seconds_count', { route: 'session' }), 1);
    assert.equal(await value(metrics, 'tollgate_websocket_session_duration_seconds_sum', { route: 'session' }), 1);

    // One line for the policy close; none for the ordinary one (log.access is off).
    const lines = logs.events('websocket_closed');
    assert.equal(lines.length, 1);
    assert.deepEqual(
      { ...lines[0], time: undefined, msg: undefined, level: undefined, service: undefined },
      {
        event: 'websocket_closed',
        route: 'session',
        reason: 'idle',
        userId: 'user-1',
        clientIp: '127.0.0.1',
        durationMs: 1000,
        messagesFromClient: 0,
        messagesFromUpstream: 0,
        requestId: 'req-session',
        time: undefined,
        msg: undefined,
        level: undefined,
        service: undefined,
      },
    );
  });

  it('log.access: ordinary closes are logged too', async () => {
    await setUp();
    const client = await connect('/ws/access');
    client.ws.close(1000);
    await until(() => registry.size === 0, 'closed');
    const lines = logs.events('websocket_closed');
    assert.equal(lines.length, 1);
    assert.equal(lines[0].reason, 'client');
    assert.equal(lines[0].level, 'info');
    assert.equal(lines[0].messagesFromClient, undefined, 'a raw tunnel does not count messages');
  });

  it('websocket_closed lines are bounded per second; the rest are counted in one overflow line', async () => {
    await setUp(1);
    const a = await connect('/ws/session');
    const b = await connect('/ws/session');
    clock.advance(1000);
    await within(Promise.all([a.closed, b.closed]), 3000, 'both idle');
    await until(() => registry.size === 0, 'both gone');
    assert.equal(logs.events('websocket_closed').length, 1);
    registry.close();
    assert.deepEqual(logs.events('websocket_log_overflow').map((l) => l.dropped), [1]);
  });

  it('drain(): every tunnel closes with 1001; one summary line, no line per socket; resolves when none is left', async () => {
    await setUp();
    const raw = await connect('/ws/raw');
    const session = await connect('/ws/session');
    const drained = registry.drain();
    assert.deepEqual(await within(raw.closed, 3000, 'raw closed'), { code: 1001, reason: 'server shutting down' });
    assert.deepEqual(await within(session.closed, 3000, 'session closed'), { code: 1001, reason: 'server shutting down' });
    await within(drained, 3000, 'drained');
    assert.equal(await value(metrics, 'tollgate_websocket_closed_total', { route: 'raw', reason: 'drain' }), 1);
    assert.equal(await value(metrics, 'tollgate_websocket_closed_total', { route: 'session', reason: 'drain' }), 1);
    assert.deepEqual(logs.events('websocket_closed'), []);
    const summary = logs.events('websocket_drain');
    assert.equal(summary.length, 1);
    assert.deepEqual([summary[0].tunnels, summary[0].closed, summary[0].destroyed], [2, 2, 0]);
  });

  it('destroyAll() at the drain timeout ends what did not answer; the summary counts it', async () => {
    await setUp();
    const client = await connect('/ws/session');
    // A client that stops reading: it never answers the close.
    (client.ws as unknown as { _socket: { pause(): void } })._socket.pause();
    const drained = registry.drain();
    await new Promise((r) => setImmediate(r));
    assert.equal(registry.size, 1);
    registry.destroyAll();
    await within(drained, 3000, 'drained after destroyAll');
    const summary = logs.events('websocket_drain');
    assert.deepEqual([summary.length, summary[0].tunnels, summary[0].closed, summary[0].destroyed], [1, 1, 0, 1]);
    assert.equal(await value(metrics, 'tollgate_websocket_closed_total', { route: 'session', reason: 'drain' }), 1);
  });
});
