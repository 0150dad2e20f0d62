import { watch, type FSWatcher } from 'node:fs';
import path from 'node:path';

export interface WatchOptions {
  /** Quiet time after the last event before `onChange` runs. Default 250ms. */
  debounceMs?: number;
  /**
   * Watching could not start (ENOSPC: inotify limit, EACCES) or stopped (directory removed).
   * Either way there is no watching from then on; edits reload on SIGHUP only. For a log line.
   */
  onError?: (error: Error) => void;
}

const DEBOUNCE_MS = 250; // editors write a file in several steps

/**
 * Calls `onChange` (debounced) when the policy file may have changed. Watches the
 * file's DIRECTORY: Kubernetes updates a mounted ConfigMap by swapping the `..data`
 * symlink, which a watch on the file itself never sees. Editors that write a temp
 * file and rename it over the original are caught the same way. Never throws.
 */
export function watchConfigFile(file: string, onChange: () => void, options: WatchOptions = {}): { close(): void } {
  const { debounceMs = DEBOUNCE_MS, onError } = options;
  const report = (error: Error): void => {
    try {
      onError?.(error);
    } catch {
      // A failing log line must not stop the proxy either.
    }
  };
  const dir = path.dirname(path.resolve(file));
  let timer: NodeJS.Timeout | undefined;
  const trigger = (): void => {
    if (timer !== undefined) clearTimeout(timer);
    timer = setTimeout(() => {
      timer = undefined;
      onChange();
    }, debounceMs);
    timer.unref();
  };
  let watcher: FSWatcher | undefined;
  try {
    watcher = watch(dir, { persistent: false }, trigger);
  } catch (error) {
    // fs.watch throws synchronously on ENOSPC (inotify limit) or EACCES. The proxy is
    // already listening: failing its start over this would leak the listeners, and SIGHUP
    // still reloads, so carry on without watching.
    report(error as Error);
    return { close() {} };
  }
  // A watcher error (directory removed) must not crash the proxy; SIGHUP still reloads.
  watcher.on('error', (error) => {
    watcher?.close();
    watcher = undefined;
    report(error);
  });
  return {
    close() {
      if (timer !== undefined) clearTimeout(timer);
      watcher?.close();
    },
  };
}
