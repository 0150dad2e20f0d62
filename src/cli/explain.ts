/**
 * `tollgate explain [--config FILE] METHOD URL [--ip A] [--via-proxy A] [--header 'Name: value']...
 * [--token JWT] [--websocket] [--admin URL] [--json]`: what the policy makes of one request
 * (src/policy/explain.ts), and with `--admin` the key's live counts, remaining and blocks
 * from a running Tollgate (GET /admin/keys, through the admin CLI's client). Exit 0 (also
 * when no route matches), 1 for a bad policy file (or a failed --admin call), 2 for usage.
 */
import { isIP } from 'node:net';
import { parseArgs } from 'node:util';
import { adminConnection, adminGet } from '../admin/cli.js';
import { displayKey, kindOfBy } from '../admin/keys.js';
import { loadAndCompile } from '../app.js';
import type { Env } from '../config/env.js';
import { formatIssue } from '../config/load.js';
import { DEFAULTS, UsageError } from '../config/settings.js';
import { explainRequest, type Explanation, type LimitExplanation } from '../policy/explain.js';
import type { IncomingHeaders } from '../policy/types.js';

/** The socket peer when `--ip` is not given: a documentation address (RFC 5737), trusted by no sane policy. */
const DEFAULT_PEER = '192.0.2.1';
/** Stands in for the upstream when the file names none, as `validate` does; never connected to. */
const ANY_UPSTREAM = 'http://127.0.0.1';
const HTTP_TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

export const EXPLAIN_USAGE = `Usage:
  tollgate explain [--config FILE] METHOD URL [--ip A] [--via-proxy A] [--header 'Name: value']...
                   [--token JWT] [--websocket] [--admin URL [--admin-token-file FILE]] [--json]
  What the policy makes of one request: its canonical path, the route (or why none matched),
  the client IP and identity as Tollgate resolves them (JWTs verified with the file's keys),
  the guards, and each limit with its store key, tier, limit, window and block.
  URL: a path (/api/x?y=1) or http://host/path. --ip: the socket peer (default ${DEFAULT_PEER});
  --via-proxy A: the peer is proxy A and --ip travels in X-Forwarded-For (believed as
  clientIp.trustedProxies says). --token: sent as Authorization: Bearer. --websocket: an upgrade.
  --admin URL: adds the key's live counts, remaining and blocks from a running Tollgate (token
  from TOLLGATE_ADMIN_TOKEN or --admin-token-file / TOLLGATE_ADMIN_TOKEN_FILE).
  --config defaults to TOLLGATE_CONFIG, else ${DEFAULTS.configFile}.
Exit: 0 explained (also when no route matches), 1 the policy file is invalid or --admin failed, 2 usage error.
`;

export interface ExplainCommand {
  readonly help: boolean;
  readonly configFile: string;
  readonly method: string;
  readonly target: string;
  readonly peer: string;
  readonly headers: IncomingHeaders;
  readonly websocket: boolean;
  readonly json: boolean;
  readonly admin?: { readonly baseUrl: string; readonly token: string };
}

