import { watch, type FSWatcher } from 'node:fs';
import path from 'node:path';

/**
 * Calls `onChange` (debounced) when the policy file may have changed. Watches the
 * file's DIRECTORY: Kubernetes updates a mounted ConfigMap by swapping the `..data`
 * symlink, which a watch on the file itself never sees. Editors that write a temp
 * file and rename it over the original are caught the same way.
 */
export function watchConfigFile(file: string, onChange: () => void, debounceMs = 250): { close(): void } {
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
  let watcher: FSWatcher | undefined = watch(dir, { persistent: false }, trigger);
  // A watcher error (directory removed) must not crash the proxy; SIGHUP still reloads.
  watcher.on('error', () => {
    watcher?.close();
    watcher = undefined;
  });
  return {
    close() {
      if (timer !== undefined) clearTimeout(timer);
      watcher?.close();
    },
  };
}
