import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createClientIpResolver } from '../../src/policy/client-ip.js';

const PROXIES = ['10.0.0.0/8', '192.168.1.1', 'fd00::/8'];

describe('createClientIpResolver', () => {
  it('without trusted proxies: the peer, X-Forwarded-For ignored', () => {
    const resolver = createClientIpResolver({ trustedProxies: [], ipv6Prefix: 64 });
    assert.deepEqual(resolver.resolve('203.0.113.7', '1.2.3.4'), { ip: '203.0.113.7', key: '203.0.113.7', peerTrusted: false });
  });

  it('an untrusted peer cannot spoof X-Forwarded-For', () => {
    const resolver = createClientIpResolver({ trustedProxies: PROXIES, ipv6Prefix: 64 });
    assert.deepEqual(resolver.resolve('203.0.113.7', '1.2.3.4, 10.0.0.1'), {
      ip: '203.0.113.7',
      key: '203.0.113.7',
      peerTrusted: false,
    });
  });

  it('a trusted peer: rightmost untrusted hop, trusted hops skipped, spoofed left part never read', () => {
    const resolver = createClientIpResolver({ trustedProxies: PROXIES, ipv6Prefix: 64 });
    assert.deepEqual(resolver.resolve('10.0.0.5', 'spoofed, 1.1.1.1, 198.51.100.9, 10.1.2.3, 192.168.1.1'), {
      ip: '198.51.100.9',
      key: '198.51.100.9',
      peerTrusted: true,
    });
    // several header lines are joined with commas, in order
    assert.equal(resolver.resolve('10.0.0.5', ['1.1.1.1', '198.51.100.9, 10.1.2.3']).ip, '198.51.100.9');
    assert.equal(resolver.resolve('10.0.0.5', '198.51.100.9').ip, '198.51.100.9');
  });

  it('a trusted peer without X-Forwarded-For: the peer itself', () => {
    const resolver = createClientIpResolver({ trustedProxies: PROXIES, ipv6Prefix: 64 });
    assert.deepEqual(resolver.resolve('10.0.0.5', undefined), { ip: '10.0.0.5', key: '10.0.0.5', peerTrusted: true });
  });

  it('every hop trusted: the leftmost', () => {
    const resolver = createClientIpResolver({ trustedProxies: PROXIES, ipv6Prefix: 64 });
    assert.equal(resolver.resolve('10.0.0.5', '10.9.9.9, 10.1.1.1, 192.168.1.1').ip, '10.9.9.9');
  });

  it('a malformed hop ends the walk at the last hop a trusted proxy vouched for', () => {
    const resolver = createClientIpResolver({ trustedProxies: PROXIES, ipv6Prefix: 64 });
    assert.equal(resolver.resolve('10.0.0.5', '1.1.1.1, not-an-ip, 10.1.1.1').ip, '10.1.1.1');
    assert.equal(resolver.resolve('10.0.0.5', '1.1.1.1, unknown').ip, '10.0.0.5');
    assert.equal(resolver.resolve('10.0.0.5', '1.1.1.1, , 10.1.1.1').ip, '10.1.1.1');
    assert.equal(resolver.resolve('10.0.0.5', '1.1.1.1, 01.2.3.4').ip, '10.0.0.5');
    assert.equal(resolver.resolve('10.0.0.5', '').ip, '10.0.0.5');
  });

  it('hops may carry ports or brackets', () => {
    const resolver = createClientIpResolver({ trustedProxies: PROXIES, ipv6Prefix: 64 });
    assert.equal(resolver.resolve('10.0.0.5', '198.51.100.9:5555').ip, '198.51.100.9');
    assert.equal(resolver.resolve('10.0.0.5', '[2001:DB8::1]:443').ip, '2001:db8::1');
    assert.equal(resolver.resolve('10.0.0.5', '[2001:db8::1]').ip, '2001:db8::1');
    assert.equal(resolver.resolve('10.0.0.5', '2001:db8::1').ip, '2001:db8::1');
    assert.equal(resolver.resolve('10.0.0.5', '198.51.100.9:99999').ip, '10.0.0.5');
  });

  it('IPv4-mapped IPv6 is the IPv4 address, for the peer, hops and the trusted set', () => {
    const resolver = createClientIpResolver({ trustedProxies: PROXIES, ipv6Prefix: 64 });
    assert.deepEqual(resolver.resolve('::ffff:203.0.113.7', undefined), { ip: '203.0.113.7', key: '203.0.113.7', peerTrusted: false });
    assert.deepEqual(resolver.resolve('::ffff:10.0.0.5', '::FFFF:198.51.100.9'), {
      ip: '198.51.100.9',
      key: '198.51.100.9',
      peerTrusted: true,
    });
  });

  it('IPv6 clients are keyed by their /ipv6Prefix network', () => {
    const resolver = createClientIpResolver({ trustedProxies: [], ipv6Prefix: 64 });
    const a = resolver.resolve('2001:db8:1:2::1', undefined);
    const b = resolver.resolve('2001:db8:1:2:ffff:eeee:dddd:cccc', undefined);
    const c = resolver.resolve('2001:db8:1:3::1', undefined);
    assert.equal(a.key, '2001:db8:1:2::/64');
    assert.equal(b.key, a.key);
    assert.notEqual(c.key, a.key);
    assert.equal(a.ip, '2001:db8:1:2::1');
    assert.equal(b.ip, '2001:db8:1:2:ffff:eeee:dddd:cccc');
    // repeated lookups (cached) give the same answer
    assert.equal(resolver.resolve('2001:db8:1:2::1', undefined).key, '2001:db8:1:2::/64');
    assert.equal(createClientIpResolver({ trustedProxies: [], ipv6Prefix: 48 }).resolve('2001:db8:1:2::1', undefined).key, '2001:db8:1::/48');
    assert.equal(createClientIpResolver({ trustedProxies: [], ipv6Prefix: 56 }).resolve('2001:db8:1:2ff::1', undefined).key, '2001:db8:1:200::/56');
    assert.equal(createClientIpResolver({ trustedProxies: [], ipv6Prefix: 128 }).resolve('2001:db8::1', undefined).key, '2001:db8::1/128');
  });

  it('an IPv6 trusted proxy forwards for an IPv6 client', () => {
    const resolver = createClientIpResolver({ trustedProxies: PROXIES, ipv6Prefix: 64 });
    assert.deepEqual(resolver.resolve('fd00::1', '2001:db8:aa:bb::5, fd12::9'), {
      ip: '2001:db8:aa:bb::5',
      key: '2001:db8:aa:bb::/64',
      peerTrusted: true,
    });
  });

  it('no peer address: one shared unknown key', () => {
    const resolver = createClientIpResolver({ trustedProxies: PROXIES, ipv6Prefix: 64 });
    assert.deepEqual(resolver.resolve(undefined, '1.2.3.4'), { ip: 'unknown', key: 'unknown', peerTrusted: false });
  });

  it('refuses bad configuration', () => {
    assert.throws(() => createClientIpResolver({ trustedProxies: ['10.0.0.0/33'], ipv6Prefix: 64 }), /trustedProxies.*prefix length/);
    assert.throws(() => createClientIpResolver({ trustedProxies: ['proxy.local'], ipv6Prefix: 64 }), /trustedProxies: "proxy.local" is not/);
    assert.throws(() => createClientIpResolver({ trustedProxies: [], ipv6Prefix: 129 }), /ipv6Prefix/);
  });
});
