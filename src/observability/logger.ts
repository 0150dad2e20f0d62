import { pino, type Logger } from 'pino';

export type { Logger } from 'pino';

/**
 * JSON logs to stdout. Writes are asynchronous (sonic-boom, flushed on exit) so a
 * log line never blocks the hot path; `redact` is a second line of defence: no
 * code path should hand a token or secret to the logger in the first place.
 */
export function createLogger(level = 'info', destination?: pino.DestinationStream): Logger {
  const stream = destination ?? pino.destination({ sync: false });
  return pino(
    {
      level,
      base: { service: 'tollgate' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: {
        paths: ['authorization', 'headers.authorization', 'headers.cookie', 'secret', 'password', 'token'],
        censor: '[redacted]',
      },
    },
    stream,
  );
}
