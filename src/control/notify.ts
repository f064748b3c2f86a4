// How a CLI command tells a running daemon that the spool or the token store changed:
// it touches a file under stateDir/control/; the daemon watches that folder (and polls it,
// since fs.watch can miss events on some filesystems) and reacts within seconds.
import { mkdirSync, writeFileSync, watch, statSync, type FSWatcher } from 'node:fs';
import { join } from 'node:path';

export type ControlTopic = 'queue' | 'tokens' | 'reload';

export function controlDir(stateDir: string): string {
  return join(stateDir, 'control');
}

/** Called by CLI commands after they changed state a running daemon should pick up. */
export function notifyDaemon(stateDir: string, topic: ControlTopic): void {
  const dir = controlDir(stateDir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileSync(join(dir, topic), `${Date.now()}\n`);
}

/** Calls `onChange(topic)` when a CLI command signalled `topic`. Returns a stop function. */
export function watchControl(stateDir: string, onChange: (topic: ControlTopic) => void, pollMs = 1000): () => void {
  const dir = controlDir(stateDir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const topics: ControlTopic[] = ['queue', 'tokens', 'reload'];
  const mtime = (t: ControlTopic) => {
    try {
      return statSync(join(dir, t)).mtimeMs;
    } catch {
      return 0;
    }
  };
  const seen = new Map(topics.map((t) => [t, mtime(t)] as const));
  const check = () => {
    for (const t of topics) {
      const m = mtime(t);
      if (m !== seen.get(t)) {
        seen.set(t, m);
        onChange(t);
      }
    }
  };
  let watcher: FSWatcher | undefined;
  try {
    watcher = watch(dir, () => check());
    watcher.on('error', () => {});
  } catch {
    /* polling alone still works */
  }
  const timer = setInterval(check, pollMs);
  timer.unref();
  return () => {
    clearInterval(timer);
    watcher?.close();
  };
}
