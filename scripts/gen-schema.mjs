#!/usr/bin/env node
// Writes schema/policies.schema.json, the JSON Schema of policies.yaml, from the zod schema
// (src/config/json-schema.ts; compiled to dist/ first by `npm run gen:schema`).
// Usage: node scripts/gen-schema.mjs          write the file (npm run gen:schema)
//        node scripts/gen-schema.mjs --check  exit 1 if the file is out of date
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { policyJsonSchemaText } from '../dist/config/json-schema.js';

const file = fileURLToPath(new URL('../schema/policies.schema.json', import.meta.url));
const text = policyJsonSchemaText();

if (process.argv.includes('--check')) {
  let current = '';
  try {
    current = readFileSync(file, 'utf8');
  } catch {
    // missing: stale
  }
  if (current !== text) {
    process.stderr.write('schema/policies.schema.json is out of date: run npm run gen:schema\n');
    process.exit(1);
  }
} else {
  mkdirSync(new URL('../schema/', import.meta.url), { recursive: true });
  writeFileSync(file, text);
  process.stdout.write('wrote schema/policies.schema.json\n');
}
