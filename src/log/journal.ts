// journald's syslog-style level prefix: systemd sets JOURNAL_STREAM=DEV:INODE for a service
// whose stdout/stderr is connected to the journal, and a line starting with <N> is stored
// with priority N (so `journalctl -p warning` works). Only when the fd really is that stream
// (sd-daemon(3)): a child whose stderr was redirected elsewhere inherits the variable too.
import { fstatSync } from 'node:fs';
import type { Level } from './level.js';

export const PRIORITY: Record<Level, number> = { error: 3, warn: 4, info: 6, debug: 7 };

/** Whether file descriptor `fd` is the journal stream JOURNAL_STREAM names. */
export function isJournalStream(fd: number, env: NodeJS.ProcessEnv = process.env): boolean {
  const m = /^(\d+):(\d+)$/.exec(env.JOURNAL_STREAM ?? '');
  if (!m) return false;
  try {
    const st = fstatSync(fd, { bigint: true });
    return st.dev === BigInt(m[1]) && st.ino === BigInt(m[2]);
  } catch {
    return false;
  }
}

/**
 * `log.format` when the config sets none: text under systemd (it sets INVOCATION_ID for every
 * unit it starts, JOURNAL_STREAM when stdout/stderr go to the journal), where the journal adds
 * time, host and priority itself; JSON elsewhere, for log shippers.
 */
export function defaultLogFormat(env: NodeJS.ProcessEnv = process.env): 'json' | 'text' {
  return env.JOURNAL_STREAM || env.INVOCATION_ID ? 'text' : 'json';
}
