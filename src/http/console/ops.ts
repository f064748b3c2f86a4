// The console's one door into the daemon: every fact it shows and every action it takes goes
// through here, on the same objects the CLI's commands act on (the Bridge's spool, delivery
// worker and token service). When the daemon-side operations module (src/control/ops.ts) is
// on main, this adapter switches to it and nothing else in the console changes.
import { Writable } from 'node:stream';
import type { Bridge } from '../../daemon/bridge.js';
import type { AccountStatus } from '../../oauth/service.js';
import type { AccountConfig } from '../../config/schema.js';
import type { Envelope } from '../../types.js';
import { queueDelete, queueRetry } from '../../cli/queue.js';
import { redactString } from '../../log/redact.js';

export type MessageState = 'queued' | 'deferred' | 'in-flight' | 'held' | 'failed';

export interface AccountView {
  config: AccountConfig;
  status: AccountStatus;
  /** Why its mail waits (needs-reauth, quota until ..., rate-limit until ...), or null. */
  held: string | null;
  /** Messages of this account in the queue. */
  queued: number;
}

export interface MessageView {
  id: string;
  account: string;
  from: string;
  rcpts: string[];
  size: number;
  receivedAt: string;
  attempts: number;
  nextAttemptAt: string;
  state: MessageState;
  reason: string | null;
  lastError: string | null;
}

export interface QueueView {
  counts: Record<MessageState, number>;
  oldestAgeMs: number | null;
  messages: MessageView[];
}

export interface ConsoleOps {
  accounts(): Promise<AccountView[]>;
  queue(): Promise<QueueView>;
  /** Each returns the one-line result the CLI would print; throws with the CLI's error text. */
  retry(id: string): Promise<string>;
  remove(id: string): Promise<string>;
  /** Present once the spool has operator holds. */
  hold?: (id: string) => Promise<string>;
  release?: (id: string) => Promise<string>;
  /** A new grant was stored for `account` by this process: use it now, send the held mail. */
  authorized(account: string): Promise<void>;
}

export function bridgeOps(bridge: Bridge): ConsoleOps {
  const view = async (): Promise<{ envs: Envelope[]; failed: number; held: Record<string, string> }> => ({
    envs: await bridge.spool.list(),
    failed: (await bridge.spool.listFailed()).length,
    held: bridge.worker.stats().held,
  });
  // The CLI's own command functions: same checks, same wording, same daemon notification.
  const viaCli = async (fn: (out: NodeJS.WritableStream, err: NodeJS.WritableStream) => Promise<number>): Promise<string> => {
    const out = collect();
    const err = collect();
    const code = await fn(out.stream, err.stream);
    if (code !== 0) throw new Error(err.text().trim() || 'failed');
    await bridge.worker.rescan();
    return out.text().trim();
  };
  return {
    async accounts() {
      const { envs, held } = await view();
      const status = new Map(bridge.tokens.status().map((s) => [s.account, s]));
      return bridge.config.accounts.flatMap((config) => {
        const st = status.get(config.name);
        if (!st) return [];
        return [{ config, status: st, held: held[config.name] ?? null, queued: envs.filter((e) => e.account === config.name).length }];
      });
    },
    async queue() {
      const { envs, failed, held } = await view();
      const now = Date.now();
      const counts: Record<MessageState, number> = { queued: 0, deferred: 0, 'in-flight': 0, held: 0, failed };
      let oldest: number | null = null;
      const messages = envs.map((e): MessageView => {
        const hold = held[e.account] ?? null;
        const state: MessageState = hold ? 'held' : e.attempts > 0 && Date.parse(e.nextAttemptAt) > now ? 'deferred' : 'queued';
        counts[state]++;
        const age = Math.max(0, now - Date.parse(e.receivedAt));
        oldest = oldest === null ? age : Math.max(oldest, age);
        return {
          id: e.id,
          account: e.account,
          from: e.mailFrom,
          rcpts: e.rcptTo,
          size: e.size,
          receivedAt: e.receivedAt,
          attempts: e.attempts,
          nextAttemptAt: e.nextAttemptAt,
          state,
          reason: hold,
          lastError: e.lastError ? redactString(e.lastError) : null,
        };
      });
      counts['in-flight'] = bridge.worker.stats().inFlight;
      return { counts, oldestAgeMs: oldest, messages };
    },
    retry: (id) => viaCli((out, err) => queueRetry(bridge.config, { id }, out, err)),
    remove: (id) => viaCli((out, err) => queueDelete(bridge.config, id, out, err)),
    async authorized() {
      await bridge.tokens.reloadStore();
    },
  };
}

export function collect(): { stream: NodeJS.WritableStream; text(): string } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer | string, _enc, cb) {
      chunks.push(String(chunk));
      cb();
    },
  });
  return { stream, text: () => chunks.join('') };
}
