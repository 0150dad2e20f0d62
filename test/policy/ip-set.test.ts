import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { canonicalAddress, createAddressSet, ipv6Network } from '../../src/policy/ip-set.js';

describe('canonicalAddress', () => {
  it('spells each address one way', () => {
    assert.equal(canonicalAddress('203.0.113.7'), '203.0.113.7');
    assert.equal(canonicalAddress('2001:0DB8:0000::0001'), '2001:db8::1');
    assert.equal(canonicalAddress('fe80::1%eth0'), 'fe80::1');
    assert.equal(canonicalAddress('::ffff:10.0.0.1'), '10.0.0.1');
    assert.equal(canonicalAddress('::ffff:0a00:0001'), '10.0.0.1');
    assert.equal(canonicalAddress('::'), '::');
  });

  it('refuses legacy and non-address spellings', () => {
    for (const text of ['1.2.3', '01.2.3.4', '0x7f.0.0.1', '1.2.3.4.5', 'example.com', '', ' 1.2.3.4']) {
      assert.equal(canonicalAddress(text), undefined, text);
    }
  });
});

describe('ipv6Network', () => {
  it('masks to the prefix at any bit boundary', () => {
    assert.equal(ipv6Network('2001:db8:1:2:3:4:5:6', 64), '2001:db8:1:2::/64');
    assert.equal(ipv6Network('2001:db8:1:2:3:4:5:6', 60), '2001:db8:1::/60');
    assert.equal(ipv6Network('2001:db8:1:f:3:4:5:6', 61), '2001:db8:1:8::/61');
    assert.equal(ipv6Network('2001:db8::1', 0), '::/0');
  });
});

describe('createAddressSet', () => {
  it('matches IPv4 CIDRs at the edges of the address space', () => {
    const everything = createAddressSet(['0.0.0.0/0'], 'x');
    assert.equal(everything.has('0.0.0.0'), true);
    assert.equal(everything.has('255.255.255.255'), true);
    const high = createAddressSet(['128.0.0.0/1', '255.255.255.255'], 'x');
    assert.equal(high.has('200.1.1.1'), true);
    assert.equal(high.has('255.255.255.255'), true);
    assert.equal(high.has('127.255.255.255'), false);
    const host = createAddressSet(['10.1.2.3/32', '172.16.0.0/12'], 'x');
    assert.equal(host.has('10.1.2.3'), true);
    assert.equal(host.has('10.1.2.4'), false);
    assert.equal(host.has('172.31.255.255'), true);
    assert.equal(host.has('172.32.0.0'), false);
  });

  it('keeps families apart and ignores non-canonical input', () => {
    const set = createAddressSet(['10.0.0.0/8', '2001:db8::/32'], 'x');
    assert.equal(set.has('2001:db8::1'), true);
    assert.equal(set.has('2001:db9::1'), false);
    assert.equal(set.has('::ffff:10.0.0.1'), false, 'callers pass canonical text; mapped form is not');
    assert.equal(set.has('garbage'), false);
    assert.equal(set.size, 2);
  });

  it('names the setting and the entry when refusing', () => {
    assert.throws(() => createAddressSet(['10.0.0.0/8', 'nope'], 'clientIp.trustedProxies'), /clientIp\.trustedProxies: "nope" is not an IP address or CIDR/);
    assert.throws(() => createAddressSet(['2001:db8::/129'], 'allow.ips'), /allow\.ips: "2001:db8::\/129" has an invalid prefix length \(0-128\)/);
    assert.throws(() => createAddressSet(['10.0.0.0/-1'], 'allow.ips'), /invalid prefix length/);
  });
});
