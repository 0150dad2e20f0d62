/**
 * What a policy file may say: a zod schema for the shape of every field (strict: an
 * unknown key is an error), plus the rules that relate fields to each other
 * (`findContradictions`) and the advice that does not stop a load (`findWarnings`).
 *
 * The schema parses the YAML data (after `${VAR}` expansion) straight into
 * `PolicyConfig`: durations become milliseconds, names are normalised and every
 * default from types.ts is filled in. Issues carry a path into the YAML document;
 * load.ts turns paths into line and column.
 *
 * Messages never quote a value that may be secret (JWT secret or key, passwords,
 * Redis URLs); other values are quoted so the reader sees what was wrong.
 *
 * Every key also carries what an editor shows for it (`doc`: a description, examples,
 * the default as written) and, where zod's input side is looser than the rule, the
 * JSON Schema keywords that say what may be written (`pattern`, `enum`, ...). From these,
 * src/config/json-schema.ts generates schema/policies.schema.json (`npm run gen:schema`).
 */
import ipaddr from 'ipaddr.js';
import { z } from 'zod';
import { DURATION, DURATION_EXAMPLES, MAX_TIMER_MS, parseDuration } from './duration.js';
import { SIZE, SIZE_EXAMPLES, parseSize } from './size.js';
import { originPatternProblem } from '../guards/origins.js';
import type {
  AlgorithmName,
  BodyGuardConfig,
  CorsConfig,
  GuardsConfig,
  JwtConfig,
  LimitBy,
  LimitConfig,
  LimitFor,
  Mode,
  PolicyConfig,
  RedisNodeConfig,
  RedisStoreConfig,
  RouteConfig,
  RouteMatchConfig,
  SecurityHeadersConfig,
  SessionConfig,
} from './types.js';

/** A problem located by its path in the policy data (`['routes', 0, 'limits']`). */
export interface PathIssue {
  path: (string | number)[];
  message: string;
}

export const ALGORITHMS = ['sliding-window', 'sliding-log', 'fixed-window', 'token-bucket'] as const satisfies readonly AlgorithmName[];
export const MODES = ['enforce', 'shadow'] as const satisfies readonly Mode[];
const LIMIT_FOR = ['any', 'anonymous', 'authenticated'] as const satisfies readonly LimitFor[];

/** JWS algorithms jose verifies; HS* use a shared secret, the rest a public key. */
export const JWT_ALGORITHMS = [
  'HS256', 'HS384', 'HS512',
  'RS256', 'RS384', 'RS512',
  'PS256', 'PS384', 'PS512',
  'ES256', 'ES384', 'ES512',
  'EdDSA', 'Ed25519',
] as const;
const JWT_KEY_SOURCES = ['secret', 'publicKey', 'jwksUrl'] as const;

/** RFC 9110 `token` characters: what header names, cookie names and methods are made of. */
const TOKEN_CHARS = "[!#$%&'*+\\-.^_`|~0-9A-Za-z]+";
const HTTP_TOKEN = new RegExp(`^${TOKEN_CHARS}$`);
/** Route ids appear inside Redis keys and hash tags, so no `{`, `}`, `:` or spaces. */
const ROUTE_ID = /^[A-Za-z0-9._-]+$/;
const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]+-----END \1-----/;
const MIN_HMAC_SECRET_BYTES = 32;

// ---------------------------------------------------------------------------
// Messages

/** The value as a reader would recognise it; only for fields that are never secret. */
function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value);
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return kindOf(value);
}

/** What sort of value this is, without revealing it. */
function kindOf(value: unknown): string {
  if (value === null || value === undefined) return 'an empty value';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a map';
  if (typeof value === 'string') return 'text';
  if (typeof value === 'boolean') return 'true/false';
  return `a ${typeof value}`;
}

const EXPECTED: Readonly<Record<string, string>> = {
  object: 'a map (key: value)',
  record: 'a map (key: value)',
  array: 'a list',
  string: 'text',
  number: 'a number',
  int: 'an integer',
  boolean: 'true or false',
};

/**
 * Fallback wording for zod issues that a field did not word itself (passed to
 * `safeParse`). Never quotes the input of a type error: it may be a secret.
 */
export function describeIssue(issue: z.core.$ZodRawIssue): string | undefined {
  switch (issue.code) {
    case 'invalid_type': {
      if (issue.input === undefined) return 'is required';
      const expected = EXPECTED[issue.expected] ?? issue.expected;
      return `expected ${expected}, got ${kindOf(issue.input)}${quotingHint(issue.input, issue.expected)}`;
    }
    case 'invalid_value':
      return `must be one of ${issue.values.map(String).join(', ')}, got ${show(issue.input)}`;
    case 'too_small':
      if (issue.origin === 'array') return `must list at least ${issue.minimum} item(s)`;
      if (issue.origin === 'string') return 'must not be empty';
      return `must be at least ${issue.minimum}`;
    case 'too_big':
      return `must be at most ${issue.maximum}`;
    case 'unrecognized_keys':
      return issue.keys.map((key) => `unknown key ${JSON.stringify(key)}`).join('\n');
    default:
      return undefined;
  }
}

/**
 * `must be RULE, got VALUE`; a missing value falls through to "is required". In YAML
 * quotes decide between text and numbers or booleans, which is easy to miss, hence
 * the hints.
 */
function mustBe(rule: string, options: { secret?: boolean } = {}) {
  return (issue: { input?: unknown; expected?: string }) => {
    if (issue.input === undefined) return undefined;
    const got = options.secret ? kindOf(issue.input) : show(issue.input);
    return `must be ${rule}, got ${got}${quotingHint(issue.input, issue.expected)}`;
  };
}

function quotingHint(input: unknown, expected: string | undefined): string {
  if (expected === 'string') {
    return typeof input === 'number' || typeof input === 'boolean' ? ' (put the value in quotes to use it as text)' : '';
  }
  const quotedScalar = typeof input === 'string' && /^(-?\d+(\.\d+)?|true|false)$/.test(input);
  return quotedScalar ? ' (quoted values are text: remove the quotes)' : '';
}

/** Edit distance, to suggest the key that was meant. */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1);
      current[j] = Math.min(previous[j] + 1, current[j - 1] + 1, substitution);
    }
    previous = current;
  }
  return previous[b.length];
}

function unknownKeyMessage(key: string, known: readonly string[]): string {
  const nearest = known
    .map((candidate) => ({ candidate, distance: editDistance(key.toLowerCase(), candidate.toLowerCase()) }))
    .sort((x, y) => x.distance - y.distance)[0];
  if (nearest !== undefined && nearest.distance <= 2) return `unknown key "${key}" (did you mean "${nearest.candidate}"?)`;
  return `unknown key "${key}" (allowed here: ${known.join(', ')})`;
}

/**
 * A zod strict object whose unknown-key message suggests the key that was meant.
 * One zod issue covers all unknown keys of a map, so its message has one line per
 * key, in `issue.keys` order; load.ts splits it to point at each key.
 */
function strictObject<Shape extends z.core.$ZodLooseShape>(shape: Shape) {
  const known = Object.keys(shape);
  return z.strictObject(shape, {
    error: (issue) =>
      issue.code === 'unrecognized_keys' ? issue.keys.map((key) => unknownKeyMessage(key, known)).join('\n') : undefined,
  });
}

/** Drops keys whose value is undefined, so an absent option stays absent. */
function compact<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}

// ---------------------------------------------------------------------------
// What editors show (schema/policies.schema.json)

/** A key's examples and default as they are written in the file. */
export interface KeyDoc {
  readonly examples?: readonly unknown[];
  readonly default?: unknown;
}

/**
 * Examples and defaults by schema. Not zod metadata: toJSONSchema drops both from the
 * input side of a schema that transforms (they would be output values there), and most
 * of ours transform (`30s` becomes 30000).
 */
export const keyDocs = z.registry<KeyDoc>();

/**
 * For a schema that takes any value and checks it in a transform (`guards: off | {...}`,
 * `securityHeaders: strict | off | {...}`), a schema of the forms that may be written:
 * what the JSON Schema shows instead of "anything".
 */
export const writtenAs = z.registry<{ readonly schema: unknown }>(); // a zod schema (typed `unknown`: zod's registry types would recurse into it)

/**
 * `schema` with what an editor shows on hover: a copy (so a shared leaf such as
 * `duration` carries no one key's text) with the description as zod metadata and the
 * examples and written default in `keyDocs`.
 */
function doc<T extends z.ZodType>(schema: T, description: string, extra: KeyDoc = {}): T {
  const documented = schema.meta({ description });
  if (extra.examples !== undefined || extra.default !== undefined) keyDocs.add(documented, extra);
  return documented;
}

/** A JSON Schema `pattern` that reads as `regex` does (for keys whose zod check is a transform or refine). */
function pattern(regex: RegExp): { pattern: string } {
  return { pattern: regex.source };
}

// ---------------------------------------------------------------------------
// Leaf values

const text = z.string().min(1, { error: 'must not be empty', abort: true });
/** Text that must never be quoted back (secrets, keys, URLs with passwords). */
const secretText = z.string({ error: mustBe('text', { secret: true }) }).min(1, { error: 'must not be empty', abort: true });
const flag = z.boolean({ error: mustBe('true or false') });

