import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createAllowList } from '../../src/policy/allow.js';
import { ANONYMOUS, type ClientAddress } from '../../src/policy/types.js';

const client = (ip: string): ClientAddress => ({ ip, key: ip, peerTrusted: false });

describe('createAllowList', () => {
  it('matches the resolved client IP against CIDRs and bare addresses', () => {
    const allow = createAllowList({ ips: ['10.0.0.0/8', '203.0.113.7', '2001:db8::/32'], users: [] });
    assert.equal(allow.isAllowed(client('10.20.30.40'), ANONYMOUS), true);
    assert.equal(allow.isAllowed(client('203.0.113.7'), ANONYMOUS), true);
    assert.equal(allow.isAllowed(client('2001:db8:1::5'), ANONYMOUS), true);
    assert.equal(allow.isAllowed(client('203.0.113.8'), ANONYMOUS), false);
    assert.equal(allow.isAllowed(client('11.0.0.1'), ANONYMOUS), false);
    assert.equal(allow.isAllowed(client('2001:db9::1'), ANONYMOUS), false);
    assert.equal(allow.isAllowed(client('unknown'), ANONYMOUS), false);
  });

  it('matches the user id', () => {
    const allow = createAllowList({ ips: [], users: ['ops-bot', 'monitor'] });
    assert.equal(allow.isAllowed(client('1.2.3.4'), { userId: 'ops-bot' }), true);
    assert.equal(allow.isAllowed(client('1.2.3.4'), { userId: 'ops-bot2' }), false);
    assert.equal(allow.isAllowed(client('1.2.3.4'), ANONYMOUS), false);
  });

  it('an IPv4-mapped IPv6 CIDR covers the IPv4 clients it maps', () => {
    const allow = createAllowList({ ips: ['::ffff:192.0.2.0/120'], users: [] });
    assert.equal(allow.isAllowed(client('192.0.2.77'), ANONYMOUS), true);
    assert.equal(allow.isAllowed(client('192.0.3.1'), ANONYMOUS), false);
  });

  it('empty: nobody', () => {
    assert.equal(createAllowList({ ips: [], users: [] }).isAllowed(client('1.2.3.4'), { userId: 'x' }), false);
  });

  it('refuses entries that are not addresses or CIDRs', () => {
    assert.throws(() => createAllowList({ ips: ['10.1'], users: [] }), /allow\.ips: "10\.1" is not an IP address or CIDR/);
    assert.throws(() => createAllowList({ ips: ['10.0.0.0/x'], users: [] }), /allow\.ips: "10\.0\.0\.0\/x" has an invalid prefix length/);
  });
});
