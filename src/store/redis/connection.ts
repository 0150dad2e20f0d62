import { Cluster, Redis } from 'ioredis';
import type { ClusterOptions, RedisOptions } from 'ioredis';
import type { RedisNodeConfig, RedisStoreConfig } from '../../config/types.js';

export type RedisClient = Redis | Cluster;

/** Reconnect delay: grows with the attempts, capped, never gives up. */
export function reconnectDelay(attempt: number): number {
  const capped = Math.min(50 * 2 ** Math.min(attempt, 6), 2_000); // 100ms .. 2s
  return capped + Math.floor(Math.random() * 100); // jitter: replicas do not reconnect in lockstep
}

/**
 * The store sends its decide script once per event-loop turn, already holding every
 * decision of that turn (store.ts). Auto-pipelining it again would only defer the write
 * by one more turn (its own setImmediate) and allocate a pipeline per batch, so those
 * calls go straight to the socket; other commands (heartbeat) keep auto-pipelining.
 */
const DIRECT_COMMANDS = ['evalsha', 'eval'];

const COMMAND_TIMEOUT_MARGIN_MS = 100;

/**
 * Options that make every failure fast and visible instead of queued: no offline
 * queue, no per-request retries, no resend after a reconnect (a resent script would
 * count a request twice), a command timeout behind the decision budget.
 */
function failFastOptions(config: RedisStoreConfig): RedisOptions {
  return {
    enableAutoPipelining: true,
    autoPipeliningIgnoredCommands: DIRECT_COMMANDS,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    // A backstop only: the store's own deadline (store.ts) bounds each decision and
    // must run first, since a command rejected here loses a reply that was on its way.
    commandTimeout: 2 * config.timeoutMs + COMMAND_TIMEOUT_MARGIN_MS,
    connectTimeout: Math.max(1_000, 20 * config.timeoutMs),
    // A socket that stops answering (hung server, lost peer) is dropped and redialled.
    socketTimeout: Math.max(2_000, 40 * config.timeoutMs),
    retryStrategy: reconnectDelay,
    // After a failover the old master turns replica: reconnect to find the new one.
    reconnectOnError: (error) => (error.message.startsWith('READONLY') ? 1 : false),
    connectionName: 'tollgate',
  };
}

function credentials(node: RedisNodeConfig | undefined, config: RedisStoreConfig): Pick<RedisOptions, 'username' | 'password'> {
  const username = config.username ?? node?.username;
  const password = config.password ?? node?.password;
  return { ...(username !== undefined && { username }), ...(password !== undefined && { password }) };
}

/** Where the store connects, without credentials: safe to log. */
export function describeTarget(config: RedisStoreConfig): string {
  if (config.cluster) return 'cluster ' + config.cluster.map((n) => `${n.host}:${n.port}`).join(',');
  if (config.sentinels) return `sentinel ${config.name ?? '?'} via ` + config.sentinels.map((n) => `${n.host}:${n.port}`).join(',');
  if (config.url === undefined) return 'redis://127.0.0.1:6379';
  const url = new URL(config.url);
  return `${url.protocol}//${url.host}${url.pathname === '/' ? '' : url.pathname}`;
}

/**
 * Builds the ioredis client for a url (redis:// or rediss:// = TLS), a Sentinel group
 * or a Cluster. Connects in the background; never throws on an unreachable server.
 * Sentinel entries' credentials and TLS are for the sentinels; the top-level ones for
 * the master. Cluster nodes share one set: the top-level one, else the first node's.
 */
export function createRedisClient(config: RedisStoreConfig): RedisClient {
  const base = failFastOptions(config);
  if (config.cluster !== undefined) {
    const nodes = config.cluster;
    const tls = config.tls === true || nodes.some((n) => n.tls === true);
    const { retryStrategy: _retry, enableOfflineQueue: _queue, ...redisOptions } = base;
    const options: ClusterOptions = {
      enableAutoPipelining: true,
      autoPipeliningIgnoredCommands: DIRECT_COMMANDS,
      enableOfflineQueue: false,
      clusterRetryStrategy: reconnectDelay,
      // Decisions must never wait: MOVED/ASK are followed, but failover waits are short.
      retryDelayOnFailover: 50,
      retryDelayOnClusterDown: 50,
      retryDelayOnTryAgain: 50,
      maxRedirections: 4,
      scaleReads: 'master',
      redisOptions: { ...redisOptions, ...credentials(nodes[0], config), ...(tls && { tls: {} }) },
    };
    return new Cluster(
      nodes.map((n) => ({ host: n.host, port: n.port })),
      options,
    );
  }
  if (config.sentinels !== undefined) {
    const sentinels = config.sentinels;
    const auth = sentinels.find((n) => n.username !== undefined || n.password !== undefined);
    const sentinelTls = sentinels.some((n) => n.tls === true);
    return new Redis({
      ...base,
      sentinels: sentinels.map((n) => ({ host: n.host, port: n.port })),
      name: config.name,
      ...credentials(undefined, config),
      ...(config.tls === true && { tls: {} }),
      ...(auth?.username !== undefined && { sentinelUsername: auth.username }),
      ...(auth?.password !== undefined && { sentinelPassword: auth.password }),
      ...(sentinelTls && { enableTLSForSentinelMode: true, sentinelTLS: {} }),
      sentinelRetryStrategy: reconnectDelay,
      sentinelCommandTimeout: Math.max(500, 10 * config.timeoutMs),
      // Decisions never wait for a failover: without a master they fail fast into onError.
      failoverDetector: true,
    });
  }
  const options: RedisOptions = { ...base, ...credentials(undefined, config), ...(config.tls === true && { tls: {} }) };
  return config.url === undefined ? new Redis(options) : new Redis(config.url, options);
}
