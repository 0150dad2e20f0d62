import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { canonicalPath, isInvalidPath } from '../../src/policy/path.js';

describe('canonicalPath', () => {
  const caseInsensitive: Array<[string, string]> = [
    // already canonical
    ['/', '/'],
    ['/api/users', '/api/users'],
    // query and fragment never count
    ['/api/users?id=1', '/api/users'],
    ['/api/users?', '/api/users'],
    ['/api/users#top', '/api/users'],
    ['/?x=/api', '/'],
    // encoded unreserved characters decode; others stay encoded with upper-case hex
    ['/api/%75sers', '/api/users'],
    ['/%41%42c', '/abc'],
    ['/a%7Eb%7e', '/a~b~'],
    ['/a%2D%2E%5F', '/a-._'],
    ['/a%3fb', '/a%3Fb'],
    ['/a%c3%a9', '/a%C3%A9'],
    // a lone or broken % is spelled as %25
    ['/100%', '/100%25'],
    ['/a%zz', '/a%25zz'],
    ['/a%4', '/a%254'],
    ['/a%4?x', '/a%254'],
    // empty segments and backslashes
    ['//api///users', '/api/users'],
    ['/api\\users', '/api/users'],
    // dot segments, including encoded ones, never above the root
    ['/api/./users', '/api/users'],
    ['/api/v1/../users', '/api/users'],
    ['/api/%2e%2e/admin', '/admin'],
    ['/api/.%2E/admin', '/admin'],
    ['/../../etc/passwd', '/etc/passwd'],
    ['/a/b/..', '/a'],
    ['/a/..', '/'],
    ['/.well-known/x', '/.well-known/x'],
    ['/a/...', '/a/...'],
    // escaped slashes and backslashes are separators (decoded once), before dot segments
    ['/a%2fb', '/a/b'],
    ['/a%2Fb', '/a/b'],
    ['/a%5Cb', '/a/b'],
    ['/api%2Flivekit%2Ftoken', '/api/livekit/token'],
    ['/a/..%2F/b', '/b'],
    ['/a%2F..%2Fb', '/b'],
    ['/a%5C..%5Cb', '/b'],
    ['/a%252Fb', '/a%252fb'],
    ['/a%255Cb', '/a%255cb'],
    // path parameters are dropped per segment, before dot segments (the Tomcat `..;` bypass)
    ['/login;x=1', '/login'],
    ['/login;jsessionid=abc/next', '/login/next'],
    ['/a/..;x/b', '/b'],
    ['/a/.;x/b', '/a/b'],
    ['/;x/admin', '/admin'],
    ['/a;x%2F..%2Fb', '/b'],
    ['/a;p=%41/b', '/a/b'],
    ['/a%3Bx', '/a%3Bx'],
    // trailing slash ignored except for the root
    ['/api/users/', '/api/users'],
    ['/api/users//', '/api/users'],
    // case folded
    ['/API/Users', '/api/users'],
    ['/Api%2fX', '/api/x'],
    // absolute-form targets use their path
    ['http://example.com/API/x?y=1', '/api/x'],
    ['https://example.com:8443//a/../b/', '/b'],
    ['http://example.com', '/'],
    ['http://example.com?x=/api', '/'],
    ['HTTP://Example.com/A', '/a'],
    // garbage is read as a path below the root
    ['', '/'],
    ['*', '/*'],
    ['api/users', '/api/users'],
    ['localhost:8080', '/localhost:8080'],
    ['../../x', '/x'],
    ['?x=1', '/'],
    ['%', '/%25'],
    // non-ASCII (only route patterns can contain it) becomes UTF-8 escapes
    ['/café', '/caf%C3%A9'],
    ['/\ud800x', '/%EF%BF%BDx'],
  ];
  for (const [target, expected] of caseInsensitive) {
    it(`${JSON.stringify(target)} -> ${expected}`, () => {
      assert.equal(canonicalPath(target, false), expected);
    });
  }

  it('keeps case when case-sensitive, still decoding and upper-casing escapes', () => {
    assert.equal(canonicalPath('/API/Users/', true), '/API/Users');
    assert.equal(canonicalPath('/a/%41%62/%2f', true), '/a/Ab');
    assert.equal(canonicalPath('/A;B/C', true), '/A/C');
    assert.equal(canonicalPath('/a/b', true), '/a/b');
  });

  it('is idempotent and always yields a rooted path without query, empty or dot segments', () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom('/', '\\', '.', '..', '%', '%2e', '%2F', '%5c', '%252F', ';', ';x', '%41', 'a', 'B', '?', '#', '~', 'é', ':'), {
          maxLength: 12,
        }),
        fc.boolean(),
        (pieces, caseSensitive) => {
          const path = canonicalPath(pieces.join(''), caseSensitive);
          assert.equal(canonicalPath(path, caseSensitive), path);
          assert.ok(path.startsWith('/'));
          assert.ok(!/[?#\\]/.test(path));
          assert.ok(path === '/' || !path.endsWith('/'));
          for (const segment of path.split('/').slice(1)) {
            assert.ok(path === '/' || (segment !== '' && segment !== '.' && segment !== '..'), path);
          }
          if (!caseSensitive) assert.equal(path.replace(/%[0-9A-F]{2}/g, ''), path.replace(/%[0-9A-F]{2}/g, '').toLowerCase());
        },
      ),
      { numRuns: 2000 },
    );
  });
});

describe('isInvalidPath', () => {
  const invalid: Array<[string, boolean]> = [
    ['/a%00b', false],
    ['/a%zz', false],
    ['/100%', false],
    ['/a%4', false],
    ['/a%4?x', false],
    ['http://example.com/a%00', false],
    ['/a%2Fb', true],
    ['/a%2fb', true],
    ['/a%5Cb', true],
    ['/a%5cb', true],
  ];
  for (const [target, onlyWhenRejecting] of invalid) {
    it(`${JSON.stringify(target)} is refused${onlyWhenRejecting ? ' with escapedSlashes: reject' : ''}`, () => {
      assert.equal(isInvalidPath(target, true), true);
      assert.equal(isInvalidPath(target, false), !onlyWhenRejecting);
    });
  }
  const valid = ['/', '/a/b', '/a%41', '/a%252F', '/a%C3%A9', '/a?x=%zz', '/a?x=%00&y=%2F', '/a#%00', 'http://example.com?x=%00', '/a;x=1', '/%2e%2e/a'];
  for (const target of valid) {
    it(`${JSON.stringify(target)} passes`, () => {
      assert.equal(isInvalidPath(target, true), false);
      assert.equal(isInvalidPath(target, false), false);
    });
  }
});