/** Parses `tollgate explain ...` (argv after `explain`). Throws UsageError. */
export function parseExplainCommand(argv: readonly string[], env: Env): ExplainCommand {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      strict: true,
      options: {
        config: { type: 'string', short: 'c' },
        ip: { type: 'string' },
        'via-proxy': { type: 'string' },
        header: { type: 'string', multiple: true, short: 'H' },
        token: { type: 'string' },
        websocket: { type: 'boolean' },
        admin: { type: 'string' },
        'admin-token-file': { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (error) {
    throw new UsageError(`explain: ${(error as Error).message}`);
  }
  const { values, positionals } = parsed;
  const configFile = values.config ?? (env.TOLLGATE_CONFIG || DEFAULTS.configFile);
  if (values.help === true) return { help: true, configFile, method: '', target: '', peer: '', headers: {}, websocket: false, json: false };
  if (positionals.length !== 2) throw new UsageError(`explain: expected METHOD URL (e.g. explain POST /api/livekit/token), got ${positionals.length} argument(s)`);
  const [methodText, url] = positionals;
  if (!HTTP_TOKEN.test(methodText)) throw new UsageError(`explain: METHOD: expected an HTTP method such as GET or POST, got "${methodText}"`);
  const method = methodText.toUpperCase();

  const headers: Record<string, string> = {};
  for (const line of values.header ?? []) {
    const colon = line.indexOf(':');
    const name = (colon < 0 ? '' : line.slice(0, colon)).trim().toLowerCase();
    if (!HTTP_TOKEN.test(name)) throw new UsageError(`explain: --header: expected 'Name: value', got "${line}"`);
    const value = line.slice(colon + 1).trim();
    // Repeated headers arrive joined, as node:http joins them (cookies with "; ").
    headers[name] = headers[name] === undefined ? value : `${headers[name]}${name === 'cookie' ? '; ' : ', '}${value}`;
  }
  if (values.token !== undefined) {
    if (headers.authorization !== undefined) throw new UsageError('explain: give --token or an Authorization --header, not both');
    headers.authorization = `Bearer ${values.token}`;
  }

  let target: string;
  if (url.startsWith('/')) {
    target = url;
  } else if (/^[a-z][a-z0-9+.-]*:\/\/[^/?#]+/i.test(url)) {
    // Absolute form, passed on as written (the path is canonicalised as the proxy does, not by URL parsing).
    target = url;
    headers.host ??= /^[a-z][a-z0-9+.-]*:\/\/([^/?#]+)/i.exec(url)![1];
  } else {
    throw new UsageError(`explain: URL: expected a path (/api/x) or http://host/path, got "${url}"`);
  }

  const address = (flag: 'ip' | 'via-proxy'): string | undefined => {
    const value = values[flag];
    if (value !== undefined && isIP(value) === 0) throw new UsageError(`explain: --${flag}: expected an IP address, got "${value}"`);
    return value;
  };
  const ip = address('ip');
  const via = address('via-proxy');
  let peer = ip ?? DEFAULT_PEER;
  if (via !== undefined) {
    peer = via;
    if (ip !== undefined) headers['x-forwarded-for'] = headers['x-forwarded-for'] === undefined ? ip : `${headers['x-forwarded-for']}, ${ip}`;
  }
  const websocket = values.websocket === true;
  if (websocket) {
    headers.upgrade ??= 'websocket';
    headers.connection ??= 'Upgrade';
  }

  if (values['admin-token-file'] !== undefined && values.admin === undefined) throw new UsageError('explain: --admin-token-file goes with --admin URL');
  const admin = values.admin === undefined ? undefined : adminConnection(values.admin, values['admin-token-file'], env);
  return { help: false, configFile, method, target, peer, headers, websocket, json: values.json === true, ...(admin === undefined ? {} : { admin }) };
}

export interface Output {
  write(text: string): void;
}

/** The live state of one limit's key from GET /admin/keys. */
interface LiveState {
  readonly count: number;
  readonly remaining: number;
  readonly reset: number;
  readonly blockedUntil: number | null;
  readonly strikes: number;
  readonly manual: boolean;
  readonly reason: string | null;
}

type LimitWithLive = LimitExplanation & { live?: LiveState | null };

/** Runs the command; answers the exit code. */
export async function runExplain(command: ExplainCommand, env: Env, stdout: Output, stderr: Output): Promise<number> {
  if (command.help) {
    stdout.write(EXPLAIN_USAGE);
    return 0;
  }
  const loaded = loadAndCompile(command.configFile, env, { defaultUpstream: ANY_UPSTREAM });
  if (!loaded.ok) {
    for (const issue of loaded.errors) stderr.write(formatIssue(issue) + '\n');
    return 1;
  }
  let explanation: Explanation;
  try {
    explanation = await explainRequest(loaded.policy, {
      method: command.method,
      target: command.target,
      peer: command.peer,
      headers: command.headers,
      websocket: command.websocket,
    });
  } finally {
    loaded.policy.identity?.close?.();
  }
  let limits: LimitWithLive[] = [...explanation.limits];
  let adminError: string | null = null;
  if (command.admin !== undefined && explanation.route !== null) {
    const live = await liveStates(command.admin, explanation.route, explanation.limits, explanation.identity.tier);
    limits = live.limits;
    adminError = live.error;
  }
  const result = { ...explanation, limits, ...(command.admin === undefined ? {} : { admin: { url: command.admin.baseUrl, error: adminError } }) };
  stdout.write(command.json ? JSON.stringify(result, null, 2) + '\n' : render(command, result));
  if (adminError !== null) {
    stderr.write(`tollgate explain: ${adminError}\n`);
    return 1;
  }
  return 0;
}

/**
 * The live state of each applied limit, one GET /admin/keys per `by` (the API answers
 * the limits of that `by` in route order, as this policy lists them, when the running
 * instance has the same policy; a limit it answers differently gets no state).
 */
async function liveStates(
  connection: { baseUrl: string; token: string },
  routeId: string,
  limits: readonly LimitExplanation[],
  tier: string | null,
): Promise<{ limits: LimitWithLive[]; error: string | null }> {
  const out: LimitWithLive[] = limits.map((limit) => ({ ...limit, live: null }));
  let error: string | null = null;
  for (const by of new Set(limits.map((limit) => limit.by))) {
    const sameBy = limits.map((limit, index) => ({ limit, index })).filter(({ limit }) => limit.by === by);
    const applied = sameBy.find(({ limit }) => limit.clientKey !== null);
    if (applied === undefined) continue;
    const params: Record<string, string> = { route: routeId, by, listedKey: displayKey(kindOfBy(by), applied.limit.clientKey!) };
    if (tier !== null) params.tier = tier;
    const answer = await adminGet(connection, '/admin/keys', params);
    if (!answer.ok) {
      error ??= answer.message;
      continue;
    }
    const rows = Array.isArray(answer.body.limits) ? (answer.body.limits as Record<string, unknown>[]) : [];
    sameBy.forEach(({ limit, index }, position) => {
      const row = rows[position];
      if (row === undefined || limit.clientKey === null || row.for !== limit.for || row.type !== limit.type || row.window !== limit.window) return;
      out[index] = {
        ...limit,
        live: {
          count: row.count as number,
          remaining: row.remaining as number,
          reset: row.reset as number,
          blockedUntil: (row.blockedUntil as number | null) ?? null,
          strikes: row.strikes as number,
          manual: row.manual === true,
          reason: (row.reason as string | null) ?? null,
        },
      };
    });
  }
  return { limits: out, error };
}

// ---- text ----

/** `90s` -> `1m30s`; whole units where they fit. */
function seconds(value: number): string {
  const units: [number, string][] = [[86400, 'd'], [3600, 'h'], [60, 'm'], [1, 's']];
  if (value > 0 && value < 1) return `${Math.round(value * 1000)}ms`;
  let rest = Math.round(value);
  let out = '';
  for (const [size, unit] of units) {
    if (rest >= size) {
      out += `${Math.floor(rest / size)}${unit}`;
      rest %= size;
    }
  }
  return out === '' ? '0s' : out;
}

function time(unixSeconds: number | null | undefined): string {
  return typeof unixSeconds === 'number' ? new Date(unixSeconds * 1000).toISOString().replace('.000Z', 'Z') : '-';
}

function render(command: ExplainCommand, e: Explanation & { limits: readonly LimitWithLive[]; admin?: { url: string; error: string | null } }): string {
  const lines: string[] = [];
  const row = (label: string, text: string): void => {
    lines.push(`${label.padEnd(15)}${text}`);
  };
  lines.push(`${command.method} ${command.target}${command.websocket ? ' (WebSocket upgrade)' : ''}`);
  row('canonical path', e.canonicalPath);
  const pathRefusal = e.guards.find((step) => step.guard === 'path' && step.result === 'refuse');
  if (pathRefusal !== undefined) row('route', `none: refused before routing with ${pathRefusal.status} ${pathRefusal.code}`);
  else row('route', e.route ?? 'none: the request is forwarded untouched (no limits, no guards)');
  const why = { path: 'the path does not match', method: 'the method does not match', websocket: command.websocket ? 'plain requests only (match.websocket: false)' : 'WebSocket upgrades only (match.websocket: true)' };
  for (const tried of e.tried) row('', `  not ${tried.route}: ${why[tried.failed]}`);
  const via = e.client.peerTrusted ? `peer ${command.peer} is a trusted proxy: X-Forwarded-For believed` : `peer ${command.peer}${command.headers['x-forwarded-for'] !== undefined ? ', not a trusted proxy: X-Forwarded-For ignored' : ''}`;
  row('client', `${e.client.ip} (key ${e.client.key}; ${via})`);
  const who = e.identity.anonymous
    ? 'anonymous'
    : `user ${e.identity.user}${e.identity.tier === null ? '' : `, tier ${e.identity.tier}`} (${e.identity.source === 'jwt' ? 'verified JWT' : e.identity.source === 'header' ? 'identity header from a trusted proxy' : 'resolved'})`;
  row('identity', who + (e.identity.tokenError === null ? '' : `; the token does not count: ${e.identity.tokenError}`));
  if (e.route === null) return lines.join('\n') + '\n';
  if (e.guards.length === 0) row('guards', 'none');
  e.guards.forEach((step, index) => {
    const result = step.result === 'refuse' ? `refuse: ${step.status} ${step.code}` : step.result;
    row(index === 0 ? 'guards' : '', `${step.guard.padEnd(16)}${result}${step.note === undefined ? '' : ` (${step.note})`}`);
  });
  const refused = e.guards.find((step) => step.result === 'refuse');
  const answered = e.guards.find((step) => step.guard === 'cors' && step.result === 'pass' && step.note?.startsWith('preflight') === true);
  const limitsNote = refused !== undefined
    ? `not reached (guard ${refused.guard} answers ${refused.status}); they would be:`
    : answered !== undefined
      ? 'none applies to a preflight Tollgate answers; on the actual request:'
      : e.allowlisted
        ? 'skipped: the client is allowlisted; they would be:'
        : e.mode === 'shadow'
          ? 'mode shadow: counted and logged, never refused (except operator blocks):'
          : e.limits.length === 0
            ? 'none'
            : `mode ${e.mode}:`;
  row('limits', limitsNote);
  for (const limit of e.limits) {
    lines.push(`  ${limit.policy}`);
    if (limit.skipped !== null) {
      lines.push(`    skipped: ${limit.skipped}`);
      continue;
    }
    const tier = limit.tier === null ? '' : ` (tier ${limit.tier})`;
    const quota = limit.type === 'concurrent' ? `${limit.limit}${tier} in flight` : `${limit.limit}${tier} per ${seconds(limit.window!)}, ${limit.algorithm}`;
    lines.push(`    limit ${quota}${limit.block === null ? '' : `, block ${limit.block.map(seconds).join(' > ')}`}`);
    lines.push(`    store key ${limit.storeKey}`);
    if (limit.live !== undefined) {
      const live = limit.live;
      lines.push(
        live === null
          ? '    live: no state from the running instance'
          : `    live: count ${live.count}, remaining ${live.remaining}, reset ${time(live.reset)}, blocked until ${time(live.blockedUntil)}${live.strikes > 0 ? `, strikes ${live.strikes}` : ''}${live.manual ? `, manual block${live.reason === null ? '' : `: ${live.reason}`}` : ''}`,
      );
    }
  }
  if (e.admin !== undefined && e.admin.error !== null) lines.push(`live state from ${e.admin.url} failed: ${e.admin.error}`);
  return lines.join('\n') + '\n';
}