function integer(min: number, max: number, rule: string) {
  const error = mustBe(rule);
  // abort: one message per bad value, not one per failed check
  return z.number({ error }).int({ error, abort: true }).min(min, { error, abort: true }).max(max, { error });
}
const positiveInteger = integer(1, Number.MAX_SAFE_INTEGER, 'a positive integer');

/** `1w`, `2mo`: calendar periods, only for a limit's window. */
const CALENDAR_WINDOW = /^(\d+)(w|mo)$/;
const DAY_MS = 24 * 60 * 60 * 1000;
/** Nominal length of a calendar unit: a week, and the longest month (TTLs, identity). */
const CALENDAR_UNIT_MS = { w: 7 * DAY_MS, mo: 31 * DAY_MS } as const;

export const duration = z
  .string({
    error: (issue) =>
      issue.input === undefined
        ? undefined
        : typeof issue.input === 'number'
          ? `a duration needs a unit: write ${issue.input}s, ${issue.input}ms, ... (use ${DURATION_EXAMPLES})`
          : `must be a duration (use ${DURATION_EXAMPLES}), got ${show(issue.input)}`,
  })
  .transform((value, ctx) => {
    const ms = parseDuration(value);
    if (ms === undefined) {
      const message = CALENDAR_WINDOW.test(value)
        ? `${show(value)} is a calendar period: weeks and months exist only for a limit's window (with fixed-window); use ${DURATION_EXAMPLES}`
        : `invalid duration ${show(value)} (use ${DURATION_EXAMPLES})`;
      ctx.addIssue({ code: 'custom', input: value, message });
      return z.NEVER;
    }
    if (ms <= 0) {
      ctx.addIssue({ code: 'custom', input: value, message: `duration must be longer than 0, got ${show(value)}` });
      return z.NEVER;
    }
    return ms;
  })
  .meta(pattern(DURATION));

/** A duration something waits for with a timer (a timeout, a session's bound, a lease renewed each third). */
const timerDuration = duration
  .refine((ms) => ms <= MAX_TIMER_MS, { error: 'must be at most 24d: a timer cannot wait longer' })
  .meta(pattern(DURATION));

/** A limit's window: a duration, or a calendar period (`1w` from Monday 00:00, `1mo` from the 1st). */
const limitWindow = z
  .string({ error: mustBe(`a duration (${DURATION_EXAMPLES}) or a calendar period (1w, 1mo)`) })
  .transform((value, ctx): { ms: number; calendar?: { unit: 'w' | 'mo'; count: number } } => {
    const calendar = CALENDAR_WINDOW.exec(value);
    if (calendar === null) {
      const parsed = duration.safeParse(value);
      if (parsed.success) return { ms: parsed.data };
      for (const issue of parsed.error.issues) ctx.addIssue({ code: 'custom', input: value, message: issue.message });
      return z.NEVER;
    }
    const count = Number(calendar[1]);
    const unit = calendar[2] as 'w' | 'mo';
    if (!Number.isSafeInteger(count) || count <= 0 || count > 1200) {
      ctx.addIssue({ code: 'custom', input: value, message: `a calendar window needs a count from 1 to 1200, got ${show(value)}` });
      return z.NEVER;
    }
    return { ms: count * CALENDAR_UNIT_MS[unit], calendar: { unit, count } };
  })
  .meta({ anyOf: [pattern(DURATION), pattern(CALENDAR_WINDOW)] });

/** A byte size (`512b`, `64kb`, `1mb`; 1024-based), parsed to bytes; never 0. */
export const size = z
  .string({
    error: (issue) =>
      issue.input === undefined
        ? undefined
        : typeof issue.input === 'number'
          ? `a size needs a unit: write ${issue.input}b, ${issue.input}kb, ... (use ${SIZE_EXAMPLES})`
          : `must be a size (use ${SIZE_EXAMPLES}), got ${show(issue.input)}`,
  })
  .transform((value, ctx) => {
    const bytes = parseSize(value);
    if (bytes === undefined) {
      ctx.addIssue({ code: 'custom', input: value, message: `invalid size ${show(value)} (use ${SIZE_EXAMPLES}; units are lower-case and 1024-based)` });
      return z.NEVER;
    }
    if (bytes <= 0) {
      ctx.addIssue({ code: 'custom', input: value, message: `size must be larger than 0, got ${show(value)}` });
      return z.NEVER;
    }
    return bytes;
  })
  .meta(pattern(SIZE));

/** URL schemes are case-insensitive (`HTTPS://` is https:). */
const HTTP_URL_START = /^[Hh][Tt][Tt][Pp][Ss]?:\/\//;
const REDIS_URL_START = /^[Rr][Ee][Dd][Ii][Ss][Ss]?:\/\//;

function httpUrl(example: string) {
  return z.string({ error: mustBe(`an http:// or https:// URL`, { secret: true }) }).refine(
    (value) => URL.canParse(value) && ['http:', 'https:'].includes(new URL(value).protocol),
    { error: `must be an http:// or https:// URL (e.g. ${example})` },
  ).meta(pattern(HTTP_URL_START));
}

const redisUrl = z
  .string({ error: mustBe('a redis:// or rediss:// URL', { secret: true }) })
  .refine((value) => URL.canParse(value) && ['redis:', 'rediss:'].includes(new URL(value).protocol), {
    error: 'must be a redis:// or rediss:// URL (e.g. redis://127.0.0.1:6379)',
  })
  .meta(pattern(REDIS_URL_START));

/** Bare IPv4 only in dotted-quad form: ipaddr.js would also take `10` or `0x0a.1`. */
function isIpAddress(value: string): boolean {
  return ipaddr.IPv4.isValidFourPartDecimal(value) || ipaddr.IPv6.isValid(value);
}

function isIpOrCidr(value: string): boolean {
  const slash = value.indexOf('/');
  if (slash < 0) return isIpAddress(value);
  return isIpAddress(value.slice(0, slash)) && /^\d{1,3}$/.test(value.slice(slash + 1)) && ipaddr.isValidCIDR(value);
}

const ipOrCidr = z
  .string({ error: mustBe('an IP address or CIDR') })
  .refine(isIpOrCidr, { error: (issue) => `must be an IP address or CIDR (e.g. 10.0.0.0/8, ::1), got ${show(issue.input)}` });

function httpToken(what: string) {
  return z
    .string({ error: mustBe(what) })
    .refine((value) => HTTP_TOKEN.test(value), {
      error: (issue) => `must be ${what} (letters, digits and !#$%&'*+-.^_\`|~, no spaces), got ${show(issue.input)}`,
    })
    .meta(pattern(HTTP_TOKEN));
}
const headerName = httpToken('an HTTP header name').transform((name) => name.toLowerCase());

const algorithm = z.enum(ALGORITHMS);
const mode = z.enum(MODES);

// ---------------------------------------------------------------------------
// Sections

const clientIpSchema = strictObject({
  trustedProxies: doc(
    z.array(ipOrCidr).default([]),
    'Proxies (IP addresses or CIDRs) whose X-Forwarded-For is believed. The client is then the rightmost hop that is not itself trusted; from any other peer X-Forwarded-For is ignored.',
    { examples: [['127.0.0.1/32', '10.0.0.0/8']] },
  ),
  ipv6Prefix: doc(integer(0, 128, 'an integer from 0 to 128').default(64), 'IPv6 clients are keyed by their network of this prefix length (one host usually owns a whole /64).', {
    examples: [64],
  }),
});

const jwtAlgorithm = z.string({ error: mustBe('a JWT algorithm name') }).refine(
  (value): value is (typeof JWT_ALGORITHMS)[number] => (JWT_ALGORITHMS as readonly string[]).includes(value),
  {
    error: (issue) =>
      typeof issue.input === 'string' && issue.input.toLowerCase() === 'none'
        ? '"none" is never accepted: unsigned tokens would let anyone claim any identity'
        : `unsupported JWT algorithm ${show(issue.input)} (use one of ${JWT_ALGORITHMS.join(', ')})`,
  },
).meta({ enum: [...JWT_ALGORITHMS] });

const publicKey = secretText.refine((value) => PEM_BLOCK.test(value), {
  error: 'must be a PEM public key (-----BEGIN PUBLIC KEY----- ... -----END PUBLIC KEY-----)',
}).refine((value) => !/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(value), {
  error: 'holds a PRIVATE key; give the matching public key (never put private keys in the policy)',
}).meta(pattern(PEM_BLOCK));

