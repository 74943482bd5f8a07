// Which resolved addresses a webhook or notification may not reach by name: IPv4 ones also in
// their IPv6 spellings (mapped, compatible, NAT64), and the cloud's IPv6 metadata address.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { forbiddenRange } from '../src/sources/webhook.ts';

test('loopback, link-local and metadata addresses are refused in every spelling a resolver returns', () => {
  for (const a of [
    '127.0.0.1',
    '169.254.169.254',
    '::1',
    '::ffff:127.0.0.1',
    '::ffff:169.254.169.254',
    '::169.254.169.254',
    '64:ff9b::a9fe:a9fe',
    '64:ff9b::7f00:1',
    'fe80::1',
    'fd00:ec2::254',
    'FD00:EC2::254',
  ]) {
    assert.notEqual(forbiddenRange(a), null, a);
  }
  for (const a of ['10.0.0.5', '93.184.216.34', '2606:2800:220:1::1', '64:ff9b::5db8:d822', 'fd00::1']) assert.equal(forbiddenRange(a), null, a);
});
