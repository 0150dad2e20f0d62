/**
 * The JSON Schema against the loader, file by file: every policy file in the repository
 * passes both ajv (as an editor checks it) and `tollgate validate`; every invalid fixture
 * is refused by `validate`, and by ajv wherever the schema can say the rule (types, enums,
 * unknown and required keys, duration and size patterns). What only `validate` checks is
 * named here and in README ("Checked only by tollgate validate").
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import { parse, parseDocument } from 'yaml';
import { loadAndCompile } from '../../src/app.js';
import { formatIssue } from '../../src/config/load.js';
import { policyJsonSchema } from '../../src/config/json-schema.js';
import { runCli } from '../helpers/process.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const FIXTURES = 'test/fixtures/config';
const SCHEMA_FILE = path.join(ROOT, 'schema/policies.schema.json');
const README = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
const MODELINE = /^# yaml-language-server: \$schema=(\S+)\n/;
/** As `tollgate validate` compiles a file that names no upstream (src/cli.ts). */
const VALIDATE_OPTIONS = { defaultUpstream: 'http://127.0.0.1' };

const SECRET = 'corpus-test-secret-with-at-least-32-bytes';
type Env = Record<string, string>;

/** Every valid policy in the repository (a ConfigMap's as `FILE#KEY`), with the environment it needs. */
const EXAMPLES: Record<string, Env> = {
  'policies.yaml': {},
  'k8s/base/configmap-tollgate-policy.yaml#policies.yaml': { JWT_SECRET: SECRET },
  'k8s/overlays/redis/policies.yaml': { JWT_SECRET: SECRET, REDIS_URL: 'redis://127.0.0.1:6379' },
  [`${FIXTURES}/full.yaml`]: { JWT_SECRET: SECRET, IP_LIMIT: '20', SENTINEL_PASSWORD: 's', REDIS_PASSWORD: 'r' },
  [`${FIXTURES}/minimal.yaml`]: {},
  [`${FIXTURES}/guards_full.yaml`]: { JWT_SECRET: SECRET },
  [`${FIXTURES}/session_valid.yaml`]: {},
  [`${FIXTURES}/env_expansion.yaml`]: { UPSTREAM_HOST: 'app', CASE_SENSITIVE: 'true', GREETING: 'hi', MODE: 'shadow', LIMIT: '20', LIMIT_BY: 'ip', PREFIX_NAME: 'p' },
  // Valid, with a warning.
  [`${FIXTURES}/short_jwt_secret.yaml`]: {},
  [`${FIXTURES}/redis_section_with_memory_store.yaml`]: {},
};

/**
 * Rules the JSON Schema cannot say, each with the words README uses for it. A fixture
 * refused for one of these passes ajv; the test insists, so a rule the schema learns to
 * say moves to `schema`.
 */
const VALIDATE_ONLY = {
  contradiction: 'contradictions between keys',
  unique: 'uniqueness across list items',
  algorithm: 'keys that depend on the algorithm',
  zero: 'zero durations and sizes',
  bounds: 'numeric bounds inside a duration or size',
  syntax: 'IP addresses and CIDRs, origins, regular expressions',
  files: 'files the policy names',
  keys: 'keys that cannot verify the listed algorithms',
  environment: 'the environment',
} as const;

type Verdict = 'schema' | 'yaml' | keyof typeof VALIDATE_ONLY;

/**
 * Every invalid fixture: `schema` = ajv refuses it too; `yaml` = not YAML an editor can
 * read (the editor's YAML parser reports it); otherwise the rule only `validate` checks.
 */