const jwtSchema = strictObject({
  secret: doc(secretText.optional(), 'HS256/384/512 shared secret (at least 32 random bytes), best from the environment. Give exactly one of secret, publicKey or jwksUrl.', {
    examples: ['${JWT_SECRET}'],
  }),
  publicKey: doc(publicKey.optional(), 'PEM public key (RS*, PS*, ES*, EdDSA) the tokens are verified with. Give exactly one of secret, publicKey or jwksUrl.', {
    examples: ['-----BEGIN PUBLIC KEY-----\n...\n-----END PUBLIC KEY-----'],
  }),
  jwksUrl: doc(httpUrl('https://issuer.example/.well-known/jwks.json').optional(), "The issuer's JWKS (http:// or https://). Unreachable: users are anonymous, logged once per outage. Give exactly one of secret, publicKey or jwksUrl.", {
    examples: ['https://auth.example.com/.well-known/jwks.json'],
  }),
  algorithms: doc(z.array(jwtAlgorithm).min(1, { error: 'list at least one algorithm, e.g. [HS256]' }), 'The JWS algorithms accepted (pinned); `none` is always refused. HS* need secret, the others publicKey or jwksUrl.', {
    examples: [['HS256']],
  }),
  userClaim: doc(text.default('sub'), 'The claim holding the user id (the key of `by: user` limits).', { examples: ['sub'] }),
  tierClaim: doc(text.optional(), "Optional: the claim naming the user's tier, which picks a limit's `tiers:` entry.", { examples: ['plan'] }),
  cookie: doc(httpToken('a cookie name').optional(), 'Optional: also read the token from this cookie (after `Authorization: Bearer`). Never from the query string.', {
    examples: ['session'],
  }),
  issuer: doc(text.optional(), 'Optional: the `iss` a token must carry (enforced when set).', { examples: ['https://auth.example.com'] }),
  audience: doc(z.union([text, z.array(text).min(1)], { error: 'must be text or a list of text' }).optional(), 'Optional: the `aud` a token must carry, or a list of which one must match (enforced when set).', {
    examples: ['voice-api'],
  }),
  requireExp: doc(flag.default(true), 'A token without `exp` is anonymous (default): a token that never expires is a leaked key forever. false accepts such tokens.', {
    examples: [true],
  }),
}).transform((jwt): JwtConfig => compact(jwt)).meta({
  // Exactly one key source (findContradictions says why in its own words).
  oneOf: [{ required: ['secret'] }, { required: ['publicKey'] }, { required: ['jwksUrl'] }],
});

const identityForwardSchema = strictObject({
  user: doc(headerName.optional(), 'Request header that carries the believed user id to the upstream (removed from every client request first).', {
    examples: ['x-tollgate-user'],
  }),
  tier: doc(headerName.optional(), 'Request header that carries the believed tier to the upstream (removed from every client request first).', {
    examples: ['x-tollgate-tier'],
  }),
}).transform(compact);

const identitySchema = strictObject({
  jwt: doc(jwtSchema.optional(), 'Verify a JWT from `Authorization: Bearer` (or `cookie`). An invalid, expired or unverifiable token means anonymous.', {
    examples: [{ secret: '${JWT_SECRET}', algorithms: ['HS256'], userClaim: 'sub', tierClaim: 'plan' }],
  }),
  header: doc(headerName.optional(), 'Optional: a user id set by a trusted auth layer in front; believed only from `clientIp.trustedProxies`. A verified JWT wins over it.', {
    examples: ['x-user-id'],
  }),
  forward: doc(identityForwardSchema.optional(), 'Optional: on matched routes, send the identity Tollgate believed to the upstream under these header names, so the app need not verify the JWT again.', {
    examples: [{ user: 'x-tollgate-user', tier: 'x-tollgate-tier' }],
  }),
}).transform(compact).meta({ anyOf: [{ required: ['jwt'] }, { required: ['header'] }] });

const allowSchema = strictObject({
  ips: doc(z.array(ipOrCidr).default([]), 'Client IPs or CIDRs that are never limited (guards still apply).', { examples: [['10.1.0.0/16']] }),
  users: doc(z.array(text).default([]), 'User ids that are never limited (guards still apply).', { examples: [['healthcheck-bot']] }),
});

// Guards (README "Guards") -------------------------------------------------

const origin = z.string({ error: mustBe('an origin such as https://app.example.com') }).superRefine((value, ctx) => {
  const problem = originPatternProblem(value);
  if (problem !== undefined) ctx.addIssue({ code: 'custom', input: value, message: problem });
});

/** `type/subtype`, lower-cased, without parameters. */
const MEDIA_TYPE = new RegExp(`^${TOKEN_CHARS}/${TOKEN_CHARS}$`);
const mediaType = z
  .string({ error: mustBe('a media type such as application/json') })
  .refine((value) => MEDIA_TYPE.test(value), {
    error: (issue) => `must be a media type without parameters (type/subtype, e.g. application/json), got ${show(issue.input)}`,
  })
  .transform((value) => value.toLowerCase())
  .meta(pattern(MEDIA_TYPE));

const corsSchema = strictObject({
  methods: doc(
    z.array(httpToken('an HTTP method').transform((method) => method.toUpperCase())).min(1, { error: 'list at least one method' }).optional(),
    "Methods a preflight may ask for (Access-Control-Allow-Methods). Default: the route's `methods` guard, else GET, HEAD, POST.",
    { examples: [['POST']] },
  ),
  headers: doc(z.array(headerName).default([]), 'Request headers a preflight may ask for (Access-Control-Allow-Headers). Default: none.', {
    examples: [['authorization', 'content-type', 'x-csrf-token']],
  }),
  exposeHeaders: doc(z.array(headerName).default([]), 'Response headers the page may read (Access-Control-Expose-Headers), e.g. to back off on a 429. Default: none.', {
    examples: [['retry-after', 'ratelimit', 'ratelimit-policy', 'x-request-id']],
  }),
  credentials: doc(flag.default(false), 'Access-Control-Allow-Credentials: true (cookies and Authorization on cross-origin requests). Default false.', {
    examples: [true],
  }),
  maxAge: doc(duration.optional(), 'How long a browser may cache a preflight answer (Access-Control-Max-Age, in seconds). Default: no Max-Age.', {
    examples: ['24h'],
  }),
}).transform(({ maxAge, methods, ...cors }): CorsConfig => compact({ ...cors, methods: methods ?? [], maxAgeMs: maxAge }));

const bodyGuardSchema = strictObject({
  json: doc(flag.optional(), 'true: the body must be JSON (implied by schema).', { examples: [true] }),
  schema: doc(text.optional(), 'A JSON Schema file (draft 2020-12, relative to the policy file) the body must be valid against, compiled once at load.', {
    examples: ['schemas/token-request.json'],
  }),
}).transform((body, ctx): BodyGuardConfig => {
  if (body.schema === undefined && body.json !== true) {
    ctx.addIssue({ code: 'custom', input: body, message: 'give json: true (any JSON) or schema: FILE (a JSON Schema, relative to the policy file)' });
    return z.NEVER;
  }
  return compact({ json: true, schema: body.schema });
});

const csrfSchema = strictObject({
  cookie: doc(httpToken('a cookie name'), 'The cookie holding the CSRF token.', { examples: ['csrf_token'] }),
  header: doc(headerName, 'The request header that must repeat the cookie (compared in constant time).', { examples: ['x-csrf-token'] }),
});

const SECURITY_HEADERS_RULE = 'strict, off or a map of header names to values';

/** `strict | off | { Header-Name: value, ..., override: true }`. */
const securityHeadersSchema = z.unknown().transform((value, ctx): SecurityHeadersConfig => {
  if (value === 'strict' || value === 'off') return value;
  const map = typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  if (map === undefined) {
    ctx.addIssue({ code: 'custom', input: value, message: `must be ${SECURITY_HEADERS_RULE}, got ${show(value)}` });
    return z.NEVER;
  }
  const headers: Record<string, string> = {};
  let override = false;
  let failed = false;
  for (const [name, headerValue] of Object.entries(map)) {
    const fail = (message: string): void => {
      failed = true;
      ctx.addIssue({ code: 'custom', input: headerValue, path: [name], message });
    };
    if (name === 'override') {
      if (typeof headerValue === 'boolean') override = headerValue;
      else fail(`must be true or false, got ${show(headerValue)}`);
    } else if (!HTTP_TOKEN.test(name)) {
      fail(`${show(name)} is not an HTTP header name`);
    } else if (typeof headerValue !== 'string' || headerValue.trim() === '') {
      fail(`must be the header's value (text), got ${show(headerValue)}`);
    } else if (/[\r\n\0]/.test(headerValue)) {
      fail('must be one line (no line breaks)');
    } else if (Object.keys(headers).some((other) => other.toLowerCase() === name.toLowerCase())) {
      fail(`names ${name} twice (header names are case-insensitive)`);
    } else {
      headers[name] = headerValue;
    }
  }
  if (!failed && Object.keys(headers).length === 0) {
    ctx.addIssue({ code: 'custom', input: value, message: 'list at least one header (or use off)' });
    failed = true;
  }
  return failed ? z.NEVER : { headers, override };
});
writtenAs.add(securityHeadersSchema, {
  schema: z.union([
    doc(z.enum(['strict', 'off']), '`strict`: nosniff, DENY framing, a referrer policy, a CSP, no-store, and HSTS over HTTPS, where the response lacks them. `off`: none.'),
    doc(
      z.object({ override: doc(flag.optional(), "true: the map's values replace the upstream's (default: the app's own values win).", { examples: [true] }) })
        .catchall(z.string().min(1))
        .meta({ propertyNames: pattern(HTTP_TOKEN), minProperties: 1 }),
      'Exactly these headers (name: value).',
      { examples: [{ 'Permissions-Policy': 'microphone=(self)', override: true }] },
    ),
  ]),
});

