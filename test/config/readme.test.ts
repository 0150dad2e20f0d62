import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { loadAndCompile } from '../../src/app.js';
import { formatIssue } from '../../src/config/load.js';
import { ERRORS } from '../../src/proxy/errors.js';

const README = readFileSync(fileURLToPath(new URL('../../README.md', import.meta.url)), 'utf8');
const SECRET = 'readme-test-secret-0123456789-abcdefghij';

/** The first fenced block of `lang` after `heading`. */
function blockAfter(heading: string, lang: string): string {
  const at = README.indexOf(heading);
  assert.ok(at >= 0, `README has no ${heading}`);
  const match = new RegExp('```' + lang + '\\n([\\s\\S]*?)```').exec(README.slice(at));
  assert.ok(match !== null, `no ${lang} block after ${heading}`);
  return match[1];
}

function loads(policy: string, files: Record<string, string> = {}): void {
  const dir = mkdtempSync(path.join(tmpdir(), 'tollgate-readme-'));
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    writeFileSync(path.join(dir, name), text);
  }
  const file = path.join(dir, 'policies.yaml');
  writeFileSync(file, `upstream: http://127.0.0.1:3000\n${policy}`);
  const result = loadAndCompile(file, { JWT_SECRET: SECRET });
  assert.ok(result.ok, result.ok ? '' : result.errors.map(formatIssue).join('\n'));
}

test('the recipe "Protecting a token endpoint" loads, with its schema', () => {
  const schema = blockAfter('### Protecting a token endpoint', 'json');
  loads(blockAfter('### Protecting a token endpoint', 'yaml'), { 'schemas/token-request.json': schema });
});

test('the guards example loads', () => {
  const schema = blockAfter('### Protecting a token endpoint', 'json');
  loads(`identity:\n  jwt: { secret: "\${JWT_SECRET}", algorithms: [HS256] }\n${blockAfter('### Guards', 'yaml')}`, { 'schemas/token-request.json': schema });
});

test('every error code is in the README errors table', () => {
  for (const code of Object.keys(ERRORS)) assert.match(README, new RegExp(`^\\| \`${code}\` \\|`, 'm'), code);
});
