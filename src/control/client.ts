// The CLI's way to the owner of the state directory: the running daemon over its control
// socket, or, with no daemon running, this process itself holding the state lock and acting
// on the files (the same operations, the same answers).
import { connect } from 'node:net';
import type { Config } from '../config/schema.js';
import { nullLogger } from '../log/logger.js';
import { acquireStateLock, lockOwner, StateLockedError } from './stateLock.js';
import { dispatch, socketPath, type OpName, type Response } from './protocol.js';

/** The daemon went away (or never answered) while a request was being served. */
export class DaemonGoneError extends Error {}

type Outcome = { kind: 'answer'; res: Response } | { kind: 'no-daemon' };

function ask(path: string, op: OpName, args: Record<string, unknown>): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const sock = connect(path);
    let buf = '';
    let connected = false;
    sock.setEncoding('utf8');
    sock.on('connect', () => {
      connected = true;
      sock.write(JSON.stringify({ op, args }) + '\n');
    });
    sock.on('data', (c: string) => (buf += c));
    sock.on('error', (e: NodeJS.ErrnoException) => {
      if (!connected && (e.code === 'ENOENT' || e.code === 'ECONNREFUSED')) return resolve({ kind: 'no-daemon' });
      if (!connected) return reject(new Error(`cannot reach the daemon at ${path}: ${e.code ?? e.message}`));
      reject(
        new DaemonGoneError(
          `the daemon closed the control connection before answering (${e.code ?? e.message}); it may have stopped or crashed. Check \`queue list\` / the daemon log before repeating the command`,
        ),
      );
    });
    sock.on('end', () => {
      const nl = buf.indexOf('\n');
      if (nl < 0) {
        reject(
          new DaemonGoneError(
            'the daemon closed the control connection before answering; it may have stopped or crashed. Check `queue list` / the daemon log before repeating the command',
          ),
        );
        return;
      }
      try {
        resolve({ kind: 'answer', res: JSON.parse(buf.slice(0, nl)) as Response });
      } catch {
        reject(new Error('the daemon sent an answer that is not JSON'));
      }
    });
  });
}

export interface CallResult {
  result: unknown;
  /** true when a running daemon answered; false when this process acted on the files. */
  viaDaemon: boolean;
}

/**
 * Runs one operation on the owner of `config.stateDir`. A daemon that holds the lock but does
 * not answer yet (starting up) is waited for up to `waitMs`.
 */
export async function callOwner(
  config: Config,
  op: OpName,
  args: Record<string, unknown> = {},
  opts: { waitMs?: number } = {},
): Promise<CallResult> {
  const path = socketPath(config.stateDir);
  const deadline = Date.now() + (opts.waitMs ?? 10_000);
  for (;;) {
    const o = await ask(path, op, args);
    if (o.kind === 'answer') {
      if (!o.res.ok) throw new Error(o.res.error);
      return { result: o.res.result, viaDaemon: true };
    }
    let lock;
    try {
      lock = await acquireStateLock(config.stateDir, 'cli', { waitMs: Math.max(0, deadline - Date.now()) });
    } catch (e) {
      if (e instanceof StateLockedError && e.owner.role === 'daemon' && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100)); // the daemon is starting or stopping
        continue;
      }
      if (e instanceof StateLockedError && e.owner.role === 'daemon')
        throw new Error(
          `the daemon (PID ${e.owner.pid}) owns the state directory but does not answer on ${path}; is it stuck? (see its log)`,
        );
      throw e;
    }
    try {
      const { localOperations } = await import('./local.js');
      const local = await localOperations(config, nullLogger, op);
      try {
        return { result: await dispatch(local.ops, { op, args }), viaDaemon: false };
      } finally {
        await local.close();
      }
    } finally {
      await lock.release();
    }
  }
}

/** Whether a daemon owns the state directory right now (for messages only). */
export async function daemonPid(stateDir: string): Promise<number | null> {
  const o = await lockOwner(stateDir).catch(() => null);
  return o?.role === 'daemon' ? o.pid : null;
}
