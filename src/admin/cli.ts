/**
 * `tollgate blocks | block | unblock | reset | inspect | top`: thin clients of the admin
 * API of a running Tollgate (usable as `kubectl exec deploy/voice-app -c tollgate --
 * tollgate blocks`). Tables for people, `--json` for scripts. Exit 0 on success, 1 when
 * the API refused (its message printed) or could not be reached, 2 on usage errors.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { DURATION_EXAMPLES, parseDuration } from '../config/duration.js';
import { adminTokenSource, UsageError } from '../config/settings.js';

export const ADMIN_COMMANDS: ReadonlySet<string> = new Set(['blocks', 'block', 'unblock', 'reset', 'inspect', 'top']);

export const DEFAULT_ADMIN_URL = 'http://127.0.0.1:9090';

/** How long one API call may take before the command gives up (exit 1). */
const REQUEST_TIMEOUT_MS = 10_000; // 10s
/** Blocks fetched per page when `blocks` walks the whole listing. */
const BLOCKS_PAGE = 1000;

const KEY_USAGE = '(--ip A | --user U | --header-value V | --listed-key K --by BY)';

export const ADMIN_USAGE: Readonly<Record<string, string>> = {
  blocks: 'tollgate blocks [--route R] [--json]\n  Running blocks (every page), of one route or all.',
  block: `tollgate block --route R|'*' ${KEY_USAGE} --for DUR [--reason TEXT] [--by BY] [--json]\n  Blocks the key now for DUR (e.g. 1h) on every rate limit of the route with that by; refuses even on shadow routes.`,
  unblock: `tollgate unblock --route R|'*' ${KEY_USAGE} [--by BY] [--json]\n  Lifts the key's blocks and forgets its strikes; its counters stay (use reset for a clean slate).`,
  reset: `tollgate reset --route R|'*' ${KEY_USAGE} [--by BY] [--json]\n  Forgets the key's counters, blocks and strikes.`,
  inspect: `tollgate inspect --route R ${KEY_USAGE} [--by BY] [--tier T] [--json]\n  The key's counts, remaining quota, reset, block and strikes on every limit of the route with that by.`,
  top: 'tollgate top [--route R] [--minutes 5] [--json]\n  The keys refused most in the last minutes, the current one included.',
};

const COMMON_USAGE = `Common: --admin URL (default ${DEFAULT_ADMIN_URL}; else from TOLLGATE_ADMIN), token from
  TOLLGATE_ADMIN_TOKEN or --admin-token-file FILE (TOLLGATE_ADMIN_TOKEN_FILE).
  --ip: an address (IPv6: any of its /64); --user: a user id; --header-value: the raw value of the
  limit's header (e.g. the API key), digested as Tollgate does; --listed-key: a key exactly as
  blocks/top list it (e.g. h#<digest>), with --by.
Exit: 0 ok, 1 the API refused (message printed) or could not be reached, 2 usage error.
`;

export function adminUsage(command: string): string {
  return `Usage:\n  ${ADMIN_USAGE[command] ?? Object.values(ADMIN_USAGE).join('\n  ')}\n\n${COMMON_USAGE}`;
}

/** A parsed admin command: one API call (or, for `blocks`, pages of one). */
export interface AdminCommand {
  readonly command: string;
  readonly help: boolean;
  readonly baseUrl: string;
  readonly token: string;
  readonly json: boolean;
  readonly method: 'GET' | 'POST' | 'DELETE';
  readonly path: string;
  /** Query parameters (GET) or the JSON body (POST, DELETE). */
  readonly params: Record<string, string | number>;
}

/** `--admin`: a URL, or HOST:PORT as `serve --admin` takes it. */
function adminUrl(text: string, what: string): string {
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(text) ? text : `http://${text}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new UsageError(`${what}: expected a URL like ${DEFAULT_ADMIN_URL}, got "${text}"`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UsageError(`${what}: expected an http:// or https:// URL, got "${text}"`);
  // A listener on every interface is reached over loopback.
  if (url.hostname === '0.0.0.0') url.hostname = '127.0.0.1';
  if (url.hostname === '[::]') url.hostname = '[::1]';
  return url.origin;
}

/** Where the API is: --admin, else TOLLGATE_ADMIN (the server's HOST:PORT, in the same container), else the default. */
function baseUrlOf(flag: string | undefined, env: Record<string, string | undefined>): string {
  if (flag !== undefined) return adminUrl(flag, '--admin');
  const fromEnv = env.TOLLGATE_ADMIN;
  if (fromEnv !== undefined && fromEnv !== '') return adminUrl(fromEnv.startsWith(':') ? `0.0.0.0${fromEnv}` : fromEnv, 'TOLLGATE_ADMIN');
  return DEFAULT_ADMIN_URL;
}