const CORPUS: Record<string, { verdict: Verdict; env?: Env }> = {
  authenticated_without_identity: { verdict: 'contradiction' },
  boolean_as_text: { verdict: 'schema' },
  calendar_window_without_fixed_window: { verdict: 'algorithm' },
  case_sensitive_conflict: { verdict: 'contradiction' },
  concurrent_with_window: { verdict: 'contradiction' },
  cost_above_limit: { verdict: 'contradiction' },
  duplicate_key: { verdict: 'yaml' },
  duplicate_limit_identity: { verdict: 'unique' },
  duplicate_route_id: { verdict: 'unique' },
  duration_without_unit: { verdict: 'schema' },
  empty: { verdict: 'schema' },
  env_quoted_number: { verdict: 'environment', env: { LIMIT: '20' } },
  env_reference_unquoted_in_flow: { verdict: 'yaml' },
  guards_auth_without_identity: { verdict: 'contradiction' },
  guards_body_without_max_body_size: { verdict: 'contradiction' },
  guards_cors_without_origins: { verdict: 'contradiction' },
  guards_invalid_values: { verdict: 'schema' },
  guards_origins_star: { verdict: 'syntax' },
  guards_schema_invalid: { verdict: 'files' },
  guards_schema_missing: { verdict: 'files' },
  guards_unknown_key: { verdict: 'schema' },
  identity_forward_reserved: { verdict: 'contradiction' },
  identity_without_jwt_or_header: { verdict: 'schema' },
  invalid_allow_ip: { verdict: 'syntax' },
  invalid_duration: { verdict: 'schema' },
  invalid_header_name: { verdict: 'schema' },
  invalid_route_id: { verdict: 'schema' },
  invalid_trusted_proxy: { verdict: 'syntax' },
  ipv6_prefix_not_a_number: { verdict: 'schema' },
  ipv6_prefix_out_of_range: { verdict: 'schema' },
  jwt_algorithm_none: { verdict: 'schema' },
  jwt_hs_with_public_key: { verdict: 'contradiction' },
  jwt_public_key_not_pem: { verdict: 'schema' },
  jwt_public_key_wrong_algorithm: { verdict: 'keys' },
  jwt_rs_with_secret: { verdict: 'contradiction' },
  jwt_several_keys: { verdict: 'schema' },
  jwt_without_key: { verdict: 'schema' },
  limit_not_positive_integer: { verdict: 'schema' },
  match_path_and_regex: { verdict: 'schema' },
  match_without_path_or_regex: { verdict: 'schema' },
  missing_required_key: { verdict: 'schema' },
  misspelled_key: { verdict: 'schema' },
  misspelled_top_level_key: { verdict: 'schema' },
  multiple_errors: { verdict: 'schema' },
  not_a_map: { verdict: 'schema' },
  on_error_status_not_an_error: { verdict: 'schema' },
  path_star_not_trailing: { verdict: 'schema' },
  path_without_leading_slash: { verdict: 'schema' },
  redis_url_and_cluster: { verdict: 'contradiction' },
  redis_url_not_redis: { verdict: 'schema' },
  regex_does_not_compile: { verdict: 'syntax' },
  responses_format_unknown: { verdict: 'schema' },
  route_without_match: { verdict: 'schema' },
  routes_not_a_list: { verdict: 'schema' },
  secret_in_wrong_type: { verdict: 'schema' },
  sentinels_without_name: { verdict: 'schema' },
  session_empty: { verdict: 'schema' },
  session_messages_without_window: { verdict: 'schema' },
  session_on_plain_route: { verdict: 'contradiction' },
  session_size_too_large: { verdict: 'bounds' },
  timer_duration_too_long: { verdict: 'bounds' },
  session_size_upper_case: { verdict: 'schema' },
  session_size_zero: { verdict: 'zero' },
  session_unknown_key: { verdict: 'schema' },
  session_zero_duration: { verdict: 'zero' },
  size_without_unit: { verdict: 'schema' },
  sliding_log_with_cost: { verdict: 'algorithm' },
  tier_limit_not_positive_integer: { verdict: 'schema' },
  tiers_without_tier_claim: { verdict: 'contradiction' },
  unknown_algorithm: { verdict: 'schema' },
  unknown_store_type: { verdict: 'schema' },
  unset_env_var: { verdict: 'environment', env: {} },
  unset_env_vars: { verdict: 'schema', env: {} },
  upstream_not_http: { verdict: 'schema' },
  user_limit_for_anonymous: { verdict: 'contradiction' },
  user_limit_without_identity: { verdict: 'contradiction' },
  yaml_syntax_error: { verdict: 'yaml' },
  zero_duration: { verdict: 'zero' },
};

let compiled: ValidateFunction | undefined;
function validateWithSchema(): ValidateFunction {
  compiled ??= new Ajv2020({ allErrors: true, strictTypes: true }).compile(policyJsonSchema());
  return compiled;
}

/** The policy text of an EXAMPLES name: the file, or the ConfigMap's key. */
function policyText(name: string): string {
  const [file, key] = name.split('#');
  const text = readFileSync(path.join(ROOT, file), 'utf8');
  if (key === undefined) return text;
  return (parse(text) as { data: Record<string, string> }).data[key];
}

/** A file holding `text`, for the loader (a ConfigMap's policy is written out first). */
function asFile(name: string, text: string): string {
  if (!name.includes('#')) return path.join(ROOT, name);
  const file = path.join(mkdtempSync(path.join(tmpdir(), 'tollgate-corpus-')), 'policies.yaml');
  writeFileSync(file, text);
  return file;
}

/** What ajv says of a policy text as an editor reads it (`yaml: false`: the YAML itself is broken). */
function schemaVerdict(text: string): { yaml: boolean; valid: boolean; errors: string } {
  const doc = parseDocument(text, { uniqueKeys: true });
  if (doc.errors.length > 0) return { yaml: false, valid: false, errors: doc.errors.map((e) => e.message).join('; ') };
  const validate = validateWithSchema();
  const valid = validate(doc.toJS());
  return { yaml: true, valid, errors: JSON.stringify(validate.errors ?? []) };
}

