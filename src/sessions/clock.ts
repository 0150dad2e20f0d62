import type { SessionClock, TimerHandle } from './types.js';

/**
 * The real session clock. Timers are unref'd: an open tunnel's sockets keep the
 * process alive, its timer alone must not.
 */
export const realClock: SessionClock = Object.freeze({
  now: () => performance.now(),
  setTimer(fn: () => void, ms: number): TimerHandle {
    const timer = setTimeout(fn, ms);
    timer.unref();
    return timer;
  },
  clearTimer(handle: TimerHandle): void {
    clearTimeout(handle as NodeJS.Timeout);
  },
});