/** The keys of a guards map, in the order the guards run. */
export const GUARD_KEYS = ['methods', 'origins', 'requireOrigin', 'cors', 'maxBodySize', 'contentTypes', 'body', 'csrf', 'auth', 'securityHeaders'] as const;

const guardsSchema = strictObject({
  methods: doc(methodsSchemaFor('list at least one method, or remove methods to allow every method'), 'Other methods get 405 METHOD_NOT_ALLOWED with Allow. GET covers HEAD.', {
    examples: [['POST']],
  }),
  auth: doc(z.enum(['required', 'optional']).optional(), '`required`: a request without a verified identity (a valid JWT, or the identity header from a trusted proxy) gets 401 AUTH_REQUIRED. Needs an identity section. Default `optional`.', {
    examples: ['required'],
  }),
  origins: doc(
    z.array(origin).min(1, { error: 'list at least one origin, or remove origins to allow every origin' }).optional(),
    'The Origin must be listed, else 403 ORIGIN_NOT_ALLOWED (WebSocket upgrades too). `*.` stands for one or more leading labels; `null` only when listed; never `*`. Without Origin a request passes.',
    { examples: [['https://app.example.com', 'https://*.example.com']] },
  ),
  requireOrigin: doc(flag.optional(), 'A request without Origin is refused as well (browser-only endpoints). Needs origins.', { examples: [true] }),
  cors: doc(corsSchema.optional(), 'Tollgate answers CORS preflights itself and adds CORS headers for allowed origins to every response. Needs origins.', {
    examples: [{ methods: ['POST'], headers: ['authorization'], exposeHeaders: ['retry-after'], credentials: true, maxAge: '24h' }],
  }),
  maxBodySize: doc(size.optional(), 'The largest request body: a larger Content-Length gets 413 PAYLOAD_TOO_LARGE; a chunked body is counted as it streams.', {
    examples: ['16kb'],
  }),
  contentTypes: doc(
    z.array(mediaType).min(1, { error: 'list at least one media type, or remove contentTypes' }).optional(),
    'A request with a body must have one of these media types (parameters and case ignored), else 415 UNSUPPORTED_MEDIA_TYPE.',
    { examples: [['application/json']] },
  ),
  body: doc(bodyGuardSchema.optional(), 'The body is read (at most maxBodySize) and must be JSON or valid against a JSON Schema, else 400 INVALID_BODY. Needs maxBodySize.', {
    examples: [{ schema: 'schemas/token-request.json' }, { json: true }],
  }),
  csrf: doc(csrfSchema.optional(), 'Double-submit CSRF: POST, PUT, PATCH and DELETE need the cookie and the header, equal and non-empty, else 403 CSRF_TOKEN_INVALID.', {
    examples: [{ cookie: 'csrf_token', header: 'x-csrf-token' }],
  }),
  securityHeaders: doc(securityHeadersSchema.optional(), 'Security headers added to responses: `strict`, `off`, or a map of exactly these headers (with `override: true` to replace the upstream\'s values).', {
    examples: ['strict', { 'Permissions-Policy': 'microphone=(self)', override: true }],
  }),
}).transform((guards): GuardsConfig => compact(guards));

/** A route's `guards`: a map, or `off` (YAML 1.2: a string) to turn `defaults.guards` off here. */
const routeGuardsSchema = z.unknown().transform((value, ctx): GuardsConfig | 'off' => {
  if (value === 'off') return 'off';
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    ctx.addIssue({ code: 'custom', input: value, message: `must be a map of guards, or off to turn defaults.guards off here, got ${show(value)}` });
    return z.NEVER;
  }
  const parsed = guardsSchema.safeParse(value, { error: describeIssue });
  if (parsed.success) return parsed.data;
  // The issues keep their paths (relative to guards) and codes (unknown keys are split by load.ts).
  for (const issue of parsed.error.issues) ctx.addIssue({ ...issue } as unknown as z.core.$ZodRawIssue);
  return z.NEVER;
});
writtenAs.add(routeGuardsSchema, {
  schema: z.union([doc(z.literal('off'), 'Turns defaults.guards off on this route.'), guardsSchema]),
});

const ALGORITHM_DESCRIPTION =
  'sliding-window (default: weighted counts of the current and previous window), fixed-window (one counter per window or calendar period), sliding-log (exact, remembers each request), token-bucket (bursts up to the limit, refilled over the window).';

const defaultsSchema = strictObject({
  algorithm: doc(algorithm.default('sliding-window'), `The algorithm of every limit that does not name one: ${ALGORITHM_DESCRIPTION}`, { examples: ['sliding-window'] }),
  mode: doc(mode.default('enforce'), 'enforce: refuse over the limit (429). shadow: count and log would-be refusals, never refuse.', { examples: ['enforce'] }),
  guards: doc(guardsSchema.optional(), "Guards of every route, merged key by key under each route's own (`guards: off` on a route turns them off there).", {
    examples: [{ securityHeaders: 'strict' }],
  }),
});

/** What `routePath` accepts: from `/`, no `?` or `#`, and `*` only as a trailing `/*`. */
const ROUTE_PATH = /^\/(?:[^*?#]*\/)?(?:[^*?#]*|\*)$/;
const routePath = z.string({ error: mustBe('a path starting with /') }).superRefine((value, ctx) => {
  const problem = !value.startsWith('/')
    ? 'must start with /'
    : value.includes('*') && (value.indexOf('*') !== value.length - 1 || !value.endsWith('/*'))
      ? 'may contain * only in a trailing /* (prefix match); use regex for other patterns'
      : /[?#]/.test(value)
        ? 'must not contain ? or # (the query and fragment are not matched)'
        : undefined;
  if (problem !== undefined) ctx.addIssue({ code: 'custom', input: value, message: `path ${show(value)} ${problem}` });
}).meta(pattern(ROUTE_PATH));

const routeRegex = z.string({ error: mustBe('a regular expression') }).superRefine((value, ctx) => {
  try {
    new RegExp(value);
  } catch (error) {
    const reason = error instanceof Error ? error.message.split(': ').at(-1) : String(error);
    ctx.addIssue({ code: 'custom', input: value, message: `regex does not compile: ${reason}` });
  }
});

function methodsSchemaFor(empty: string) {
  return z.array(httpToken('an HTTP method').transform((method) => method.toUpperCase())).min(1, { error: empty }).optional();
}
const methodsSchema = methodsSchemaFor('list at least one method, or remove methods to match every method');

const matchSchema = strictObject({
  path: doc(routePath.optional(), 'Exact path, or a prefix ending in `/*` (`/api/livekit/*` matches /api/livekit and everything below it, not /api/livekitx). Compared with the canonical path; the query never counts. Give path or regex.', {
    examples: ['/api/livekit/token', '/api/transcription/*'],
  }),
  regex: doc(routeRegex.optional(), 'Instead of path: a regular expression tested against the canonical path.', { examples: ['^/api/v[0-9]+/token$'] }),
  methods: doc(methodsSchema, 'Upper-case method list; absent = any method. GET also covers HEAD.', { examples: [['POST']] }),
  websocket: doc(flag.optional(), 'true: only WebSocket upgrades match; false: only plain requests; absent: both.', { examples: [true] }),
  caseSensitive: doc(flag.optional(), 'Compare paths case-sensitively (default false: paths are compared lower-cased). Also accepted on the route.', {
    examples: [true],
  }),
}).meta({ oneOf: [{ required: ['path'] }, { required: ['regex'] }] });

const limitBy = z.string({ error: mustBe('ip, user, global or header:NAME') }).transform((value, ctx): LimitBy => {
  if (value === 'ip' || value === 'user' || value === 'global') return value;
  if (value.startsWith('header:')) {
    const name = value.slice('header:'.length);
    if (HTTP_TOKEN.test(name)) return `header:${name.toLowerCase()}`;
    ctx.addIssue({ code: 'custom', input: value, message: `${show(value)} does not name a valid HTTP header (write header:NAME, e.g. header:x-api-key)` });
    return z.NEVER;
  }
  ctx.addIssue({ code: 'custom', input: value, message: `must be ip, user, global or header:NAME, got ${show(value)}` });
  return z.NEVER;
}).meta(pattern(new RegExp(`^(?:ip|user|global|header:${TOKEN_CHARS})$`)));

/** `5xx` and friends: a status class. */
const STATUS_CLASS = /^[1-5]xx$/;

/** `count.status`: codes 100-599 or classes, expanded to codes (sorted, unique). */
const statusList = z
  .array(
    z.union([integer(100, 599, 'a status code from 100 to 599 or a class "1xx"-"5xx"'), z.string().regex(STATUS_CLASS)], {
      error: mustBe('a status code from 100 to 599 or a class "1xx"-"5xx"'),
    }),
  )
  .min(1, { error: 'list at least one status (e.g. [401, 403] or ["5xx"])' })
  .transform((items) => {
    const codes = new Set<number>();
    for (const item of items) {
      if (typeof item === 'number') codes.add(item);
      else for (let code = Number(item[0]) * 100; code < Number(item[0]) * 100 + 100; code++) codes.add(code);
    }
    return [...codes].sort((a, b) => a - b);
  });

const costHeaderSchema = strictObject({
  header: doc(headerName, 'The response header the upstream reports the cost in (removed from the response to the client).', { examples: ['x-usage-tokens'] }),
  default: doc(integer(0, Number.MAX_SAFE_INTEGER, 'a whole number >= 0').default(1), 'Units reserved at admission, and charged when the header is missing or malformed (and for Tollgate\'s own 502/504). May be 0. Default 1.', {
    examples: [1],
  }),
  max: doc(positiveInteger.default(Number.MAX_SAFE_INTEGER), 'A larger reported cost is charged as this. Default 2^53 - 1.', { examples: [100000] }),
});

/** `cost: 10` (a weight per request) or `cost: { header, default, max }` (the upstream reports it). */
const costSchema = z.union([positiveInteger, costHeaderSchema], {
  error: mustBe('a whole number >= 1 or a map { header, default, max }'),
});

/** One block duration, or a list for escalating blocks. */
const blockSchema = z.union([duration, z.array(duration).min(1, { error: 'list at least one duration' })], {
  error: mustBe(`a duration (${DURATION_EXAMPLES}) or a list of durations`),
});

/** An IANA time zone name (`Europe/Berlin`, `UTC`), as the runtime's time zone database knows it. */
const timezone = z.string({ error: mustBe('an IANA time zone name (e.g. Europe/Berlin)') }).refine(isTimeZone, {
  error: (issue) => `unknown time zone ${show(issue.input)} (use an IANA name such as Europe/Berlin, America/New_York or UTC)`,
});

export function isTimeZone(name: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: name });
    return true;
  } catch {
    return false;
  }
}

