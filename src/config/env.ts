import { isScalar, parseDocument, visit, type Document, type Scalar } from 'yaml';

export type Env = Readonly<Record<string, string | undefined>>;

/** A problem with the `${...}` references of one scalar. */
export interface EnvIssue {
  node: Scalar;
  message: string;
}

/** `${...}`, or a `${` that is never closed (second alternative). */
const REFERENCE = /\$\{([^}]*)\}|\$\{/g;
/** `NAME` or `NAME:-default` (the default may be empty). */
const NAME_AND_DEFAULT = /^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$/s;
/** The whole value is one reference, e.g. `limit: ${LIMIT}`. */
const WHOLE_REFERENCE = /^\$\{[^}]*\}$/;

const HOW_TO_WRITE = 'write ${NAME} or ${NAME:-default}';

/**
 * Replaces `${NAME}` and `${NAME:-default}` in every scalar VALUE of `doc` (never in
 * keys) with text from `env`, in place, so every node keeps its source range and
 * later validation can still point at line and column. As in the shell, the default
 * applies when the variable is unset or empty.
 *
 * An unquoted value that is exactly one reference is re-typed as YAML would type the
 * resulting text (`limit: ${L}` with L=20 gives the number 20, `true` a boolean). As
 * in YAML, a quoted value stays text (`secret: "${S}"` is text even if S is 12345), and
 * so does a reference with text around it. Inside `{ }` and `[ ]` a reference must be
 * quoted (`{` is YAML syntax there), so a number from the environment needs block style.
 *
 * Messages name variables but never include their values (they are often secrets).
 */
export function expandEnvInDocument(doc: Document, env: Env): EnvIssue[] {
  const issues: EnvIssue[] = [];
  visit(doc, {
    Scalar(key, node) {
      if (key === 'key' || typeof node.value !== 'string' || !node.value.includes('${')) return;
      const source = node.value;
      const result = expandString(source, env);
      if (result.errors.length > 0) {
        for (const message of result.errors) issues.push({ node, message });
        return;
      }
      const retype = node.type === 'PLAIN' && WHOLE_REFERENCE.test(source);
      node.value = retype ? typeAsYaml(result.text) : result.text;
    },
  });
  return issues;
}

/** Expands the references in one string; `errors` lists every unset or malformed one. */
export function expandString(text: string, env: Env): { text: string; errors: string[] } {
  const errors: string[] = [];
  const expanded = text.replace(REFERENCE, (whole: string, inner: string | undefined) => {
    if (inner === undefined) {
      errors.push(`unterminated "\${" (${HOW_TO_WRITE})`);
      return whole;
    }
    const reference = NAME_AND_DEFAULT.exec(inner);
    if (reference === null) {
      errors.push(`malformed environment variable reference (${HOW_TO_WRITE})`);
      return whole;
    }
    const [, name, fallback] = reference;
    const value = env[name];
    if (fallback !== undefined && (value === undefined || value === '')) return fallback;
    if (value === undefined) {
      errors.push(`environment variable ${name} is not set`);
      return whole;
    }
    return value;
  });
  return { text: expanded, errors };
}

/** What a plain YAML scalar with this text would be: a number, boolean, null or the text. */
function typeAsYaml(text: string): unknown {
  const doc = parseDocument(text);
  if (doc.errors.length > 0 || !isScalar(doc.contents) || doc.contents.type !== 'PLAIN') return text;
  const value = doc.contents.value;
  // Keep the text itself for strings: YAML would fold line breaks and trim spaces.
  return typeof value === 'string' ? text : value;
}
