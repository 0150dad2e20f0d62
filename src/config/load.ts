/**
 * Reads a policy file into a validated `PolicyConfig`, or into a list of every
 * problem found, each located at `FILE:LINE:COL`.
 *
 * Steps: parse YAML (keeping node ranges) -> expand `${VAR}` in scalar values ->
 * validate with the zod schema and the cross-field rules -> map each issue's data
 * path back to its YAML node for line and column.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { isAlias, isMap, isPair, isScalar, isSeq, LineCounter, parseDocument, visit, type Document, type Node, type Pair } from 'yaml';
import { compileJsonSchema } from '../guards/body.js';
import { expandEnvInDocument, type Env } from './env.js';
import { describeIssue, findContradictions, findWarnings, policySchema, type PathIssue } from './schema.js';
import type { BodyGuardConfig, ConfigIssue, PolicyConfig } from './types.js';

export interface LoadedPolicy {
  /** The path as given by the caller. */
  file: string;
  config: PolicyConfig;
  /** sha256 (hex) of the file bytes. */
  hash: string;
  /** sha256 (hex) of the file and every file it refers to (JSON Schemas): a reload is due when it changes. */
  contentHash: string;
  warnings: ConfigIssue[];
}

/**
 * An issue at `path` in the loaded file (`['identity', 'jwt', 'publicKey']`), found as
 * schema issues are: the deepest node on the path that exists. `message` is kept as given.
 * For problems found after loading (compilePolicy).
 */
export type Locate = (path: readonly (string | number)[], message: string) => ConfigIssue;

export type LoadResult = { ok: true; policy: LoadedPolicy; locate: Locate } | { ok: false; errors: ConfigIssue[] };

/** `FILE:LINE:COL message`, the form editors and CI annotators understand. */
export function formatIssue(issue: ConfigIssue): string {
  return `${issue.file}:${issue.line}:${issue.col} ${issue.message}`;
}

/**
 * Loads and validates a policy file. Synchronous and never throws: an unreadable
 * file is reported as an error at 1:1.
 * @param env where `${VAR}` references are looked up (default `process.env`)
 */
export function loadPolicyFile(file: string, env: Env = process.env): LoadResult {
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    return { ok: false, errors: [{ file, line: 1, col: 1, message: `cannot read the policy file: ${reason}` }] };
  }
  return loadPolicy(bytes.toString('utf8'), sha256(bytes), file, env);
}

/** Validates policy text as if read from `file` (used in issues only). */
export function loadPolicyText(text: string, file: string, env: Env = process.env): LoadResult {
  return loadPolicy(text, sha256(Buffer.from(text, 'utf8')), file, env);
}

function sha256(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

function loadPolicy(text: string, hash: string, file: string, env: Env): LoadResult {
  const lineCounter = new LineCounter();
  const at = (offset: number, message: string): ConfigIssue => ({ file, ...lineCounter.linePos(offset), message });
  const fail = (errors: ConfigIssue[]): LoadResult => ({ ok: false, errors: sortByPosition(errors) });

  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const duplicateKeys = doc.errors
    .filter((error) => error.code === 'DUPLICATE_KEY')
    .map((error) => at(error.pos[0], duplicateKeyMessage(doc, error.pos[0])));
  // After a syntax error the parser's recovery yields a cascade of follow-on errors
  // (often dozens), so only the first is reported. A duplicate key leaves the
  // structure intact (the last one wins in the data), so the rest is still validated.
  const syntaxError = doc.errors.find((error) => error.code !== 'DUPLICATE_KEY');
  if (syntaxError !== undefined) {
    const message =
      syntaxError.code === 'MULTIPLE_DOCS'
        ? 'the policy file must hold one YAML document; remove this second document (---)'
        : yamlErrorMessage(syntaxError.message, lineAt(text, syntaxError.pos[0]));
    return fail([...duplicateKeys, at(syntaxError.pos[0], message)]);
  }

  if (doc.contents === null || (isScalar(doc.contents) && doc.contents.value === null)) {
    return fail([at(0, 'the policy file is empty; it needs at least a map of settings such as `routes: []`')]);
  }
  if (!isMap(doc.contents)) {
    return fail([at(doc.contents.range?.[0] ?? 0, 'the policy file must be a map of settings (upstream:, routes:, ...), not a list or a single value')]);
  }

  const envIssues = expandEnvInDocument(doc, env);
  const envErrors = envIssues.map((issue) => at(issue.node.range?.[0] ?? 0, issue.message));
  // A value whose variable could not be expanded is already reported; the schema
  // would only complain about the raw `${...}` text again.
  const unexpanded = new Set<Node>(envIssues.map((issue) => issue.node));

  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: 100 });
  } catch (error) {
    return fail([...duplicateKeys, ...envErrors, at(0, `invalid YAML: ${error instanceof Error ? error.message : String(error)}`)]);
  }

  const parsed = policySchema.safeParse(data, { error: describeIssue });
  const schemaIssues = parsed.success ? [] : parsed.error.issues.flatMap(toPathIssues);
  // A route's `limits` is required unless it has guards: a cross-field rule, hence both lists.
  const pathIssues = withoutMisspelledRequiredKeys([...schemaIssues, ...findContradictions(data)]);
  const locate = (issue: LocatableIssue) => locateIssue(doc, issue);
  const schemaErrors = pathIssues
    .map(locate)
    .filter((located) => !unexpanded.has(located.node as Node))
    .map((located) => at(located.offset, located.message));

  const errors = [...duplicateKeys, ...envErrors, ...schemaErrors];
  if (!parsed.success || errors.length > 0) return fail(errors);

  const content = createHash('sha256').update(hash);
  const fileErrors = readSchemaFiles(parsed.data, file, content).map((issue) => {
    const located = locate(issue);
    return at(located.offset, located.message);
  });
  if (fileErrors.length > 0) return fail(fileErrors);

  const warnings = [
    ...findWarnings(parsed.data).map(locate).map((located) => at(located.offset, located.message)),
    ...doc.warnings.map((warning) => at(warning.pos[0], warning.message)),
  ];
  return {
    ok: true,
    policy: { file, config: parsed.data, hash, contentHash: content.digest('hex'), warnings: sortByPosition(warnings) },
    locate: (path, message) => at(locate({ path: [...path], message }).offset, message),
  };
}