/** Policy files in the repository, found rather than listed (so a new one must be classified above). */
function policyFilesInRepo(): string[] {
  const found: string[] = [];
  const walk = (dir: string): void => {
    for (const entry of readdirSync(path.join(ROOT, dir), { withFileTypes: true })) {
      const relative = dir === '' ? entry.name : `${dir}/${entry.name}`;
      if (entry.isDirectory()) {
        if (!['node_modules', 'dist', '.git', 'test'].includes(entry.name)) walk(relative);
      } else if (entry.name === 'policies.yaml') {
        found.push(relative);
      } else if (/\.ya?ml$/.test(entry.name)) {
        const text = readFileSync(path.join(ROOT, relative), 'utf8');
        if (/^kind: ConfigMap$/m.test(text) && /^ {2}policies\.yaml: \|/m.test(text)) found.push(`${relative}#policies.yaml`);
      }
    }
  };
  walk('');
  return found.sort();
}

test('every policy file in the repository and every fixture is classified here', () => {
  const inRepo = policyFilesInRepo();
  assert.deepEqual(inRepo, Object.keys(EXAMPLES).filter((name) => !name.startsWith(FIXTURES)).sort());
  const fixtures = readdirSync(path.join(ROOT, FIXTURES)).filter((name) => name.endsWith('.yaml')).map((name) => name.slice(0, -'.yaml'.length));
  const classified = [...Object.keys(CORPUS), ...Object.keys(EXAMPLES).filter((name) => name.startsWith(FIXTURES)).map((name) => path.basename(name, '.yaml'))];
  assert.deepEqual(fixtures.sort(), classified.sort());
});

describe('every policy file in the repository passes the schema (ajv) and validate', () => {
  for (const [name, env] of Object.entries(EXAMPLES)) {
    test(name, () => {
      const text = policyText(name);
      const schema = schemaVerdict(text);
      assert.ok(schema.valid, `${name}: ${schema.errors}`);
      const result = loadAndCompile(asFile(name, text), env, VALIDATE_OPTIONS);
      assert.ok(result.ok, result.ok ? '' : result.errors.map(formatIssue).join('\n'));
      result.policy.identity?.close?.();
    });
  }
});

test('every policy file names the schema on its first line, as yaml-language-server reads it', () => {
  const repository = (JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { repository: { url: string } }).repository.url;
  const github = /^git\+https:\/\/github\.com\/([^/]+\/[^/]+?)\.git$/.exec(repository);
  assert.ok(github !== null, `package.json repository.url: ${repository}`);
  for (const name of Object.keys(EXAMPLES)) {
    const reference = MODELINE.exec(policyText(name))?.[1];
    assert.ok(reference !== undefined, `${name} does not start with # yaml-language-server: $schema=...`);
    if (name.includes('#')) {
      // In the cluster no relative path resolves: the file's raw URL in the repository.
      assert.equal(reference, `https://raw.githubusercontent.com/${github[1]}/main/schema/policies.schema.json`, name);
    } else {
      assert.equal(path.resolve(path.dirname(path.join(ROOT, name)), reference), SCHEMA_FILE, name);
    }
  }
});

describe('every invalid fixture is refused by validate, and by the schema wherever it can say the rule', () => {
  for (const [name, { verdict, env = { JWT_SECRET: SECRET } }] of Object.entries(CORPUS)) {
    test(`${name} (${verdict})`, () => {
      const file = path.join(ROOT, FIXTURES, `${name}.yaml`);
      const result = loadAndCompile(file, env, VALIDATE_OPTIONS);
      if (result.ok) result.policy.identity?.close?.();
      assert.equal(result.ok, false, `validate accepts ${name}`);
      const schema = schemaVerdict(readFileSync(file, 'utf8'));
      if (verdict === 'yaml') assert.equal(schema.yaml, false, `${name} is readable YAML`);
      else if (verdict === 'schema') assert.equal(schema.valid, false, `the schema accepts ${name}`);
      else assert.equal(schema.valid, true, `the schema refuses ${name} (${schema.errors}): it can say this rule, so classify it as schema`);
    });
  }
});

test('README names each rule that only validate checks', () => {
  const section = README.slice(README.indexOf('#### Checked only by `tollgate validate`'));
  assert.ok(section.length < README.length, 'README has no "Checked only by `tollgate validate`" section');
  for (const words of Object.values(VALIDATE_ONLY)) assert.ok(section.includes(words), `README does not name: ${words}`);
});

test('tollgate validate (the CLI) refuses what the schema refuses and what only it checks', async () => {
  // A sample, one per kind: each is a process start; the loader itself ran on every file above.
  for (const name of ['misspelled_key', 'zero_duration', 'yaml_syntax_error']) {
    const run = await runCli(['validate', path.join(ROOT, FIXTURES, `${name}.yaml`)]);
    assert.equal(run.code, 1, `${name}: ${run.stdout}${run.stderr}`);
    assert.match(run.stderr, new RegExp(`${name}\\.yaml:\\d+:\\d+ `));
  }
});
