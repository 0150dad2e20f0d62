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

/** The stream a logger writes to, when it can be ended (pino's destination). */
type EndableStream = NodeJS.EventEmitter & { end(): void; destroyed?: boolean };

/**
 * Writes out what is buffered, then ends the log stream; resolves once it closed, failed,
 * or after `timeoutMs`. For the moment before `process.exit`: pino's exit hook flushes
 * synchronously, and sonic-boom's flushSync retries a write to a closed pipe forever
 * (EPIPE: the log reader died with the process, e.g. `| tail` in the same process group
 * on SIGTERM). Ended first, the write fails asynchronously instead, pino's EPIPE filter
 * stops the stream, and the hook has nothing left to write.
 */
export function endLogs(logger: Logger, timeoutMs = 1_000): Promise<void> {
  const stream = (logger as unknown as Record<symbol, unknown>)[pino.symbols.streamSym] as EndableStream | undefined;
  if (stream === undefined || typeof stream.end !== 'function' || stream.destroyed === true) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(done, timeoutMs);
    stream.once('close', done);
    stream.once('error', done);
    try {
      stream.end();
    } catch {
      done();
    }
  });
}
