import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { compileJsonSchema, jsonValidator, schemaValidator } from '../../src/guards/body.js';

const TOKEN_SCHEMA = JSON.parse(readFileSync(new URL('../fixtures/config/schemas/token-request.json', import.meta.url), 'utf8')) as unknown;

describe('body validation', () => {
  it('json: any JSON passes; anything else is one problem that never quotes the body', () => {
    const validate = jsonValidator();
    assert.equal(validate(Buffer.from('{"a":[1,2,{"b":null}]}')), undefined);
    assert.equal(validate(Buffer.from('"just a string"')), undefined);
    assert.deepEqual(validate(Buffer.from('{"secret":"sk-live-123"')), [{ path: '', message: 'must be valid JSON' }]);
    assert.deepEqual(validate(Buffer.from([0x7b, 0xff, 0x7d])), [{ path: '', message: 'must be UTF-8 text' }]);
  });

  it('schema: problems as JSON Pointer paths with messages, never the submitted values', () => {
    const validate = schemaValidator(TOKEN_SCHEMA);
    assert.equal(validate(Buffer.from('{"voice":"alloy","instructions":"be brief"}')), undefined);
    const secret = 'sk-live-SECRET-value';
    const problems = validate(Buffer.from(JSON.stringify({ voice: secret, model: secret, instructions: secret.repeat(20), [`x/${'~'}y`]: secret })));
    assert.ok(problems !== undefined);
    assert.deepEqual(problems.map((p) => p.path).sort(), ['/instructions', '/model', '/voice', '/x~1~0y']);
    assert.ok(!JSON.stringify(problems).includes('SECRET'), JSON.stringify(problems));
    assert.deepEqual(validate(Buffer.from('{}')), [{ path: '/voice', message: 'is required' }]);
  });

  it('reports at most 5 problems', () => {
    const schema = { type: 'object', properties: Object.fromEntries(['a', 'b', 'c', 'd', 'e', 'f', 'g'].map((k) => [k, { type: 'integer' }])) };
    const problems = schemaValidator(schema)(Buffer.from(JSON.stringify({ a: 'x', b: 'x', c: 'x', d: 'x', e: 'x', f: 'x', g: 'x' })));
    assert.equal(problems?.length, 5);
  });

  it('refuses schemas that are not draft 2020-12 JSON Schemas, with the reason', () => {
    assert.throws(() => compileJsonSchema({ type: 'objekt' }), /not a valid JSON Schema/);
    assert.throws(() => compileJsonSchema({ properties: { a: { tyep: 'string' } } }), /unknown keyword: "tyep"/);
    assert.throws(() => compileJsonSchema({ $ref: '#/$defs/missing' }), /can't resolve reference/);
    assert.throws(() => compileJsonSchema({ $schema: 'http://json-schema.org/draft-07/schema#', type: 'object' }), /draft 2020-12/);
    assert.throws(() => compileJsonSchema([1]), /JSON object/);
    assert.throws(() => compileJsonSchema(true), /boolean schema/);
    assert.doesNotThrow(() => compileJsonSchema({ type: 'object', properties: { email: { type: 'string', format: 'email' } } }));
  });

  it('compiles a document once: the loader and the guard compiler share it', () => {
    const document = { type: 'object' };
    assert.equal(compileJsonSchema(document), compileJsonSchema(document));
  });
});