function readToken(flagFile: string | undefined, env: Record<string, string | undefined>): string {
  const source = adminTokenSource(flagFile, env);
  if (source === undefined) throw new UsageError('no admin token: set TOLLGATE_ADMIN_TOKEN or pass --admin-token-file FILE');
  if ('token' in source) return source.token.trim();
  let text: string;
  try {
    text = readFileSync(source.file, 'utf8');
  } catch (error) {
    throw new UsageError(`${flagFile !== undefined ? '--admin-token-file' : 'TOLLGATE_ADMIN_TOKEN_FILE'}: cannot read ${source.file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  const token = text.trim();
  if (token === '') throw new UsageError(`admin token file ${source.file} is empty`);
  return token;
}

/** by and key of a key flag (--ip, --user, --header-value, --listed-key), checked against --by. */
function keyParams(values: Record<string, string | boolean | undefined>, required: boolean): Record<string, string> {
  const given = (['ip', 'user', 'header-value', 'listed-key'] as const).filter((f) => values[f] !== undefined);
  const by = values.by as string | undefined;
  if (given.length > 1) throw new UsageError(`give one of --ip, --user, --header-value, --listed-key (got ${given.map((g) => `--${g}`).join(' and ')})`);
  if (given.length === 0) {
    if (by !== undefined && by.trim().toLowerCase() === 'global') return { by: 'global' };
    if (required) throw new UsageError(`expected a key: ${KEY_USAGE}`);
    return {};
  }
  const flag = given[0];
  const value = values[flag] as string;
  if (value === '') throw new UsageError(`--${flag}: expected a value`);
  switch (flag) {
    case 'ip':
      if (by !== undefined && by !== 'ip') throw new UsageError(`--ip goes with --by ip, not --by ${by}`);
      return { by: 'ip', key: value };
    case 'user':
      if (by !== undefined && by !== 'user') throw new UsageError(`--user goes with --by user, not --by ${by}`);
      return { by: 'user', key: value };
    case 'header-value':
      if (by !== undefined && !by.toLowerCase().startsWith('header')) throw new UsageError(`--header-value goes with --by header or header:NAME, not --by ${by}`);
      return { by: by ?? 'header', key: value };
    case 'listed-key':
      if (by === undefined) throw new UsageError('--listed-key needs --by (ip, user, header or header:NAME)');
      return { by, listedKey: value };
  }
}

/** Parses `tollgate <admin command> ...` (argv from the command name on). Throws UsageError. */
export function parseAdminCommand(argv: readonly string[], env: Record<string, string | undefined>): AdminCommand {
  const [command, ...rest] = argv;
  if (!ADMIN_COMMANDS.has(command)) throw new UsageError(`unknown admin command "${command}"`);
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      allowPositionals: false,
      strict: true,
      options: {
        admin: { type: 'string' },
        'admin-token-file': { type: 'string' },
        route: { type: 'string' },
        ip: { type: 'string' },
        user: { type: 'string' },
        'header-value': { type: 'string' },
        'listed-key': { type: 'string' },
        by: { type: 'string' },
        for: { type: 'string' },
        reason: { type: 'string' },
        minutes: { type: 'string' },
        tier: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (error) {
    throw new UsageError(`${command}: ${(error as Error).message}`);
  }
  const values = parsed.values;
  const base = { command, json: values.json === true };
  if (values.help === true) return { ...base, help: true, baseUrl: '', token: '', method: 'GET', path: '', params: {} };

  const allowed: Record<string, readonly string[]> = {
    blocks: ['route'],
    block: ['route', 'key', 'for', 'reason'],
    unblock: ['route', 'key'],
    reset: ['route', 'key'],
    inspect: ['route', 'key', 'tier'],
    top: ['route', 'minutes'],
  };
  const accepts = allowed[command];
  const flagGroups: Record<string, readonly string[]> = {
    key: ['ip', 'user', 'header-value', 'listed-key', 'by'],
    for: ['for'],
    reason: ['reason'],
    minutes: ['minutes'],
    tier: ['tier'],
  };
  for (const [group, flags] of Object.entries(flagGroups)) {
    if (accepts.includes(group)) continue;
    for (const flag of flags) if (values[flag as keyof typeof values] !== undefined) throw new UsageError(`${command}: --${flag} is not an option of ${command}`);
  }

  const route = values.route;
  const params: Record<string, string | number> = {};
  if (route !== undefined) {
    if (route === '') throw new UsageError(`${command}: --route: expected a route id`);
    params.route = route;
  } else if (command !== 'blocks' && command !== 'top') {
    throw new UsageError(`${command}: --route is required${command === 'inspect' ? '' : " (a route id, or '*' for every route)"}`);
  }
  if (command === 'inspect' && route === '*') throw new UsageError("inspect: --route '*' is not accepted; name one route");
  if (accepts.includes('key')) Object.assign(params, keyParams(values, true));
  if (command === 'block') {
    const duration = values.for;
    if (duration === undefined) throw new UsageError(`block: --for is required (a duration: ${DURATION_EXAMPLES})`);
    const ms = parseDuration(duration.trim());
    if (ms === undefined || ms <= 0) throw new UsageError(`block: --for: expected a duration like ${DURATION_EXAMPLES}, got "${duration}"`);
    params.duration = duration.trim();
    if (values.reason !== undefined) params.reason = values.reason;
  }
  if (command === 'top' && values.minutes !== undefined) {
    if (!/^\d+$/.test(values.minutes) || Number(values.minutes) < 1) throw new UsageError(`top: --minutes: expected a whole number of minutes, got "${values.minutes}"`);
    params.minutes = Number(values.minutes);
  }
  if (command === 'inspect' && values.tier !== undefined) params.tier = values.tier;

  const endpoint: Record<string, [AdminCommand['method'], string]> = {
    blocks: ['GET', '/admin/blocks'],
    block: ['POST', '/admin/blocks'],
    unblock: ['DELETE', '/admin/blocks'],
    reset: ['POST', '/admin/reset'],
    inspect: ['GET', '/admin/keys'],
    top: ['GET', '/admin/top'],
  };
  const [method, path] = endpoint[command];
  return {
    ...base,
    help: false,
    baseUrl: baseUrlOf(values.admin, env),
    token: readToken(values['admin-token-file'], env),
    method,
    path,
    params,
  };
}

export interface Output {
  write(text: string): void;
}

export type Answer = { ok: true; body: Record<string, unknown> } | { ok: false; message: string; body?: unknown };

/** Where the admin API is and its token, as every admin command finds them (for `explain --admin`). */
export function adminConnection(adminFlag: string | undefined, tokenFileFlag: string | undefined, env: Record<string, string | undefined>): { baseUrl: string; token: string } {
  return { baseUrl: baseUrlOf(adminFlag, env), token: readToken(tokenFileFlag, env) };
}

/** One GET of the admin API: its JSON answer, or why there is none. */
export function adminGet(connection: { baseUrl: string; token: string }, path: string, params: Record<string, string | number>): Promise<Answer> {
  return call({ ...connection, method: 'GET', path }, params);
}

async function call(command: Pick<AdminCommand, 'baseUrl' | 'token' | 'method' | 'path'>, params: Record<string, string | number>): Promise<Answer> {
  const url = new URL(command.path, command.baseUrl);
  const init: RequestInit = {
    method: command.method,
    headers: { authorization: `Bearer ${command.token}`, accept: 'application/json' },
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  };
  if (command.method === 'GET') {
    for (const [name, value] of Object.entries(params)) url.searchParams.set(name, String(value));
  } else {
    init.body = JSON.stringify(params);
    (init.headers as Record<string, string>)['content-type'] = 'application/json';
  }
  let response: Response;
  let text: string;
  try {
    response = await fetch(url, init);
    text = await response.text();
  } catch (error) {
    const cause = (error as { cause?: { code?: string; message?: string } }).cause;
    return { ok: false, message: `cannot reach the admin API at ${command.baseUrl}: ${cause?.code ?? cause?.message ?? (error as Error).message}` };
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  if (response.ok && body !== null && typeof body === 'object') return { ok: true, body: body as Record<string, unknown> };
  const failure = (body as { error?: { code?: string; message?: string } } | undefined)?.error;
  if (failure?.code !== undefined) return { ok: false, message: `${failure.code} (${response.status}): ${failure.message ?? ''}`, body };
  if (response.status === 404) return { ok: false, message: `404 from ${url.origin}${url.pathname}: the admin API is off there (no admin token configured) or this is not Tollgate's admin port` };
  return { ok: false, message: `unexpected answer ${response.status} from ${url.origin}${url.pathname}`, body };
}

/** Runs a parsed command against the API; answers the exit code. */
export async function runAdminCommand(command: AdminCommand, stdout: Output, stderr: Output): Promise<number> {
  if (command.help) {
    stdout.write(adminUsage(command.command));
    return 0;
  }
  let answer: Answer;
  if (command.command === 'blocks') {
    // Every page, following nextCursor to the end.
    const blocks: unknown[] = [];
    let cursor: string | null = null;
    for (;;) {
      const params: Record<string, string | number> = { ...command.params, limit: BLOCKS_PAGE };
      if (cursor !== null) params.cursor = cursor;
      answer = await call(command, params);
      if (!answer.ok) break;
      blocks.push(...((answer.body.blocks as unknown[] | undefined) ?? []));
      cursor = (answer.body.nextCursor as string | null | undefined) ?? null;
      if (cursor === null) {
        answer = { ok: true, body: { blocks } };
        break;
      }
    }
  } else {
    answer = await call(command, command.params);
  }
  if (!answer.ok) {
    if (command.json && answer.body !== undefined) stdout.write(JSON.stringify(answer.body, null, 2) + '\n');
    stderr.write(`tollgate ${command.command}: ${answer.message}\n`);
    return 1;
  }
  stdout.write(command.json ? JSON.stringify(answer.body, null, 2) + '\n' : render(command, answer.body));
  return 0;
}

// ---- tables ----

type Row = Record<string, unknown>;

function table(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: readonly string[]): string => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]))).join('  ').trimEnd() + '\n';
  return line(headers) + rows.map(line).join('');
}

