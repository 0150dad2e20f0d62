import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseCommand, UsageError } from '../../src/config/settings.js';

/** The UsageError message parseCommand throws for these arguments and environment. */
function usageError(argv: string[], env: Record<string, string> = {}): string {
  try {
    parseCommand(argv, env);
  } catch (error) {
    assert.ok(error instanceof UsageError, String(error));
    return error.message;
  }
  assert.fail(`no UsageError for ${argv.join(' ')}`);
}

describe('parseCommand: an invalid value names where it came from', () => {
  test('a flag is named as typed', () => {
    assert.match(usageError(['serve', '--listen', 'nope']), /^--listen: expected HOST:PORT/);
    assert.match(usageError(['serve', '--admin', 'nope']), /^--admin: expected HOST:PORT/);
    assert.match(usageError(['serve', '--drain-timeout', 'soon']), /^--drain-timeout: expected a duration/);
    assert.match(usageError(['serve', '--drain-timeout', '25d']), /^--drain-timeout: at most 24d/);
    assert.match(usageError(['serve', '--headers-timeout', 'soon']), /^--headers-timeout: expected a duration/);
    assert.match(usageError(['serve', '--request-timeout', 'soon']), /^--request-timeout: expected a duration/);
    assert.match(usageError(['serve', '--keep-alive-timeout', 'soon']), /^--keep-alive-timeout: expected a duration/);
    assert.match(usageError(['serve', '--upstream', 'ftp://x']), /^--upstream: expected an http/);
  });

  test('an environment variable is named as set', () => {
    assert.match(usageError(['serve'], { TOLLGATE_LISTEN: 'nope' }), /^TOLLGATE_LISTEN: expected HOST:PORT/);
    assert.match(usageError(['serve'], { TOLLGATE_DRAIN_TIMEOUT: 'soon' }), /^TOLLGATE_DRAIN_TIMEOUT: expected a duration/);
    assert.match(usageError(['serve'], { TOLLGATE_KEEPALIVE_TIMEOUT: 'soon' }), /^TOLLGATE_KEEPALIVE_TIMEOUT: expected a duration/);
  });

  test('the flag wins over the variable, in the value and in the message', () => {
    assert.match(usageError(['serve', '--listen', 'nope'], { TOLLGATE_LISTEN: '127.0.0.1:8080' }), /^--listen: .*"nope"/);
    const parsed = parseCommand(['serve', '--listen', '127.0.0.1:1'], { TOLLGATE_LISTEN: 'nope' });
    assert.equal(parsed.command === 'serve' && parsed.settings.listen.port, 1);
  });
});
