/**
 * The JSON Schema of policies.yaml (schema/policies.schema.json, `tollgate schema`),
 * generated from the zod schema in schema.ts, never written by hand: zod 4's
 * `z.toJSONSchema` of its input side (what a user writes: `window: 1m`, not 60000),
 * JSON Schema draft 2020-12, unknown keys refused (`additionalProperties: false`).
 *
 * On top of what zod says about a schema, three generic steps:
 * - `keyDocs` puts back each key's examples and written default (zod drops them from
 *   the input side of a transforming schema);
 * - `writtenAs` stands in for a schema that takes any value and checks it in a transform
 *   (`guards: off | {...}`): the JSON Schema shows the forms that may be written;
 * - a scalar with a type or rule also accepts what load.ts expands before validation
 *   (env.ts): a number or boolean a whole-value `${VAR}` / `${VAR:-default}` reference
 *   (re-typed once expanded), text with a rule (an enum, a duration, a size, a URL, ...)
 *   any text holding a reference (`http://${HOST}:3000`), checked once expanded. Free
 *   text accepts either anyway.
 *
 * Regenerate with `npm run gen:schema`; a test fails while the committed file is stale.
 */
import { z } from 'zod';
import { keyDocs, policySchema, writtenAs } from './schema.js';

type JsonSchema = Record<string, unknown>;

/** One environment reference, as env.ts expands it: `${NAME}` or `${NAME:-default}`. */
const REFERENCE = '\\$\\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\\}';
/** A value that is one reference, nothing around it: re-typed once expanded (`limit: ${LIMIT}` is a number). */
export const ENV_REFERENCE_PATTERN = `^${REFERENCE}$`;

const ENV_REFERENCE_REF = '#/$defs/envReference';
const ENV_TEXT_REF = '#/$defs/textWithEnvReference';
const ENV_DEFS: JsonSchema = {
  envReference: {
    description: 'An environment variable, expanded when the file is loaded: ${NAME}, or ${NAME:-default} when it is unset or empty. Unquoted, the value is re-typed as YAML would (a number, true/false).',
    type: 'string',
    pattern: ENV_REFERENCE_PATTERN,
  },
  textWithEnvReference: {
    description: 'Text with environment variables (${NAME}, ${NAME:-default}), checked once they are expanded when the file is loaded.',
    type: 'string',
    pattern: REFERENCE,
  },
};

/** Members that describe a value rather than constrain it: they stay on a key when its rule is wrapped. */
const ANNOTATIONS = ['title', 'description', 'default', 'examples'] as const;

const PARAMS: z.core.ToJSONSchemaParams = {
  target: 'draft-2020-12',
  io: 'input',
  reused: 'inline',
  unrepresentable: 'throw',
  override: ({ zodSchema, jsonSchema }) => {
    const written = writtenAs.get(zodSchema);
    if (written !== undefined) {
      const replacement = z.toJSONSchema(written.schema as z.ZodType, PARAMS) as JsonSchema;
      delete replacement.$schema;
      for (const key of Object.keys(jsonSchema)) delete (jsonSchema as JsonSchema)[key];
      Object.assign(jsonSchema, replacement);
    }
    const docs = keyDocs.get(zodSchema);
    if (docs?.examples !== undefined) jsonSchema.examples = [...docs.examples];
    if (docs?.default !== undefined) jsonSchema.default = docs.default;
  },
};

/** The JSON Schema of policies.yaml, as an object. */
export function policyJsonSchema(): JsonSchema {
  const generated = z.toJSONSchema(policySchema, PARAMS) as JsonSchema;
  const schema = ordered(withEnvReferences(generated, false)) as JsonSchema;
  schema.$defs = { ...(schema.$defs as JsonSchema | undefined), ...ENV_DEFS };
  return schema;
}

/** schema/policies.schema.json, byte for byte. */
export function policyJsonSchemaText(): string {
  return `${JSON.stringify(policyJsonSchema(), null, 2)}\n`;
}

/** Keywords holding one subschema, and those holding a map or a list of them. */
const SUBSCHEMA = ['additionalProperties', 'items', 'if', 'then', 'else', 'not', 'contains'] as const;
const SUBSCHEMA_MAPS = ['properties', 'patternProperties', '$defs', 'dependentSchemas'] as const;
const SUBSCHEMA_LISTS = ['prefixItems', 'anyOf', 'oneOf', 'allOf'] as const;

