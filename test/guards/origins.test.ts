import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compileOrigins, originPatternProblem } from '../../src/guards/origins.js';

describe('origins', () => {
  const set = compileOrigins(['https://app.example.com', 'https://*.example.org', 'http://localhost:8080', 'https://bücher.example']);

  it('allows listed origins in their serialised form, whatever the spelling', () => {
    for (const origin of [
      'https://app.example.com',
      'HTTPS://APP.Example.COM',
      'https://app.example.com:443',
      'http://localhost:8080',
      'https://xn--bcher-kva.example',
    ]) {
      assert.equal(set.allows(origin), true, origin);
    }
  });

  it('never by prefix, suffix or substring; scheme and port must match', () => {
    for (const origin of [
      'https://app.example.com.evil.test',
      'https://evilapp.example.com',
      'https://app.example.co',
      'http://app.example.com',
      'https://app.example.com:8443',
      'http://localhost',
      'http://localhost:80',
      'https://app.example.com/',
      'https://app.example.com/path',
      'https://user@app.example.com',
      'app.example.com',
      'null',
      '',
      'https://',
    ]) {
      assert.equal(set.allows(origin), false, origin);
    }
  });

  it('a leading *. covers one or more labels, never the domain itself or a look-alike', () => {
    assert.equal(set.allows('https://a.example.org'), true);
    assert.equal(set.allows('https://a.b.example.org'), true);
    assert.equal(set.allows('https://A.Example.Org:443'), true);
    assert.equal(set.allows('https://example.org'), false);
    assert.equal(set.allows('https://aexample.org'), false);
    assert.equal(set.allows('https://a.example.org.evil.test'), false);
    assert.equal(set.allows('http://a.example.org'), false);
    assert.equal(set.allows('https://a.example.org:8443'), false);
    assert.equal(set.allows('https://..example.org'), false);
  });

  it('null passes only when listed', () => {
    assert.equal(compileOrigins(['null']).allows('null'), true);
    assert.equal(compileOrigins(['https://a.example']).allows('null'), false);
  });

  it('IPv6 hosts and explicit non-default ports', () => {
    const v6 = compileOrigins(['http://[::1]:3000']);
    assert.equal(v6.allows('http://[::1]:3000'), true);
    assert.equal(v6.allows('http://[::1]'), false);
  });

  it('says what is wrong with an entry', () => {
    assert.match(originPatternProblem('*')!, /every site/);
    assert.match(originPatternProblem('https://a.example/')!, /no path/);
    assert.match(originPatternProblem('https://a.*.example')!, /leading "\*\."/);
    assert.match(originPatternProblem('https://*')!, /leading "\*\."|not a valid origin/);
    assert.match(originPatternProblem('a.example')!, /must be an origin/);
    assert.match(originPatternProblem('https://a.example:99999')!, /not a valid origin/);
    for (const ok of ['null', 'https://a.example', 'https://*.a.example', 'http://127.0.0.1:8080', 'https://a.example:443', 'chrome-extension://abcdef']) {
      assert.equal(originPatternProblem(ok), undefined, ok);
    }
  });
});
