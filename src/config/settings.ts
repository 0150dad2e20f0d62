import { parseArgs } from 'node:util';
import { MAX_TIMER_MS, parseDuration } from './duration.js';

/**
 * Process settings (how to run), kept apart from the policy file (what to enforce).
 * Precedence: flag > environment > default; `upstream` also beats the file's `upstream:`.
 */
export interface ListenAddress {
  host: string;
  port: number;
}

export interface ServeSettings {
  configFile: string;
  listen: ListenAddress;
  admin: ListenAddress;
  /** Overrides the policy's `upstream:` when set. */
  upstream?: string;
  logLevel: string;
  drainTimeoutMs: number;
  /** Time a client has to send the request headers (slowloris gets 408). */
  headersTimeoutMs: number;
  /** Time a client has to send the whole request. */
  requestTimeoutMs: number;
  /** Idle keep-alive; longer than common load-balancer idle timeouts (60s). */
  keepAliveTimeoutMs: number;
  /**
   * The admin API's token: a file (re-read when it changes) or the value itself. Absent:
   * the admin API is off (its paths answer 404). Never logged.
   */
  adminToken?: { file: string } | { token: string };
}

export type Command =
  | { command: 'serve'; settings: ServeSettings }
  | { command: 'validate'; file: string }
  | { command: 'schema' }
  | { command: 'help' }
  | { command: 'version' };

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export const USAGE = `Usage:
  tollgate [serve] [--config FILE] [--listen HOST:PORT] [--admin HOST:PORT] [--upstream URL]
                   [--drain-timeout DUR] [--headers-timeout DUR] [--request-timeout DUR]
                   [--keep-alive-timeout DUR] [--log-level LEVEL] [--admin-token-file FILE]
  tollgate validate FILE
  tollgate schema
  tollgate explain [--config FILE] METHOD URL [--ip A] [--via-proxy A] [--header 'Name: value']...
                   [--token JWT] [--websocket] [--admin URL] [--json]
  tollgate blocks  [--route R] [--json]
  tollgate block   --route R (--ip A | --user U | --header-value V) --for DUR [--reason TEXT] [--json]
  tollgate unblock --route R|'*' (--ip A | --user U | --header-value V) [--json]
  tollgate reset   --route R|'*' (--ip A | --user U | --header-value V) [--json]
  tollgate inspect --route R (--ip A | --user U | --header-value V) [--json]
  tollgate top     [--route R] [--minutes 5] [--json]
  tollgate --help | --version

Environment (flags win): TOLLGATE_CONFIG, TOLLGATE_LISTEN, TOLLGATE_ADMIN, TOLLGATE_UPSTREAM,
  TOLLGATE_DRAIN_TIMEOUT, TOLLGATE_HEADERS_TIMEOUT, TOLLGATE_REQUEST_TIMEOUT,
  TOLLGATE_KEEPALIVE_TIMEOUT, LOG_LEVEL, TOLLGATE_ADMIN_TOKEN_FILE, TOLLGATE_ADMIN_TOKEN
Defaults: --config ./policies.yaml, --listen 0.0.0.0:8080, --admin 0.0.0.0:9090, --drain-timeout 20s,
  --headers-timeout 10s, --request-timeout 5m, --keep-alive-timeout 75s, LOG_LEVEL info;
  no admin token: the admin API (/admin/*) is off
Admin commands talk to a running Tollgate: --admin URL (default http://127.0.0.1:9090, else
  from TOLLGATE_ADMIN), token from TOLLGATE_ADMIN_TOKEN or --admin-token-file FILE
  (TOLLGATE_ADMIN_TOKEN_FILE); 'tollgate COMMAND --help' for one. Exit 0 ok, 1 refused, 2 usage.
`;

export const DEFAULTS = {
  configFile: './policies.yaml',
  listen: '0.0.0.0:8080',
  admin: '0.0.0.0:9090',
  logLevel: 'info',
  drainTimeout: '20s',
  headersTimeout: '10s',
  requestTimeout: '5m',
  keepAliveTimeout: '75s', // above the 60s idle timeout of AWS ALB / GCP LB defaults
} as const;

const LOG_LEVELS = new Set(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

/** `HOST:PORT`, `:PORT`, `[v6]:PORT`; port 0 = any free port. */
export function parseListenAddress(text: string, what: string): ListenAddress {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\[\]]*)):(\d{1,5})$/.exec(text.trim());
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) {
    throw new UsageError(`${what}: expected HOST:PORT (e.g. 0.0.0.0:8080 or [::]:8080), got "${text}"`);
  }
  return { host: match[1] ?? (match[2] || '0.0.0.0'), port };
}

function duration(text: string, what: string): number {
  const ms = parseDuration(text.trim());
  if (ms === undefined) throw new UsageError(`${what}: expected a duration like 500ms, 30s, 1m, got "${text}"`);
  if (ms > MAX_TIMER_MS) throw new UsageError(`${what}: at most 24d (a timer cannot wait longer), got "${text}"`);
  return ms;
}

function upstreamUrl(text: string, what: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError(`${what}: expected an http:// or https:// URL, got "${text}"`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new UsageError(`${what}: expected an http:// or https:// URL, got "${text}"`);
  }
  return text;
}