function time(seconds: unknown): string {
  if (typeof seconds !== 'number') return '-';
  return new Date(seconds * 1000).toISOString().replace('.000Z', 'Z');
}

function text(value: unknown): string {
  if (value === null || value === undefined || value === '') return '-';
  if (typeof value === 'boolean') return value ? 'yes' : 'no';
  return String(value);
}

function rowsOf(body: Record<string, unknown>, field: string): Row[] {
  const value = body[field];
  return Array.isArray(value) ? (value as Row[]) : [];
}

function render(command: AdminCommand, body: Record<string, unknown>): string {
  switch (command.command) {
    case 'blocks':
    case 'block': {
      const rows = rowsOf(body, 'blocks');
      if (rows.length === 0) return command.command === 'blocks' ? 'no running blocks\n' : 'nothing blocked\n';
      const out = table(
        ['ROUTE', 'BY', 'KEY', 'UNTIL', 'STRIKE', 'MANUAL', 'REASON'],
        rows.map((r) => [text(r.route), text(r.by), text(r.key), time(r.until), text(r.strike), text(r.manual), text(r.reason)]),
      );
      return command.command === 'blocks' ? out + `${rows.length} running block${rows.length === 1 ? '' : 's'}\n` : out;
    }
    case 'unblock': {
      const rows = rowsOf(body, 'unblocked');
      const lifted = rows.filter((r) => r.wasBlocked === true).length;
      return table(['ROUTE', 'BY', 'KEY', 'WAS BLOCKED'], rows.map((r) => [text(r.route), text(r.by), text(r.key), text(r.wasBlocked)])) + `${lifted} block${lifted === 1 ? '' : 's'} lifted, strikes forgotten; counters kept\n`;
    }
    case 'reset': {
      const rows = rowsOf(body, 'reset');
      return table(['ROUTE', 'BY', 'KEY', 'HAD STATE'], rows.map((r) => [text(r.route), text(r.by), text(r.key), text(r.held)])) + 'counters, blocks and strikes forgotten\n';
    }
    case 'inspect':
      return table(
        ['ROUTE', 'BY', 'FOR', 'KEY', 'WINDOW', 'LIMIT', 'COUNT', 'REMAINING', 'RESET', 'BLOCKED UNTIL', 'STRIKES', 'MANUAL', 'REASON'],
        rowsOf(body, 'limits').map((r) => [
          text(r.route),
          text(r.by),
          text(r.for),
          text(r.key),
          typeof r.window === 'number' ? `${r.window}s` : '-',
          text(r.limit),
          text(r.count),
          text(r.remaining),
          time(r.reset),
          time(r.blockedUntil),
          text(r.strikes),
          text(r.manual),
          text(r.reason),
        ]),
      );
    case 'top': {
      const rows = rowsOf(body, 'top');
      if (rows.length === 0) return 'no refusals in that time\n';
      return table(['ROUTE', 'BY', 'KEY', 'REFUSED'], rows.map((r) => [text(r.route), text(r.by), text(r.key), text(r.count)]));
    }
    default:
      return JSON.stringify(body, null, 2) + '\n';
  }
}
