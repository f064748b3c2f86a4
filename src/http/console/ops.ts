// The console's one door into the daemon: every fact it shows and every action it takes goes
// through the daemon-side operations (src/control/ops.ts), the same ones the CLI's commands
// reach over the control socket: same checks, same answers, one owner of the queue.
import { Writable } from 'node:stream';
import type { Bridge } from '../../daemon/bridge.js';
import type { AccountStatus } from '../../oauth/service.js';
import type { AccountConfig } from '../../config/schema.js';
import type { CommandResult } from '../../delivery/worker.js';
import type { TokenRecord } from '../../oauth/store.js';
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
  /** Stores the grant `authorize` obtained through the daemon's operations; answers once the token service uses it. */
  storeGrant(account: string, rec: TokenRecord): Promise<void>;
}

export function bridgeOps(bridge: Bridge): ConsoleOps {
  // Refusals read as the CLI prints them (`queue retry: …`).
  const answer = (verb: string, r: CommandResult): string => {
    if (!r.ok) throw new Error(`queue ${verb}: ${r.message}`);
    return r.message;
  };
  return {
    async accounts() {
      const rows = await bridge.ops.listQueue();
      const held = bridge.worker.stats().held;
      const status = new Map(bridge.ops.tokenStatus().map((s) => [s.account, s]));
      return bridge.config.accounts.flatMap((config) => {
        const st = status.get(config.name);
        if (!st) return [];
        return [{ config, status: st, held: held[config.name] ?? null, queued: rows.filter((r) => r.account === config.name && r.state !== 'failed' && r.state !== 'corrupt').length }];
      });
    },
    async queue() {
      const rows = await bridge.ops.listQueue();
      const counts: Record<MessageState, number> = { queued: 0, deferred: 0, 'in-flight': 0, held: 0, failed: 0 };
      let oldest: number | null = null;
      const messages: MessageView[] = [];
      for (const r of rows) {
        if (r.state === 'corrupt') continue; // shown by `queue list`; nothing the console can act on
        counts[r.state]++;
        if (r.state === 'failed') continue;
        oldest = oldest === null ? r.ageMs : Math.max(oldest, r.ageMs ?? 0);
        messages.push({
          id: r.id,
          account: r.account ?? '?',
          from: r.from ?? '',
          rcpts: r.rcpts.map((x) => x.address),
          size: r.size,
          receivedAt: r.receivedAt ?? '',
          attempts: r.attempts,
          nextAttemptAt: r.nextAttemptAt ?? '',
          state: r.state,
          reason: r.reason,
          lastError: r.lastReply ? redactString(r.lastReply) : null,
        });
      }
      return { counts, oldestAgeMs: oldest, messages };
    },
    retry: async (id) => answer('retry', await bridge.ops.retry(id)),
    remove: async (id) => answer('delete', await bridge.ops.delete(id)),
    hold: async (id) => answer('hold', await bridge.ops.hold(id)),
    release: async (id) => answer('release', await bridge.ops.release(id)),
    async storeGrant(account, rec) {
      if (!rec.refreshToken) throw new Error('the token endpoint returned no refresh token');
      const r = await bridge.ops.importToken(account, rec.refreshToken, rec.authorizedEmail ? { authorizedEmail: rec.authorizedEmail } : {});
      if (!r.ok) throw new Error(r.message);
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