const limitSchema = strictObject({
  by: doc(limitBy, 'What is counted: `ip` (client IP, IPv6 by network), `user` (identified users only; anonymous requests skip it), `header:NAME` (the header\'s value, e.g. an API key; a request without it counts under its client IP), `global` (one counter for the route).', {
    examples: ['user', 'ip', 'header:x-api-key', 'global'],
  }),
  limit: doc(positiveInteger.optional(), 'Requests (or cost units) per window (positive integer). With window; or give concurrent instead.', { examples: [10] }),
  window: doc(limitWindow.optional(), 'A duration, or with fixed-window a calendar period: `1w` (from Monday 00:00), `1mo` (from the 1st 00:00).', {
    examples: ['1m', '1h', '1mo'],
  }),
  concurrent: doc(positiveInteger.optional(), 'Instead of limit and window: at most N requests (WebSocket: open sessions) of one key in flight at once.', { examples: [4] }),
  block: doc(blockSchema.optional(), 'Once the limit is exceeded, the key is refused for this long. A list escalates: the n-th block within forgetAfter of the previous one lasts the n-th entry, the last repeating.', {
    examples: ['5m', ['1m', '10m', '1h', '24h']],
  }),
  forgetAfter: doc(duration.optional(), 'With a block list: strikes are forgotten once this long has passed since the previous block ended (default: twice the longest block).', {
    examples: ['24h'],
  }),
  tiers: doc(z.record(z.string(), positiveInteger, { error: mustBe('a map of tier name to limit') }).optional(), "Per-tier limits, chosen by the JWT's tierClaim: `{ tierName: limit }`. Needs identity.jwt.tierClaim.", {
    examples: [{ pro: 30 }],
  }),
  for: doc(z.enum(LIMIT_FOR).default('any'), 'Who the limit applies to: any (default), anonymous or authenticated requests.', { examples: ['anonymous'] }),
  algorithm: doc(algorithm.optional(), `Overrides the route's algorithm: ${ALGORITHM_DESCRIPTION}`, { examples: ['token-bucket'] }),
  count: doc(
    strictObject({
      status: doc(statusList, 'Status codes (100-599) or classes ("5xx") that count.', { examples: [[401, 403], ['5xx']] }),
    }).optional(),
    'Only responses with these statuses count; an admitted request is reserved and given back when its status is not listed.',
    { examples: [{ status: [401, 403] }] },
  ),
  cost: doc(costSchema.optional(), '`N`: each request weighs N units (it needs N left). `{ header, default, max }`: the upstream reports the cost in a response header.', {
    examples: [10, { header: 'x-usage-tokens', default: 1 }],
  }),
  timezone: doc(timezone.optional(), 'With fixed-window and a window of whole days, `w` or `mo`: periods start at local midnight in this IANA time zone.', {
    examples: ['Europe/Berlin'],
  }),
}).transform((limit): LimitConfig => {
  // Which keys go together (limit + window, or concurrent alone; calendar windows and
  // time zones only with fixed-window; ...) is checked by checkLimitKind on the raw data;
  // a load with such an issue fails, so the casts below never reach a compiled policy.
  if (limit.concurrent !== undefined) {
    return compact({ by: limit.by, concurrent: limit.concurrent, tiers: limit.tiers, for: limit.for });
  }
  const window: { ms: number; calendar?: { unit: 'w' | 'mo'; count: number } } = limit.window ?? { ms: 0 };
  const blocks = limit.block === undefined ? undefined : Array.isArray(limit.block) ? limit.block : [limit.block];
  const period = window.calendar ?? (limit.timezone !== undefined ? { unit: 'd' as const, count: Math.max(1, Math.round(window.ms / DAY_MS)) } : undefined);
  return compact({
    by: limit.by,
    limit: limit.limit as number,
    windowMs: window.ms,
    period: period === undefined ? undefined : compact({ ...period, timezone: limit.timezone }),
    blockMs: blocks?.[0],
    blocks: blocks !== undefined && blocks.length > 1 ? blocks : undefined,
    forgetAfterMs: limit.forgetAfter,
    tiers: limit.tiers,
    for: limit.for,
    algorithm: limit.algorithm,
    count: limit.count,
    cost: limit.cost,
  });
}).meta({
  // A rate limit needs limit and window; `concurrent: N` takes their place (checkLimitKind says why).
  if: { required: ['concurrent'] },
  else: { required: ['limit', 'window'] },
});

/**
 * The largest `maxMessageSize`: the frame parser (ws's Receiver) holds its limit in a
 * 32-bit signed integer, so 2048mb and above would silently mean "no limit".
 */
const MAX_MESSAGE_BYTES = 2047 * 1024 * 1024;
const SESSION_LIMITS = ['maxDuration', 'idleTimeout', 'maxMessageSize', 'messages'] as const;

const sessionSchema = strictObject({
  maxDuration: doc(timerDuration.optional(), 'The session is closed (1001 "session duration limit") this long after it opened.', { examples: ['2h'] }),
  idleTimeout: doc(timerDuration.optional(), 'Closed (1001 "idle timeout") after this long without a data message in either direction; ping/pong do not count.', {
    examples: ['30m'],
  }),
  maxMessageSize: doc(
    size
      .refine((bytes) => bytes <= MAX_MESSAGE_BYTES, { error: 'must be at most 2047mb (the largest limit the frame parser can enforce)' })
      .optional(),
    'A larger client message (payload on the wire, over all its fragments) closes the session (1009 "message too big"). At most 2047mb.',
    { examples: ['1mb'] },
  ),
  messages: doc(
    strictObject({
      limit: doc(positiveInteger, 'Client->upstream data messages per window.', { examples: [600] }),
      window: doc(duration, 'The sliding window, counted from the session\'s start.', { examples: ['1m'] }),
    }).optional(),
    'Client->upstream data messages in a sliding window: over it closes the session (1008 "message rate exceeded").',
    { examples: [{ limit: 600, window: '1m' }] },
  ),
}).meta({ minProperties: 1 }).transform(
  (session): SessionConfig =>
    compact({
      maxDurationMs: session.maxDuration,
      idleTimeoutMs: session.idleTimeout,
      maxMessageBytes: session.maxMessageSize,
      messages: session.messages === undefined ? undefined : { limit: session.messages.limit, windowMs: session.messages.window },
    }),
);

