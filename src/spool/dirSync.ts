// Directory fsyncs for the spool: group commit (concurrent callers share one fsync) over
// directories kept open, so under load a message costs a share of one fsync, not its own.
import { close as closeCb, fsync as fsyncCb, open as openCb } from 'node:fs';
import { promisify } from 'node:util';

// Plain descriptors for the directories the spool keeps open (see fsyncDirFd).
const openFd = promisify(openCb);
const fsyncFd = promisify(fsyncCb);
const closeFd = promisify(closeCb);

export class DirSync {
  /** Per directory: the fsync in progress and the one queued behind it (see sync). */
  private readonly dirSyncs = new Map<string, { running: Promise<void> | null; next: Promise<void> | null }>();
  /** Directories kept open for their fsyncs (plain descriptors; close() ends them). */
  private readonly dirFds = new Map<string, Promise<number>>();

  /** enabled false: measurement only (bench), every sync is a no-op. */
  constructor(private readonly enabled: boolean) {}

  /**
   * Makes every directory change done before the call durable. Concurrent callers share
   * fsyncs (group commit): a caller joins the next fsync that has not started yet, never one
   * already running (it may have begun before the caller's rename/unlink). Under load this
   * is one or two directory fsyncs at a time instead of one per message.
   */
  sync(dir: string): Promise<void> {
    if (!this.enabled) return Promise.resolve();
    let st = this.dirSyncs.get(dir);
    if (!st) this.dirSyncs.set(dir, (st = { running: null, next: null }));
    const state = st;
    const start = (): Promise<void> => {
      const p: Promise<void> = this.fsyncDirFd(dir).finally(() => {
        if (state.running === p) state.running = null;
      });
      state.running = p;
      return p;
    };
    if (!state.running) return start();
    state.next ??= state.running
      .catch(() => {})
      .then(() => {
        state.next = null;
        return start();
      });
    return state.next;
  }

  /** One open descriptor per directory instead of an open and a close around every fsync. */
  private async fsyncDirFd(dir: string): Promise<void> {
    let fd = this.dirFds.get(dir);
    if (!fd) {
      fd = openFd(dir, 'r');
      this.dirFds.set(dir, fd);
      fd.catch(() => this.dirFds.delete(dir));
    }
    await fsyncFd(await fd);
  }

  /** Closes the directories held open for fsyncs (daemon stop); they are reopened if used again. */
  async close(): Promise<void> {
    const fds = [...this.dirFds.values()];
    this.dirFds.clear();
    for (const fd of fds) await fd.then((n) => closeFd(n)).catch(() => {});
  }
}