function isObject(value: unknown): value is JsonSchema {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A number or boolean: a whole-value reference stands for one. */
function isTypedScalar(node: JsonSchema): boolean {
  return node.type === 'number' || node.type === 'integer' || node.type === 'boolean';
}

/** Text with a rule (pattern, enum, ...): text holding a reference stands for it, to be checked once expanded. */
function isRuledText(node: JsonSchema): boolean {
  const type = node.type;
  const ruled = ['pattern', 'enum', 'const', 'format', 'anyOf', 'oneOf'].some((key) => key in node);
  return (type === 'string' || type === undefined) && ruled && !('properties' in node) && !('items' in node);
}

/** Free text: any string, so a reference already passes. */
function isFreeText(node: JsonSchema): boolean {
  return node.type === 'string' && !isRuledText(node);
}

/** What stands for `nodes` (a scalar, or a union's branches) when written as a reference; undefined: none needed. */
function referenceFor(nodes: readonly JsonSchema[]): string | undefined {
  if (nodes.some(isFreeText)) return undefined;
  if (nodes.some(isRuledText)) return ENV_TEXT_REF; // also covers a whole-value reference
  return nodes.some(isTypedScalar) ? ENV_REFERENCE_REF : undefined;
}

/**
 * `node` with every typed or ruled scalar also accepting its reference form (see
 * `referenceFor`): it becomes `{ annotations, anyOf: [its rule, reference] }`; a union
 * gets the reference as one more branch (once, not per branch). `branch`: `node` is a
 * branch of a union, which takes the reference for it. Keys (`propertyNames`) are never
 * expanded, so never changed.
 */
function withEnvReferences(node: JsonSchema, branch: boolean): JsonSchema {
  const out: JsonSchema = { ...node };
  for (const key of SUBSCHEMA) if (isObject(out[key])) out[key] = withEnvReferences(out[key], false);
  for (const key of SUBSCHEMA_MAPS) {
    const map = out[key];
    if (isObject(map)) out[key] = Object.fromEntries(Object.entries(map).map(([name, value]) => [name, isObject(value) ? withEnvReferences(value, false) : value]));
  }
  for (const key of SUBSCHEMA_LISTS) {
    const list = out[key];
    if (Array.isArray(list)) out[key] = list.map((value: unknown) => (isObject(value) ? withEnvReferences(value, true) : value));
  }
  const union = Array.isArray(out.anyOf) ? (out.anyOf as JsonSchema[]) : undefined;
  if (union !== undefined && !('type' in out)) {
    const reference = referenceFor(union);
    if (reference !== undefined) out.anyOf = [...union, { $ref: reference }];
    return out;
  }
  const reference = branch ? undefined : referenceFor([out]);
  if (reference === undefined) return out;
  const wrapped: JsonSchema = {};
  const rule: JsonSchema = {};
  for (const [key, value] of Object.entries(out)) {
    if ((ANNOTATIONS as readonly string[]).includes(key)) wrapped[key] = value;
    else rule[key] = value;
  }
  wrapped.anyOf = [rule, { $ref: reference }];
  return wrapped;
}

const FIRST = ['$schema', '$id', 'title', 'description', '$ref', 'type'];
const LAST = ['default', 'examples', '$defs'];

/** The same schema with its members in one order at every level (title and description first, examples last), for a file people read. */
function ordered(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(ordered);
  if (!isObject(value)) return value;
  const rank = (key: string): number => (FIRST.includes(key) ? FIRST.indexOf(key) - FIRST.length : LAST.includes(key) ? 1 + LAST.indexOf(key) : 0);
  const keys = Object.keys(value).sort((a, b) => rank(a) - rank(b));
  return Object.fromEntries(
    keys.map((key) => {
      const member = value[key];
      // Values, not schemas: as generated.
      if (VALUES.has(key)) return [key, member];
      // Names (of keys in the file): in the order the schema lists them; their schemas ordered.
      if ((SUBSCHEMA_MAPS as readonly string[]).includes(key) && isObject(member)) {
        return [key, Object.fromEntries(Object.entries(member).map(([name, sub]) => [name, ordered(sub)]))];
      }
      return [key, ordered(member)];
    }),
  );
}

const VALUES = new Set(['default', 'examples', 'enum', 'const', 'required']);