const routeSchema = strictObject({
  id: doc(
    z.string({ error: mustBe('a route id') }).refine((value) => ROUTE_ID.test(value), {
      error: (issue) => `route id ${show(issue.input)} may only use letters, digits, ".", "_" and "-" (it is part of store keys)`,
    }).meta(pattern(ROUTE_ID)),
    'Unique route id ([A-Za-z0-9._-]+); names metrics, headers and store keys.',
    { examples: ['livekit-token'] },
  ),
  match: doc(matchSchema, 'Which requests the route applies to: path or regex, and optionally methods and websocket. Routes are tried in file order; the first match wins.', {
    examples: [{ path: '/api/livekit/token', methods: ['POST'] }],
  }),
  caseSensitive: doc(flag.optional(), 'Compare paths case-sensitively (default false). Also accepted in match.', { examples: [true] }),
  mode: doc(mode.optional(), 'Overrides defaults.mode: enforce (refuse over the limit) or shadow (count and log, never refuse).', { examples: ['shadow'] }),
  algorithm: doc(algorithm.optional(), `Overrides defaults.algorithm for the route's limits: ${ALGORITHM_DESCRIPTION}`, { examples: ['fixed-window'] }),
  upstreamTimeout: doc(timerDuration.optional(), "Overrides upstreamTimeout for this route: how long to wait for the upstream's response headers before 504.", {
    examples: ['10s'],
  }),
  message: doc(text.optional(), 'The message of this route\'s 429 answers.', { examples: ['Too many token requests'] }),
  guards: doc(routeGuardsSchema.optional(), 'Checks run before any quota is spent (merged key by key over defaults.guards), or `off` to turn defaults.guards off here.', {
    examples: [{ methods: ['POST'], origins: ['https://app.example.com'] }, 'off'],
  }),
  // Required unless the route has guards (findContradictions says so at the route).
  limits: doc(
    z.array(doc(limitSchema, 'One limit: `{ by, limit, window }` (a rate) or `{ by, concurrent }` (requests in flight).')).default([]),
    'The limits of the route; a request passes only if all that apply pass. May be left out on a route with guards.',
    { examples: [[{ by: 'user', limit: 10, window: '1m', block: '5m' }]] },
  ),
  session: doc(sessionSchema.optional(), 'WebSocket session limits (only with match.websocket: true).', { examples: [{ maxDuration: '2h', idleTimeout: '30m' }] }),
}).transform((route): RouteConfig => {
  const match: RouteMatchConfig = compact({
    ...route.match,
    // Accepted on the route or in match; findContradictions refuses two different values.
    caseSensitive: route.caseSensitive ?? route.match.caseSensitive ?? false,
  });
  return compact({
    id: route.id,
    match,
    message: route.message,
    mode: route.mode,
    algorithm: route.algorithm,
    upstreamTimeoutMs: route.upstreamTimeout,
    guards: route.guards,
    limits: route.limits,
    session: route.session,
  });
});

const redisNodeSchema = strictObject({
  host: doc(text, 'Host name or address of the node.', { examples: ['redis-0.redis'] }),
  port: doc(integer(1, 65535, 'a port from 1 to 65535'), 'Port of the node (1-65535).', { examples: [26379, 6379] }),
  username: doc(text.optional(), 'ACL user for this node (with sentinels: for the sentinel itself).', { examples: ['tollgate'] }),
  password: doc(secretText.optional(), 'Password for this node (with sentinels: for the sentinel itself), best from the environment.', {
    examples: ['${SENTINEL_PASSWORD}'],
  }),
  tls: doc(flag.optional(), 'Connect to this node over TLS.', { examples: [true] }),
}).transform((node): RedisNodeConfig => compact(node));

const redisNodes = z.array(doc(redisNodeSchema, 'A node: `{ host, port }`.')).min(1, { error: 'list at least one {host, port}' });

const redisSchema = strictObject({
  url: doc(redisUrl.optional(), 'redis:// or rediss:// (TLS) URL of a standalone Redis, best from the environment. Give one of url, sentinels (with name) or cluster.', {
    examples: ['${REDIS_URL:-redis://127.0.0.1:6379}'],
  }),
  sentinels: doc(redisNodes.optional(), 'Sentinel nodes that name the master (with name). Give one of url, sentinels or cluster.', {
    examples: [[{ host: 's1', port: 26379 }]],
  }),
  name: doc(text.optional(), 'The sentinel master name (only with sentinels).', { examples: ['mymaster'] }),
  cluster: doc(redisNodes.optional(), 'Redis Cluster seed nodes. Give one of url, sentinels or cluster.', {
    examples: [[{ host: 'n1', port: 6379 }, { host: 'n2', port: 6379 }]],
  }),
  username: doc(text.optional(), 'ACL user (with sentinels: for the master).', { examples: ['tollgate'] }),
  password: doc(secretText.optional(), 'Password (with sentinels: for the master), best from the environment.', { examples: ['${REDIS_PASSWORD}'] }),
  tls: doc(flag.optional(), 'Connect over TLS (as rediss:// does).', { examples: [true] }),
  prefix: doc(
    z
      .string()
      .refine((value) => !/[{}]/.test(value), { error: 'must not contain { or } (they delimit Redis Cluster hash tags)' })
      .default('tollgate:')
      .meta(pattern(/^[^{}]*$/)),
    'Prefix of every key, so several apps can share one Redis. No { or }.',
    { examples: ['tollgate:'] },
  ),
  timeout: doc(timerDuration.default(50), 'Budget for one decision; slower is a store error and onError applies.', { examples: ['50ms'], default: '50ms' }), // ms, already converted: a default skips the transform
  onError: doc(z.enum(['allow', 'deny', 'local']).default('local'), 'While Redis fails: allow (fail open), deny (onErrorStatus with RATE_LIMITER_UNAVAILABLE) or local (in-memory limits divided by the live replicas).', {
    examples: ['local'],
  }),
  onErrorStatus: doc(integer(400, 599, 'an HTTP error status from 400 to 599').default(503), 'The status of refusals while Redis fails with onError: deny (400-599).', {
    examples: [503],
  }),
  clock: doc(z.enum(['redis', 'local']).default('redis'), 'redis: the Redis server\'s TIME inside the script (replica clocks may differ); local: each replica\'s own clock.', {
    examples: ['redis'],
  }),
  expectedReplicas: doc(positiveInteger.default(1), 'The divisor of limits for onError: local until replicas have been seen (keep it equal to the replica count).', {
    examples: [3],
  }),
  slotLease: doc(timerDuration.default(30_000), "Lifetime of a concurrency slot's lease unless its replica renews it (every third of it).", {
    examples: ['30s'],
    default: '30s',
  }), // ms, already converted
}).transform(
  ({ timeout, slotLease, ...redis }): RedisStoreConfig => compact({ ...redis, timeoutMs: timeout, slotLeaseMs: slotLease }),
).meta({ dependentRequired: { sentinels: ['name'], name: ['sentinels'] } });

const storeSchema = strictObject({
  type: doc(z.enum(['memory', 'redis']).default('memory'), 'memory (default): counts in this process, each replica on its own. redis: shared by every replica.', {
    examples: ['redis'],
  }),
  memory: doc(
    strictObject({
      maxKeys: doc(positiveInteger.default(1_000_000), 'Counters kept; the least recently used are evicted at the bound (logged and counted).', { examples: [1000000] }),
      maxBlocks: doc(positiveInteger.default(100_000), 'Running blocks kept, in their own bounded map (a flood of new keys never lifts a block).', {
        examples: [100000],
      }),
    }).prefault({}),
    'Bounds of the memory store (also the fallback of onError: local).',
    { examples: [{ maxKeys: 1000000, maxBlocks: 100000 }] },
  ),
  redis: doc(redisSchema.optional(), 'The Redis store (used with type: redis; see docs/redis.md).', {
    examples: [{ url: '${REDIS_URL}', prefix: 'tollgate:', timeout: '50ms', onError: 'local' }],
  }),
}).transform((store) => {
  if (store.type !== 'redis') return compact(store);
  // `type: redis` alone means a local Redis with every default.
  const redis: RedisStoreConfig = store.redis ?? redisSchema.parse({});
  if (redis.url === undefined && redis.sentinels === undefined && redis.cluster === undefined) redis.url = DEFAULT_REDIS_URL;
  return compact({ ...store, redis });
});

const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';

const logSchema = strictObject({
  access: doc(flag.default(false), 'true: one access-log line per request (path without query).', { examples: [true] }),
});

const pathsSchema = strictObject({
  escapedSlashes: doc(z.enum(['decode', 'reject']).default('decode'), 'decode (default): %2F and %5C count as separators when matching. reject: 400 INVALID_PATH for any %2F or %5C.', {
    examples: ['reject'],
  }),
});

const responsesSchema = strictObject({
  format: doc(
    z.enum(['envelope', 'problem']).default('envelope'),
    "The body of Tollgate's own answers (429, guard refusals, 502, 503, 504, 500): envelope (default: {success: false, error: {code, message, details}}) or problem (RFC 9457 application/problem+json). A client whose Accept prefers application/problem+json gets problem details either way.",
    { examples: ['problem'] },
  ),
});