/** Parses argv (without `node` and the script) and the environment. Throws UsageError. */
export function parseCommand(argv: readonly string[], env: Record<string, string | undefined>): Command {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      strict: true,
      options: {
        config: { type: 'string', short: 'c' },
        listen: { type: 'string' },
        admin: { type: 'string' },
        upstream: { type: 'string' },
        'drain-timeout': { type: 'string' },
        'headers-timeout': { type: 'string' },
        'request-timeout': { type: 'string' },
        'keep-alive-timeout': { type: 'string' },
        'log-level': { type: 'string' },
        'admin-token-file': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
      },
    });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) return { command: 'help' };
  if (values.version) return { command: 'version' };
  const [name = 'serve', ...rest] = positionals;
  if (name === 'validate') {
    const file = rest[0] ?? values.config;
    if (file === undefined || rest.length > 1) throw new UsageError('validate: expected exactly one FILE');
    return { command: 'validate', file };
  }
  if (name === 'schema') {
    if (rest.length > 0) throw new UsageError(`schema: unexpected argument "${rest[0]}"`);
    return { command: 'schema' };
  }
  if (name !== 'serve') throw new UsageError(`unknown command "${name}" (expected serve, validate, schema, explain, blocks, block, unblock, reset, inspect or top)`);
  if (rest.length > 0) throw new UsageError(`serve: unexpected argument "${rest[0]}"`);

  /** The value and where it came from, for error messages: `--flag`, the variable's name, or `default`. */
  const pick = (flag: Exclude<keyof typeof values, 'help' | 'version'>, envName: string, fallback: string): [string, string] => {
    const fromFlag = values[flag];
    if (fromFlag !== undefined) return [fromFlag, `--${flag}`];
    const fromEnv = env[envName];
    return fromEnv !== undefined && fromEnv !== '' ? [fromEnv, envName] : [fallback, 'default'];
  };

  const [listen, listenFrom] = pick('listen', 'TOLLGATE_LISTEN', DEFAULTS.listen);
  const [admin, adminFrom] = pick('admin', 'TOLLGATE_ADMIN', DEFAULTS.admin);
  const [drain, drainFrom] = pick('drain-timeout', 'TOLLGATE_DRAIN_TIMEOUT', DEFAULTS.drainTimeout);
  const [headers, headersFrom] = pick('headers-timeout', 'TOLLGATE_HEADERS_TIMEOUT', DEFAULTS.headersTimeout);
  const [request, requestFrom] = pick('request-timeout', 'TOLLGATE_REQUEST_TIMEOUT', DEFAULTS.requestTimeout);
  const [keepAlive, keepAliveFrom] = pick('keep-alive-timeout', 'TOLLGATE_KEEPALIVE_TIMEOUT', DEFAULTS.keepAliveTimeout);
  const [logLevel] = pick('log-level', 'LOG_LEVEL', DEFAULTS.logLevel);
  if (!LOG_LEVELS.has(logLevel)) throw new UsageError(`log level: expected one of ${[...LOG_LEVELS].join(', ')}, got "${logLevel}"`);
  const upstreamText = values.upstream ?? (env.TOLLGATE_UPSTREAM || undefined);
  const adminToken = adminTokenSource(values['admin-token-file'], env);

  return {
    command: 'serve',
    settings: {
      configFile: values.config ?? (env.TOLLGATE_CONFIG || DEFAULTS.configFile),
      listen: parseListenAddress(listen, listenFrom),
      admin: parseListenAddress(admin, adminFrom),
      upstream: upstreamText === undefined ? undefined : upstreamUrl(upstreamText, values.upstream !== undefined ? '--upstream' : 'TOLLGATE_UPSTREAM'),
      logLevel,
      drainTimeoutMs: duration(drain, drainFrom),
      headersTimeoutMs: duration(headers, headersFrom),
      requestTimeoutMs: duration(request, requestFrom),
      keepAliveTimeoutMs: duration(keepAlive, keepAliveFrom),
      ...(adminToken !== undefined && { adminToken }),
    },
  };
}

/**
 * Where the admin token comes from: `--admin-token-file`, else TOLLGATE_ADMIN_TOKEN_FILE,
 * else TOLLGATE_ADMIN_TOKEN. Both variables set is a usage error (which one was meant?).
 */
export function adminTokenSource(flagFile: string | undefined, env: Record<string, string | undefined>): { file: string } | { token: string } | undefined {
  if (flagFile !== undefined) {
    if (flagFile.trim() === '') throw new UsageError('--admin-token-file: expected a file name');
    return { file: flagFile };
  }
  const file = env.TOLLGATE_ADMIN_TOKEN_FILE || undefined;
  const token = env.TOLLGATE_ADMIN_TOKEN || undefined;
  if (file !== undefined && token !== undefined) {
    throw new UsageError('TOLLGATE_ADMIN_TOKEN_FILE and TOLLGATE_ADMIN_TOKEN are both set: set one of them');
  }
  if (file !== undefined) return { file };
  if (token !== undefined) {
    if (token.trim() === '') throw new UsageError('TOLLGATE_ADMIN_TOKEN: is only whitespace');
    return { token };
  }
  return undefined;
}
