/**
 * The `body` guard's checks: valid JSON (`json: true`) or valid against a JSON Schema
 * (draft 2020-12, compiled once with ajv). Problems name where (a JSON Pointer into the
 * body) and what, never the submitted value: bodies of token endpoints hold secrets.
 */
import { createRequire } from 'node:module';
import type Ajv2020Module from 'ajv/dist/2020.js';
import type { ErrorObject, ValidateFunction } from 'ajv/dist/2020.js';
import type addFormatsModule from 'ajv-formats';
import type { BodyProblem, BodyValidator } from './types.js';

type AjvClass = typeof Ajv2020Module.default;
type AddFormats = typeof addFormatsModule.default;

let ajvModules: { Ajv2020: AjvClass; addFormats: AddFormats } | undefined;

/**
 * ajv and ajv-formats, loaded on the first schema compile: loading them costs ~250 ms of
 * start-up and ~2 MB of heap, which a policy without `body.schema` should not pay. Both
 * are CommonJS with `exports.default`.
 */
function ajv(): { Ajv2020: AjvClass; addFormats: AddFormats } {
  if (ajvModules === undefined) {
    const require = createRequire(import.meta.url);
    const ajvExports = require('ajv/dist/2020.js') as { default?: AjvClass } & AjvClass;
    const formatsExports = require('ajv-formats') as { default?: AddFormats } & AddFormats;
    ajvModules = { Ajv2020: ajvExports.default ?? ajvExports, addFormats: formatsExports.default ?? formatsExports };
  }
  return ajvModules;
}

/** At most this many problems are reported (details.errors). */
export const MAX_BODY_PROBLEMS = 5;

const NOT_UTF8: BodyProblem[] = Object.freeze([Object.freeze({ path: '', message: 'must be UTF-8 text' })]) as BodyProblem[];
const NOT_JSON: BodyProblem[] = Object.freeze([Object.freeze({ path: '', message: 'must be valid JSON' })]) as BodyProblem[];
const MISSING: BodyProblem[] = Object.freeze([Object.freeze({ path: '', message: 'a JSON body is required' })]) as BodyProblem[];

/** The problem of a request that should carry a body and carries none. */
export function missingBody(): BodyProblem[] {
  return MISSING;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** The body as JSON, or the problem that prevents reading it so. */
function parseJson(body: Buffer): { value: unknown } | { problems: BodyProblem[] } {
  let text: string;
  try {
    text = utf8.decode(body);
  } catch {
    return { problems: NOT_UTF8 };
  }
  try {
    return { value: JSON.parse(text) as unknown };
  } catch {
    // JSON.parse's message quotes the text around the error: never passed on.
    return { problems: NOT_JSON };
  }
}

/** `json: true`: any JSON. */
export function jsonValidator(): BodyValidator {
  return (body) => {
    const parsed = parseJson(body);
    return 'problems' in parsed ? parsed.problems : undefined;
  };
}

const compiled = new WeakMap<object, ValidateFunction>();

/**
 * Compiles a JSON Schema document (draft 2020-12) once; the loader calls this to
 * validate the schema file and the guard compiler gets the same function back.
 * Throws an Error whose message says what is wrong with the schema.
 */
export function compileJsonSchema(document: unknown): ValidateFunction {
  if (typeof document !== 'object' || document === null || Array.isArray(document)) {
    if (typeof document === 'boolean') throw new Error('a boolean schema (true/false) is not useful here; give a schema object');
    throw new Error('a JSON Schema must be a JSON object');
  }
  const known = compiled.get(document);
  if (known !== undefined) return known;
  const { Ajv2020, addFormats } = ajv();
  // One instance per schema: two files with the same $id must not collide.
  const instance = new Ajv2020({
    allErrors: true,
    strict: true, // unknown keywords and formats are schema errors (a typo must not disable a check)
    strictTypes: false,
    strictTuples: false,
    strictRequired: false,
    logger: false,
  });
  addFormats(instance);
  const $schema = (document as { $schema?: unknown }).$schema;
  if ($schema !== undefined && $schema !== 'https://json-schema.org/draft/2020-12/schema') {
    throw new Error(`$schema ${JSON.stringify($schema)} is not supported: use draft 2020-12 ("https://json-schema.org/draft/2020-12/schema") or leave $schema out`);
  }
  let validate: ValidateFunction;
  try {
    validate = instance.compile(document);
  } catch (error) {
    throw new Error(`not a valid JSON Schema (draft 2020-12): ${(error as Error).message}`);
  }
  compiled.set(document, validate);
  return validate;
}

/** A schema check over a body, compiled from `document` (see compileJsonSchema). */
export function schemaValidator(document: unknown): BodyValidator {
  const validate = compileJsonSchema(document);
  return (body) => {
    const parsed = parseJson(body);
    if ('problems' in parsed) return parsed.problems;
    if (validate(parsed.value)) return undefined;
    return problemsOf(validate.errors ?? []);
  };
}

/** RFC 6901: `~` -> `~0`, `/` -> `~1`. */
function pointerSegment(name: string): string {
  return name.replace(/~/g, '~0').replace(/\//g, '~1');
}

/** ajv's errors as `{path, message}`, the missing or unexpected property named in the path. */
function problemsOf(errors: readonly ErrorObject[]): BodyProblem[] {
  const out: BodyProblem[] = [];
  const seen = new Set<string>();
  for (const error of errors) {
    let path = error.instancePath;
    let message = error.message ?? 'is invalid';
    const params = error.params as Record<string, unknown>;
    if ((error.keyword === 'required' || error.keyword === 'dependentRequired') && typeof params.missingProperty === 'string') {
      path += `/${pointerSegment(params.missingProperty)}`;
      message = 'is required';
    } else if (error.keyword === 'additionalProperties' && typeof params.additionalProperty === 'string') {
      path += `/${pointerSegment(params.additionalProperty)}`;
      message = 'is not allowed';
    } else if (error.keyword === 'unevaluatedProperties' && typeof params.unevaluatedProperty === 'string') {
      path += `/${pointerSegment(params.unevaluatedProperty)}`;
      message = 'is not allowed';
    }
    const key = `${path}\n${message}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push({ path, message });
    if (out.length === MAX_BODY_PROBLEMS) break;
  }
  return out;
}