/** The whole policy file, parsed into `PolicyConfig` with every default filled in. */
export const policySchema = strictObject({
  upstream: doc(httpUrl('http://127.0.0.1:3000').optional(), 'Where allowed requests are forwarded (http:// or https://); `serve --upstream` overrides it.', {
    examples: ['http://127.0.0.1:3000'],
  }),
  upstreamTimeout: doc(timerDuration.default(30_000), "How long to wait for the upstream's response headers; then 504 UPSTREAM_TIMEOUT.", { examples: ['30s'], default: '30s' }), // ms, already converted: a default skips the transform
  clientIp: doc(clientIpSchema.prefault({}), 'How the client IP is found: the socket peer, or behind trusted proxies the rightmost untrusted X-Forwarded-For hop.', {
    examples: [{ trustedProxies: ['127.0.0.1/32', '10.0.0.0/8'], ipv6Prefix: 64 }],
  }),
  identity: doc(identitySchema.optional(), 'Who the user is: a verified JWT, or a user header from a trusted proxy. Absent: every limit is per IP.', {
    examples: [{ jwt: { secret: '${JWT_SECRET}', algorithms: ['HS256'], tierClaim: 'plan' } }],
  }),
  allow: doc(allowSchema.prefault({}), 'Clients that are never limited (guards still apply).', { examples: [{ ips: ['10.1.0.0/16'], users: ['healthcheck-bot'] }] }),
  defaults: doc(defaultsSchema.prefault({}), 'What every route and limit uses unless it says otherwise.', {
    examples: [{ algorithm: 'sliding-window', mode: 'enforce', guards: { securityHeaders: 'strict' } }],
  }),
  routes: doc(
    z.array(doc(routeSchema, 'A route: which requests (match) and what applies to them (limits, guards, session).')).default([]),
    'Tried in file order; the first match wins. A request no route matches passes untouched.',
    { examples: [[{ id: 'livekit-token', match: { path: '/api/livekit/token', methods: ['POST'] }, limits: [{ by: 'user', limit: 10, window: '1m' }] }]] },
  ),
  store: doc(storeSchema.prefault({}), 'Where counts live: memory (default) or redis (shared by replicas). Store settings apply at the next restart.', {
    examples: [{ type: 'memory' }],
  }),
  log: doc(logSchema.prefault({}), 'Logging beyond refusals.', { examples: [{ access: false }] }),
  paths: doc(pathsSchema.prefault({}), 'Path hygiene: how escaped slashes in request paths are treated.', { examples: [{ escapedSlashes: 'reject' }] }),
  responses: doc(responsesSchema.prefault({}), "How Tollgate's own error responses are written.", { examples: [{ format: 'problem' }] }),
}).transform(
  ({ upstreamTimeout, ...policy }): PolicyConfig => compact({ ...policy, upstreamTimeoutMs: upstreamTimeout }),
).meta({
  title: 'Tollgate policy (policies.yaml)',
  description: 'Which requests Tollgate rate-limits, how, and where the counts live. Reference: README.md, "Policy reference".',
});

// ---------------------------------------------------------------------------
// Rules between fields. They read the raw data (before zod), so they still run
// when some other field is wrong and every problem is reported in one pass; a
// field of the wrong type is left to the schema.

type RawMap = Record<string, unknown>;

function asMap(value: unknown): RawMap | undefined {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as RawMap) : undefined;
}

function asList(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}

/** The keys of `map` (in KEYS order) that are present. */
function presentKeys<K extends string>(map: RawMap, keys: readonly K[]): K[] {
  return keys.filter((key) => map[key] !== undefined);
}

/** Contradictions between fields that each look fine on their own. */
export function findContradictions(data: unknown): PathIssue[] {
  const root = asMap(data);
  if (root === undefined) return [];
  const issues: PathIssue[] = [];
  const identity = asMap(root.identity);
  if (identity !== undefined) checkIdentity(identity, issues);
  checkRoutes(asList(root.routes), root, issues);
  checkGuards(root, issues);
  const store = asMap(root.store);
  if (store !== undefined) checkStore(store, issues);
  return issues;
}

/**
 * Headers `identity.forward` must not name: Tollgate strips the forward names from every
 * client request, so one of these would silently drop what the app or Tollgate needs.
 */
const RESERVED_FORWARD_NAMES = new Set([
  'authorization', 'cookie', 'host', 'content-length', 'content-type', 'transfer-encoding', 'connection', 'upgrade',
  'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-request-id', 'x-real-ip', 'forwarded',
]);

function checkIdentity(identity: RawMap, issues: PathIssue[]): void {
  if (identity.jwt === undefined && identity.header === undefined) {
    issues.push({ path: ['identity'], message: 'give jwt or header (or remove identity to limit by IP only)' });
  }
  const forward = asMap(identity.forward);
  if (forward !== undefined) {
    const identityHeader = typeof identity.header === 'string' ? identity.header.toLowerCase() : undefined;
    const seen = new Map<string, string>();
    for (const key of ['user', 'tier'] as const) {
      const name = forward[key];
      if (typeof name !== 'string') continue; // the schema says why
      const lower = name.toLowerCase();
      const path = ['identity', 'forward', key];
      if (RESERVED_FORWARD_NAMES.has(lower)) {
        issues.push({ path, message: `must not be ${lower}: the forward names are removed from every client request; pick a name of your own (e.g. x-tollgate-${key})` });
      } else if (lower === identityHeader) {
        issues.push({ path, message: `must differ from identity.header (${lower}): the client's header would be removed before Tollgate reads it from a trusted proxy` });
      } else if (seen.has(lower)) {
        issues.push({ path, message: `is the same header as identity.forward.${seen.get(lower)}` });
      }
      seen.set(lower, key);
    }
  }
  const jwt = asMap(identity.jwt);
  if (jwt === undefined) return;
  const path = ['identity', 'jwt'];
  const sources = presentKeys(jwt, JWT_KEY_SOURCES);
  if (sources.length !== 1) {
    const found = sources.length === 0 ? 'none' : sources.join(' and ');
    issues.push({
      path,
      message: `give exactly one of secret (HS*), publicKey (PEM) or jwksUrl, found ${found}`,
    });
    return;
  }
  const usesSecret = sources[0] === 'secret';
  asList(jwt.algorithms).forEach((name, index) => {
    if (typeof name !== 'string' || !(JWT_ALGORITHMS as readonly string[]).includes(name)) return; // the schema says why
    const isHmac = name.startsWith('HS');
    if (isHmac === usesSecret) return;
    issues.push({
      path: [...path, 'algorithms', index],
      message: isHmac
        ? `${name} needs a secret, but this jwt has ${sources[0]}; use RS*, PS*, ES* or EdDSA with a public key`
        : `${name} needs publicKey or jwksUrl, but this jwt has a secret; use HS256, HS384 or HS512 with a secret`,
    });
  });
}

function checkRoutes(routes: unknown[], root: RawMap, issues: PathIssue[]): void {
  const hasIdentity = root.identity !== undefined;
  const hasTierClaim = asMap(asMap(root.identity)?.jwt)?.tierClaim !== undefined;
  const firstUseOfId = new Map<string, number>();

  routes.forEach((value, routeIndex) => {
    const route = asMap(value);
    if (route === undefined) return;

    if (typeof route.id === 'string') {
      const first = firstUseOfId.get(route.id);
      if (first === undefined) firstUseOfId.set(route.id, routeIndex);
      else issues.push({ path: ['routes', routeIndex, 'id'], message: `duplicate route id "${route.id}" (already used by routes[${first}]); ids must be unique` });
    }

    const match = asMap(route.match);
    if (match !== undefined) {
      const given = presentKeys(match, ['path', 'regex']);
      if (given.length !== 1) {
        issues.push({
          path: ['routes', routeIndex, 'match'],
          message: given.length === 0 ? 'give path or regex' : 'give path or regex, not both',
        });
      }
      if (typeof route.caseSensitive === 'boolean' && typeof match.caseSensitive === 'boolean' && route.caseSensitive !== match.caseSensitive) {
        issues.push({ path: ['routes', routeIndex, 'caseSensitive'], message: 'contradicts match.caseSensitive; set it in one place' });
      }
    }

    // Guards given (even invalid ones, reported on their own) or inherited from the defaults.
    const hasGuards = (route.guards !== undefined && route.guards !== 'off') || (route.guards !== 'off' && asMap(asMap(root.defaults)?.guards) !== undefined);
    if (route.limits === undefined && !hasGuards) {
      issues.push({ path: ['routes', routeIndex, 'limits'], message: 'is required' });
    }

    const session = asMap(route.session);
    if (session !== undefined) {
      // Session limits follow WebSocket frames: a plain request has none to follow.
      if (match !== undefined && match.websocket !== true) {
        issues.push({
          path: ['routes', routeIndex, 'session'],
          message: 'session limits apply to WebSocket sessions only: set match.websocket: true (this route also matches plain requests)',
        });
      }
      if (presentKeys(session, SESSION_LIMITS).length === 0) {
        issues.push({ path: ['routes', routeIndex, 'session'], message: `give at least one of ${SESSION_LIMITS.join(', ')} (or remove session)` });
      }
    }

    const routeAlgorithm = route.algorithm ?? asMap(root.defaults)?.algorithm ?? 'sliding-window';
    const firstOfIdentity = new Map<string, number>();
    asList(route.limits).forEach((limitValue, limitIndex) => {
      const limit = asMap(limitValue);
      if (limit === undefined) return;
      const path = ['routes', routeIndex, 'limits', limitIndex];
      const concurrent = limit.concurrent !== undefined;
      checkLimitKind(limit, path, limit.algorithm ?? routeAlgorithm, issues);
      // Counters are keyed by route + by + window + algorithm (+ for, to tell such twins
      // apart); slots by route + by (+ for).
      const by = String(limit.by).toLowerCase();
      const identity = concurrent
        ? `${by}|concurrent|${String(limit.for ?? 'any')}`
        : `${by}|${typeof limit.window === 'string' ? parseDuration(limit.window) ?? limit.window : String(limit.window)}@${String(limit.timezone ?? '')}|${String(limit.algorithm ?? routeAlgorithm)}|${String(limit.for ?? 'any')}`;
      const twin = firstOfIdentity.get(identity);
      if (twin === undefined) firstOfIdentity.set(identity, limitIndex);
      else {
        issues.push({
          path,
          message: concurrent
            ? `same by and for as the concurrency limit limits[${twin}], so both would hold the same slots; merge them (use tiers for per-plan limits)`
            : `same by, window, algorithm and for as limits[${twin}], so both would count one counter; merge them (use tiers for per-plan limits) or change the window`,
        });
      }
      if (limit.by === 'user' && limit.for === 'anonymous') {
        issues.push({ path: [...path, 'for'], message: `a limit by user cannot apply to anonymous requests (they have no user); use by: ip` });
      } else if (!hasIdentity && limit.by === 'user') {
        issues.push({ path: [...path, 'by'], message: `limiting by user needs an identity section (identity.jwt or identity.header)` });
      }
      if (!hasIdentity && (limit.for === 'anonymous' || limit.for === 'authenticated')) {
        issues.push({ path: [...path, 'for'], message: `${limit.for} needs an identity section (without one every request is anonymous)` });
      }
      if (limit.tiers !== undefined && !hasTierClaim) {
        issues.push({ path: [...path, 'tiers'], message: `tiers need identity.jwt.tierClaim (the token claim that names the tier)` });
      }
    });
  });
}

