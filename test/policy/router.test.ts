import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { RouteMatchConfig } from '../../src/config/types.js';
import { compileGuards } from '../../src/guards/compile.js';
import { createRouter } from '../../src/policy/router.js';
import type { CompiledRoute } from '../../src/policy/types.js';

function route(id: string): CompiledRoute {
  return { id, message: 'm', mode: 'enforce', upstreamTimeoutMs: 1000, limits: [], guards: null, dropResponseHeaders: null, session: null };
}

/** Router over `[id, match]` pairs (caseSensitive defaults to false, as the loader does). */
function router(...entries: Array<[string, Partial<RouteMatchConfig>]>) {
  const matcher = createRouter(
    entries.map(([id, match]) => ({ route: route(id), match: { caseSensitive: false, ...match } })),
  );
  return (target: string, method = 'GET', isUpgrade = false) => matcher.match(method, target, isUpgrade)?.id;
}

describe('createRouter', () => {
  it('prefix /x/* covers /x and below, never /xy', () => {
    const match = router(['livekit', { path: '/api/livekit/*' }]);
    assert.equal(match('/api/livekit'), 'livekit');
    assert.equal(match('/api/livekit/'), 'livekit');
    assert.equal(match('/api/livekit/x/y?z=1'), 'livekit');
    assert.equal(match('/api/livekitx'), undefined);
    assert.equal(match('/api/livekitx/y'), undefined);
    assert.equal(match('/api'), undefined);
  });

  it('/* covers everything', () => {
    const match = router(['all', { path: '/*' }]);
    assert.equal(match('/'), 'all');
    assert.equal(match('/anything/at/all'), 'all');
  });

  it('exact paths match only themselves, in any spelling', () => {
    const match = router(['login', { path: '/api/login' }]);
    for (const target of ['/api/login', '/API/Login/', '//api/./x/../login?next=/', '/api/%6Cogin', 'http://h/api/login', '/api%2Flogin', '/api/login;x=1', '/api/x/..;y/login']) {
      assert.equal(match(target), 'login', target);
    }
    assert.equal(match('/api/login/extra'), undefined);
    assert.equal(match('/api/logins'), undefined);
    assert.equal(match('/api%252Flogin'), undefined);
  });

  it('patterns are canonicalised like paths', () => {
    const match = router(['a', { path: '/API//Users/' }], ['b', { path: '/Docs/*' }]);
    assert.equal(match('/api/users'), 'a');
    assert.equal(match('/docs/intro'), 'b');
  });

  it('first match wins, in file order', () => {
    const match = router(['specific', { path: '/api/login' }], ['api', { path: '/api/*' }], ['shadowed', { path: '/api/login' }]);
    assert.equal(match('/api/login'), 'specific');
    assert.equal(match('/api/other'), 'api');
    const reversed = router(['api', { path: '/api/*' }], ['specific', { path: '/api/login' }]);
    assert.equal(reversed('/api/login'), 'api');
  });

  it('methods restrict the route; HEAD rides with GET', () => {
    const match = router(['write', { path: '/items', methods: ['POST', 'PUT'] }], ['read', { path: '/items', methods: ['GET'] }], ['any', { path: '/items' }]);
    assert.equal(match('/items', 'POST'), 'write');
    assert.equal(match('/items', 'PUT'), 'write');
    assert.equal(match('/items', 'GET'), 'read');
    assert.equal(match('/items', 'HEAD'), 'read');
    assert.equal(match('/items', 'DELETE'), 'any');
  });

  it('websocket: true only upgrades, false only non-upgrades, absent both', () => {
    const match = router(['ws', { path: '/rtc', websocket: true }], ['http', { path: '/rtc', websocket: false }]);
    assert.equal(match('/rtc', 'GET', true), 'ws');
    assert.equal(match('/rtc', 'GET', false), 'http');
    const either = router(['both', { path: '/rtc' }]);
    assert.equal(either('/rtc', 'GET', true), 'both');
    assert.equal(either('/rtc', 'GET', false), 'both');
  });

  it('regex is tested against the canonical path', () => {
    const match = router(['user', { regex: '^/users/\\d+/avatar$' }]);
    assert.equal(match('/users/42/avatar'), 'user');
    assert.equal(match('/users//42/./avatar/?size=1'), 'user');
    assert.equal(match('/USERS/42/Avatar'), 'user');
    assert.equal(match('/users/abc/avatar'), undefined);
    const upper = router(['upper', { regex: '^/Users/\\d+$' }]);
    assert.equal(upper('/users/1'), 'upper');
  });

  it('caseSensitive keeps letter case, for paths and regexes', () => {
    const match = router(['exact', { path: '/Api/Key', caseSensitive: true }], ['rx', { regex: '^/Token$', caseSensitive: true }], ['fallback', { path: '/*' }]);
    assert.equal(match('/Api/Key'), 'exact');
    assert.equal(match('/Api/%4Bey'), 'exact');
    assert.equal(match('/api/key'), 'fallback');
    assert.equal(match('/Token'), 'rx');
    assert.equal(match('/token'), 'fallback');
  });

  it('nothing matches: undefined', () => {
    const match = router(['a', { path: '/a' }]);
    assert.equal(match('/b'), undefined);
    assert.equal(createRouter([]).match('GET', '/', false), undefined);
  });

  it('refuses bad patterns when compiling', () => {
    assert.throws(() => router(['bad', { regex: '(' }]), /route "bad": invalid regex/);
    assert.throws(() => router(['bad', { path: '/a?b=1' }]), /route "bad".*must not contain/);
    assert.throws(() => router(['bad', {}]), /route "bad": match needs a path or a regex/);
  });

  it('a CORS preflight reaches a route with cors whatever its match.methods; other routes match OPTIONS as usual', () => {
    const cors = { methods: [], headers: [], exposeHeaders: [], credentials: false };
    const withCors: CompiledRoute = { ...route('cors'), guards: compileGuards({ origins: ['https://a.example'], cors }) };
    const matcher = createRouter([
      { route: withCors, match: { path: '/token', methods: ['POST'], caseSensitive: false } },
      { route: route('plain'), match: { path: '/plain', methods: ['POST'], caseSensitive: false } },
    ]);
    assert.equal(matcher.match('OPTIONS', '/token', false, true)?.id, 'cors');
    assert.equal(matcher.match('OPTIONS', '/token', false, false), undefined, 'a plain OPTIONS is just a method');
    assert.equal(matcher.match('OPTIONS', '/plain', false, true), undefined);
    assert.equal(matcher.match('POST', '/token', false)?.id, 'cors');
  });
});
