/**
 * A small Dockerfile reader for the static checks: enough of the syntax that ours uses
 * (comments, `\` continuations, exec-form JSON, `ENV a=b c=d`), not a general parser.
 */

export interface Instruction {
  /** Upper-cased, e.g. `RUN`. */
  keyword: string;
  /** Everything after the keyword, continuations joined with a space. */
  args: string;
  /** 1-based line of the keyword. */
  line: number;
}

export interface Stage {
  image: string;
  /** The `AS` name, if any. */
  name?: string;
  instructions: Instruction[];
}

export function parseInstructions(text: string): Instruction[] {
  const instructions: Instruction[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const first = lines[i] as string;
    if (first.trim() === '' || first.trim().startsWith('#')) continue;
    const line = i + 1;
    let joined = first;
    // A trailing backslash continues onto the next line; comment lines inside are dropped.
    while (/\\\s*$/.test(joined) && i + 1 < lines.length) {
      joined = joined.replace(/\\\s*$/, ' ');
      i++;
      const next = lines[i] as string;
      if (next.trim().startsWith('#')) {
        joined += '\\';
        continue;
      }
      joined += next.trim();
    }
    const match = /^\s*(\w+)\s*(.*)$/.exec(joined);
    if (!match) throw new Error(`Dockerfile:${line}: cannot read "${first}"`);
    instructions.push({ keyword: (match[1] as string).toUpperCase(), args: (match[2] as string).trim().replace(/\s+/g, ' '), line });
  }
  return instructions;
}

export function parseStages(text: string): Stage[] {
  const stages: Stage[] = [];
  for (const instruction of parseInstructions(text)) {
    if (instruction.keyword === 'FROM') {
      const match = /^(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?$/i.exec(instruction.args);
      if (!match) throw new Error(`Dockerfile:${instruction.line}: cannot read FROM ${instruction.args}`);
      stages.push({ image: match[1] as string, name: match[2], instructions: [] });
    } else if (stages.length > 0) {
      (stages[stages.length - 1] as Stage).instructions.push(instruction);
    }
  }
  return stages;
}

/** The exec-form (JSON array) arguments of CMD/ENTRYPOINT/HEALTHCHECK CMD, or undefined for shell form. */
export function execForm(args: string): string[] | undefined {
  if (!args.startsWith('[')) return undefined;
  const parsed: unknown = JSON.parse(args);
  if (!Array.isArray(parsed) || !parsed.every((item) => typeof item === 'string')) return undefined;
  return parsed as string[];
}

/** Splits on whitespace outside double or single quotes, dropping the quotes. */
function words(text: string): string[] {
  const result: string[] = [];
  let current = '';
  let quote: string | undefined;
  let started = false;
  for (const char of text) {
    if (quote !== undefined) {
      if (char === quote) quote = undefined;
      else current += char;
    } else if (char === '"' || char === "'") {
      quote = char;
      started = true;
    } else if (/\s/.test(char)) {
      if (started) result.push(current);
      current = '';
      started = false;
    } else {
      current += char;
      started = true;
    }
  }
  if (started) result.push(current);
  return result;
}

/** `ENV A=1 B="x y"` or legacy `ENV A 1` -> map; `ARG NAME[=default]` -> map (undefined default). */
export function assignments(instruction: Instruction): Map<string, string | undefined> {
  const result = new Map<string, string | undefined>();
  const parts = words(instruction.args);
  if (instruction.keyword === 'ENV' && parts.length >= 2 && !(parts[0] as string).includes('=')) {
    result.set(parts[0] as string, parts.slice(1).join(' '));
    return result;
  }
  for (const part of parts) {
    const eq = part.indexOf('=');
    if (eq === -1) result.set(part, undefined);
    else result.set(part.slice(0, eq), part.slice(eq + 1));
  }
  return result;
}

/** The ENV a stage ends up with. */
export function stageEnv(stage: Stage): Record<string, string> {
  const env: Record<string, string> = {};
  for (const instruction of stage.instructions) {
    if (instruction.keyword !== 'ENV') continue;
    for (const [name, value] of assignments(instruction)) env[name] = value ?? '';
  }
  return env;
}

/** The last instruction of a kind in a stage (Docker uses the last CMD/ENTRYPOINT/USER). */
export function last(stage: Stage, keyword: string): Instruction | undefined {
  return stage.instructions.filter((i) => i.keyword === keyword).pop();
}

/** COPY/ADD sources and destination, flags (`--from=build`) separated. */
export function copyParts(instruction: Instruction): { flags: Map<string, string>; sources: string[]; destination: string } {
  const flags = new Map<string, string>();
  const rest: string[] = [];
  const exec = execForm(instruction.args);
  for (const word of exec ?? words(instruction.args)) {
    const flag = /^--([\w-]+)(?:=(.*))?$/.exec(word);
    if (flag && rest.length === 0) flags.set(flag[1] as string, flag[2] ?? '');
    else rest.push(word);
  }
  if (rest.length < 2) throw new Error(`Dockerfile:${instruction.line}: ${instruction.keyword} needs a source and a destination`);
  return { flags, sources: rest.slice(0, -1), destination: rest[rest.length - 1] as string };
}

/**
 * Whether `.dockerignore` keeps `path` out of the build context: the last matching
 * pattern wins, `!` re-includes, and a pattern matching a parent directory matches
 * everything below it (Docker's patternmatcher semantics, for the `*`, `**` and `?`
 * wildcards; character classes are not supported).
 */
export function isIgnored(dockerignore: string, path: string): boolean {
  let ignored = false;
  for (const raw of dockerignore.split('\n')) {
    const trimmed = raw.trim();
    if (trimmed === '' || trimmed.startsWith('#')) continue;
    const negated = trimmed.startsWith('!');
    const pattern = (negated ? trimmed.slice(1) : trimmed).replace(/^\/+|\/+$/g, '');
    const regex = globToRegExp(pattern);
    const segments = path.split('/');
    const matches = segments.some((_, index) => regex.test(segments.slice(0, index + 1).join('/')));
    if (matches) ignored = !negated;
  }
  return ignored;
}

function globToRegExp(pattern: string): RegExp {
  let source = '';
  for (let i = 0; i < pattern.length; i++) {
    const char = pattern[i] as string;
    if (char === '*' && pattern[i + 1] === '*') {
      // `**/` = any number of directories (including none); a trailing `**` = anything.
      if (pattern[i + 2] === '/') {
        source += '(?:.*/)?';
        i += 2;
      } else {
        source += '.*';
        i += 1;
      }
    } else if (char === '*') source += '[^/]*';
    else if (char === '?') source += '[^/]';
    else source += char.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${source}$`);
}