/**
 * Rules between guard keys, checked on each route's effective guards (`defaults.guards`
 * overlaid key by key with the route's own). A problem is reported where the key that
 * causes it is written (the route's, or the defaults' if the route did not set it), once.
 */
function checkGuards(root: RawMap, issues: PathIssue[]): void {
  const defaults = asMap(asMap(root.defaults)?.guards);
  const seen = new Set<string>();
  const report = (path: (string | number)[], message: string): void => {
    const key = `${JSON.stringify(path)} ${message}`;
    if (seen.has(key)) return;
    seen.add(key);
    issues.push({ path, message });
  };
  const check = (own: RawMap | undefined, ownPath: (string | number)[]): void => {
    const at = (key: string): (string | number)[] => (own?.[key] !== undefined ? [...ownPath, key] : ['defaults', 'guards', key]);
    const value = (key: string): unknown => (own?.[key] !== undefined ? own[key] : defaults?.[key]);
    if (value('cors') !== undefined && value('origins') === undefined) {
      report(at('cors'), 'needs origins (the origins whose preflights are answered); a CORS answer for any origin is never given');
    }
    if (value('requireOrigin') === true && value('origins') === undefined) {
      report(at('requireOrigin'), 'needs origins (the origins a request must come from)');
    }
    if (value('body') !== undefined && value('maxBodySize') === undefined) {
      report(at('body'), 'needs maxBodySize (the most Tollgate buffers to check a body, e.g. maxBodySize: 16kb)');
    }
    if (value('auth') === 'required' && root.identity === undefined) {
      report(at('auth'), 'required needs an identity section (identity.jwt or identity.header), else every request is refused');
    }
  };
  const routes = asList(root.routes);
  routes.forEach((value, index) => {
    const route = asMap(value);
    if (route === undefined || route.guards === 'off') return;
    const own = asMap(route.guards);
    if (own === undefined && defaults === undefined) return;
    check(own, ['routes', index, 'guards']);
  });
  // Defaults that no route uses are still checked: they are what a new route would get.
  if (defaults !== undefined && routes.length === 0) check(undefined, ['defaults', 'guards']);
}

/** Keys that only a rate limit (limit per window) has. */
const RATE_ONLY_KEYS = ['limit', 'window', 'block', 'forgetAfter', 'algorithm', 'count', 'cost', 'timezone'] as const;
/** Algorithms that can weigh requests and give units back. */
const WEIGHING_ALGORITHMS = 'fixed-window, sliding-window or token-bucket';

/**
 * A limit is a rate (`limit` + `window`) or a concurrency limit (`concurrent` alone):
 * the keys of one kind make no sense on the other; and a rate's keys depend on its
 * algorithm (`algorithm`: the limit's own, else its route's, else the default).
 */
function checkLimitKind(limit: RawMap, path: (string | number)[], algorithm: unknown, issues: PathIssue[]): void {
  if (limit.concurrent !== undefined) {
    for (const key of presentKeys(limit, RATE_ONLY_KEYS)) {
      issues.push({
        path: [...path, key],
        message: `does not apply to a concurrency limit (concurrent: N counts requests in flight; it takes the place of limit and window and has no ${key === 'limit' ? 'window' : key})`,
      });
    }
    return;
  }
  // Without `concurrent` this is a rate limit: both keys are required (zod no longer
  // says so, since a concurrency limit has neither).
  if (limit.limit === undefined) issues.push({ path: [...path, 'limit'], message: 'is required (or give concurrent: N for a limit on requests in flight)' });
  if (limit.window === undefined) issues.push({ path: [...path, 'window'], message: 'is required' });

  const calendar = typeof limit.window === 'string' && CALENDAR_WINDOW.test(limit.window);
  if (calendar && algorithm !== 'fixed-window') {
    issues.push({
      path: [...path, 'window'],
      message: `${show(limit.window)} is a calendar period, which only fixed-window counts (set algorithm: fixed-window on this limit, or use a duration such as 7d)`,
    });
  }
  if (limit.timezone !== undefined) {
    const windowMs = typeof limit.window === 'string' ? parseDuration(limit.window) : undefined;
    if (algorithm !== 'fixed-window') {
      issues.push({ path: [...path, 'timezone'], message: 'applies to fixed-window limits only (their windows start at local midnight); set algorithm: fixed-window' });
    } else if (!calendar && windowMs !== undefined && windowMs % DAY_MS !== 0) {
      issues.push({ path: [...path, 'timezone'], message: `needs a window of whole days, weeks or months (1d, 1w, 1mo), got ${show(limit.window)}` });
    }
  }

  const blockList = Array.isArray(limit.block) ? limit.block : undefined;
  if (limit.forgetAfter !== undefined && (blockList === undefined || blockList.length < 2)) {
    issues.push({
      path: [...path, 'forgetAfter'],
      message: 'only applies to escalating blocks (block: [1m, 10m, 1h]); a single block duration has no strikes to forget',
    });
  }

  if (algorithm === 'sliding-log') {
    for (const key of presentKeys(limit, ['count', 'cost'] as const)) {
      issues.push({
        path: [...path, key],
        message: `sliding-log keeps one entry per request and cannot weigh requests or give them back; use ${WEIGHING_ALGORITHMS} with ${key}`,
      });
    }
  }
  const cost = limit.cost;
  const costMap = asMap(cost);
  if (costMap !== undefined && limit.count !== undefined) {
    issues.push({
      path: [...path, 'cost'],
      message: 'a cost read from a response header and count (by status) cannot share a limit: the status decides whether a request counts, the header how much',
    });
  }
  if (costMap !== undefined && typeof costMap.default === 'number' && typeof costMap.max === 'number' && costMap.default > costMap.max) {
    issues.push({ path: [...path, 'cost', 'default'], message: `must not be above cost.max (${costMap.max})` });
  }
  if (typeof cost === 'number' && Number.isInteger(cost)) {
    if (typeof limit.limit === 'number' && cost > limit.limit) {
      issues.push({ path: [...path, 'cost'], message: `${cost} is above the limit (${limit.limit}): no request could ever be admitted` });
    }
    const tiers = asMap(limit.tiers);
    for (const [tier, max] of Object.entries(tiers ?? {})) {
      if (typeof max === 'number' && cost > max) {
        issues.push({ path: [...path, 'tiers', tier], message: `${max} is below the cost (${cost}): no request of tier ${tier} could ever be admitted` });
      }
    }
  }
}

function checkStore(store: RawMap, issues: PathIssue[]): void {
  const redis = asMap(store.redis);
  if (redis === undefined) return;
  const connections = presentKeys(redis, ['url', 'sentinels', 'cluster']);
  if (connections.length > 1) {
    issues.push({
      path: ['store', 'redis'],
      message:
        connections.length === 0
          ? 'give one of url, sentinels (with name) or cluster'
          : `give only one of url, sentinels or cluster, found ${connections.join(' and ')}`,
    });
  }
  if (redis.sentinels !== undefined && redis.name === undefined) {
    issues.push({ path: ['store', 'redis', 'sentinels'], message: 'needs name (the sentinel master name, e.g. mymaster)' });
  }
  if (redis.name !== undefined && redis.sentinels === undefined) {
    issues.push({ path: ['store', 'redis', 'name'], message: 'is the sentinel master name and is only used with sentinels' });
  }
}

/** Advice about a valid policy; it still loads. */
export function findWarnings(config: PolicyConfig): PathIssue[] {
  const warnings: PathIssue[] = [];
  const secret = config.identity?.jwt?.secret;
  if (secret !== undefined && Buffer.byteLength(secret, 'utf8') < MIN_HMAC_SECRET_BYTES) {
    warnings.push({
      path: ['identity', 'jwt', 'secret'],
      message: `JWT secret is shorter than ${MIN_HMAC_SECRET_BYTES} bytes; use at least ${MIN_HMAC_SECRET_BYTES} random bytes`,
    });
  }
  if (config.store.redis !== undefined && config.store.type === 'memory') {
    warnings.push({
      path: ['store', 'redis'],
      message: 'is ignored because store.type is memory; set store.type: redis to use it',
    });
  }
  return warnings;
}