/**
 * Reads each `guards.body.schema` (relative to the policy file's directory) into
 * `schemaDocument` and compiles it once, so a missing, unreadable or invalid schema fails
 * the load at the `schema:` line. A file named twice is read once. Adds every file read to
 * `content` (the reload hash).
 */
function readSchemaFiles(config: PolicyConfig, policyFile: string, content: ReturnType<typeof createHash>): PathIssue[] {
  const issues: PathIssue[] = [];
  const documents = new Map<string, unknown>();
  const read = (body: BodyGuardConfig | undefined, at: (string | number)[]): void => {
    if (body?.schema === undefined) return;
    const resolved = path.resolve(path.dirname(policyFile), body.schema);
    let document = documents.get(resolved);
    if (document === undefined) {
      let bytes: Buffer;
      try {
        bytes = readFileSync(resolved);
      } catch (error) {
        const reason = (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (error as Error).message;
        issues.push({ path: at, message: `cannot read the JSON Schema ${JSON.stringify(body.schema)} (${resolved}): ${reason}` });
        return;
      }
      content.update(resolved).update(bytes);
      try {
        document = JSON.parse(bytes.toString('utf8')) as unknown;
      } catch (error) {
        issues.push({ path: at, message: `${JSON.stringify(body.schema)} is not JSON: ${(error as Error).message}` });
        return;
      }
      try {
        compileJsonSchema(document);
      } catch (error) {
        issues.push({ path: at, message: `${JSON.stringify(body.schema)}: ${(error as Error).message}` });
        return;
      }
      documents.set(resolved, document);
    }
    body.schemaDocument = document;
  };
  const defaults = config.defaults.guards;
  read(defaults?.body, ['defaults', 'guards', 'body', 'schema']);
  config.routes.forEach((route, index) => {
    if (route.guards !== undefined && route.guards !== 'off') read(route.guards.body, ['routes', index, 'guards', 'body', 'schema']);
  });
  return issues;
}

/**
 * yaml's message without the source token it quotes (`...: "value"`): that could be a
 * secret, and the position already shows it. Inside `{ }` or `[ ]` an unquoted
 * `${VAR}` is a syntax error (`{` opens a map there), hence the hint.
 */
function yamlErrorMessage(message: string, line: string): string {
  const unquotedReferenceInFlow = /[{[][^"']*\$\{/.test(line);
  const hint = unquotedReferenceInFlow
    ? ' (inside { } or [ ], quote environment references: "${NAME}" gives text; for a number use block style)'
    : '';
  return `invalid YAML: ${message.replace(/: ".*"$/s, '')}${hint}`;
}

/** The source line that contains `offset`. */
function lineAt(text: string, offset: number): string {
  const start = text.lastIndexOf('\n', offset - 1) + 1;
  const end = text.indexOf('\n', offset);
  return text.slice(start, end < 0 ? undefined : end);
}

function duplicateKeyMessage(doc: Document, offset: number): string {
  let key: unknown;
  visit(doc, {
    Pair(_, pair) {
      if (isScalar(pair.key) && pair.key.range?.[0] === offset) {
        key = pair.key.value;
        return visit.BREAK;
      }
      return undefined;
    },
  });
  const name = key === undefined ? '' : ` ${JSON.stringify(String(key))}`;
  return `duplicate key${name}: each key may appear once in a map (remove or rename one)`;
}

/** By line, then column; issues at the same place keep the order they were found in. */
function sortByPosition(issues: ConfigIssue[]): ConfigIssue[] {
  return [...issues].sort((a, b) => a.line - b.line || a.col - b.col);
}

/**
 * Zod issues to path issues. One zod issue lists every unknown key of a map (one
 * message line per key, see `strictObject` in schema.ts); each key gets its own
 * issue so it can point at that key.
 */
interface ZodIssueLike {
  code: string;
  path: PropertyKey[];
  message: string;
  keys?: string[];
  /** invalid_union: the issues of each option. */
  errors?: ZodIssueLike[][];
}

/** The option of a failed union that matched the value's kind (its issues go deeper than a wrong type at its root). */
function unionBranch(issue: ZodIssueLike): ZodIssueLike[] | undefined {
  const further = (issue.errors ?? []).filter((branch) => branch.some((inner) => inner.code !== 'invalid_type' || inner.path.length > 0));
  return further.length === 1 ? further[0] : undefined;
}

function toPathIssues(issue: ZodIssueLike): LocatableIssue[] {
  const path = issue.path.filter((segment) => typeof segment !== 'symbol') as (string | number)[];
  // `block: [1m, 5x]`: report what the list form says about its item, not "must be a duration or a list".
  const branch = issue.code === 'invalid_union' ? unionBranch(issue) : undefined;
  if (branch !== undefined) return branch.flatMap((inner) => toPathIssues({ ...inner, path: [...path, ...inner.path] }));
  if (issue.code === 'unrecognized_keys' && issue.keys !== undefined) {
    const lines = issue.message.split('\n');
    return issue.keys.map((key, index) => ({ path: [...path, key], message: lines[index] ?? `unknown key "${key}"`, unknownKey: true }));
  }
  return [{ path, message: issue.message }];
}

/**
 * A misspelled required key (`limts`) is reported once, as an unknown key that
 * suggests the right name, rather than again as the required key that is missing.
 */
function withoutMisspelledRequiredKeys(issues: LocatableIssue[]): LocatableIssue[] {
  const suggested = new Set(
    issues
      .filter((issue) => issue.unknownKey === true)
      .flatMap((issue) => {
        const meant = /did you mean "([^"]+)"/.exec(issue.message)?.[1];
        return meant === undefined ? [] : [JSON.stringify([...issue.path.slice(0, -1), meant])];
      }),
  );
  return issues.filter((issue) => !(issue.message === 'is required' && suggested.has(JSON.stringify(issue.path))));
}

/** `routes[0].limits[1].window` */
function formatPath(path: readonly (string | number)[]): string {
  return path
    .map((segment, index) =>
      typeof segment === 'number'
        ? `[${segment}]`
        : /^[A-Za-z_$][\w$-]*$/.test(segment)
          ? `${index === 0 ? '' : '.'}${segment}`
          : `[${JSON.stringify(segment)}]`,
    )
    .join('');
}

/** A path issue; `unknownKey` = the last path segment is a key that should not be there. */
type LocatableIssue = PathIssue & { unknownKey?: boolean };

interface LocatedIssue {
  /** Source offset to report. */
  offset: number;
  /** The node reported on (value, or key for an unknown key), if it exists. */
  node: Node | undefined;
  /** `path: message`. */
  message: string;
}

/**
 * Finds where a path issue belongs in the source. The deepest node on the path that
 * exists is used, so a missing key points at the map that lacks it. An unknown key
 * points at the key itself, as does a key whose value is empty (`block:`).
 */
function locateIssue(doc: Document, issue: LocatableIssue): LocatedIssue {
  const unknownKey = issue.unknownKey === true;
  const mapPath = unknownKey ? issue.path.slice(0, -1) : issue.path;
  const message = mapPath.length === 0 ? issue.message : `${formatPath(mapPath)}: ${issue.message}`;

  let node: Node | null = doc.contents as Node | null;
  let pair: Pair | undefined;
  let depth = 0;
  for (const segment of issue.path) {
    const next = child(doc, node, segment);
    if (next === undefined) break;
    ({ node, pair } = next);
    depth++;
  }
  const found = depth === issue.path.length;
  const emptyValue = isScalar(node) && node.value === null && node.range?.[0] === node.range?.[1];
  const reportKey = found && (unknownKey || emptyValue);
  const target = reportKey && pair !== undefined && isScalar(pair.key) ? pair.key : node;
  return { offset: target?.range?.[0] ?? 0, node: node ?? undefined, message };
}

function child(doc: Document, node: Node | null, segment: string | number): { node: Node | null; pair?: Pair } | undefined {
  const container = isAlias(node) ? (node.resolve(doc) as Node | undefined) : node;
  if (isMap(container)) {
    // The last pair wins in the data, so it is the one to report on.
    const pair = container.items.findLast((item) => isPair(item) && String(isScalar(item.key) ? item.key.value : item.key) === String(segment));
    return pair === undefined ? undefined : { node: pair.value as Node | null, pair: pair as Pair };
  }
  if (isSeq(container) && typeof segment === 'number' && segment < container.items.length) {
    return { node: container.items[segment] as Node | null };
  }
  return undefined;
}
