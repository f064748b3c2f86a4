// The console's one door into the daemon: every fact it shows and every action it takes goes
// through the daemon-side operations (src/control/ops.ts), the same ones the CLI's commands
// reach over the control socket: same checks, same answers, one owner of the queue.
import { Writable } from 'node:stream';
import type { AccountStatus } from '../../oauth/service.js';
import type { AccountConfig, Config } from '../../config/schema.js';
import type { CommandResult } from '../../delivery/worker.js';
import type { Operations, QueueRow } from '../../control/ops.js';
import type { TokenRecord } from '../../oauth/store.js';
import type { MessageState } from '../../types.js';
import { redactString } from '../../log/redact.js';

export interface AccountView {
  config: AccountConfig;
  status: AccountStatus;
  /** Why its mail waits (needs-reauth, quota until ..., rate-limit until ...), or null. */
  held: string | null;
  /** Messages of this account in the queue. */
  queued: number;
}

/** The queue page: counts by state, and the messages still to be delivered as `queue list --json` rows. */
export interface QueueSummary {
  counts: Record<Exclude<MessageState, 'corrupt'>, number>;
  oldestAgeMs: number | null;
  /** Neither failed nor corrupt; `lastReply` redacted. */
  rows: QueueRow[];
}

export interface ConsoleOps {
  accounts(): Promise<AccountView[]>;
  queue(): Promise<QueueSummary>;
  /** Each returns the one-line result the CLI would print; throws with the CLI's error text. */
  retry(id: string): Promise<string>;
  remove(id: string): Promise<string>;
  /** Present once the spool has operator holds. */
  hold?: (id: string) => Promise<string>;
  release?: (id: string) => Promise<string>;
  /** Stores the grant `authorize` obtained through the daemon's operations; answers once the token service uses it. */
  storeGrant(account: string, rec: TokenRecord): Promise<void>;
}

/** What the console reads from the daemon: its operations, its config, and why each account's mail waits. */
export interface ConsoleSources {
  ops: () => Pick<Operations, 'listQueue' | 'tokenStatus' | 'retry' | 'delete' | 'hold' | 'release' | 'importToken'>;
  config: () => Config;
  /** account -> why its mail waits (the worker's held map). */
  held: () => Record<string, string>;
}

export function consoleOps(src: ConsoleSources): ConsoleOps {
  // Refusals read as the CLI prints them (`queue retry: …`).
  const answer = (verb: string, r: CommandResult): string => {
    if (!r.ok) throw new Error(`queue ${verb}: ${r.message}`);
    return r.message;
  };
  return {
    async accounts() {
      const rows = await src.ops().listQueue();
      const held = src.held();
      const status = new Map(
        src
          .ops()
          .tokenStatus()
          .map((s) => [s.account, s]),
      );
      return src.config().accounts.flatMap((config) => {
        const st = status.get(config.name);
        if (!st) return [];
        return [
          {
            config,
            status: st,
            held: held[config.name] ?? null,
            queued: rows.filter((r) => r.account === config.name && r.state !== 'failed' && r.state !== 'corrupt')
              .length,
          },
        ];
      });
    },
    async queue() {
      const all = await src.ops().listQueue();
      const counts: QueueSummary['counts'] = { queued: 0, deferred: 0, 'in-flight': 0, held: 0, failed: 0 };
      let oldest: number | null = null;
      const rows: QueueRow[] = [];
      for (const r of all) {
        if (r.state === 'corrupt') continue; // shown by `queue list`; nothing the console can act on
        counts[r.state]++;
        if (r.state === 'failed') continue;
        oldest = oldest === null ? r.ageMs : Math.max(oldest, r.ageMs ?? 0);
        rows.push({ ...r, lastReply: r.lastReply ? redactString(r.lastReply) : null });
      }
      return { counts, oldestAgeMs: oldest, rows };
    },
    retry: async (id) => answer('retry', await src.ops().retry(id)),
    remove: async (id) => answer('delete', await src.ops().delete(id)),
    hold: async (id) => answer('hold', await src.ops().hold(id)),
    release: async (id) => answer('release', await src.ops().release(id)),
    async storeGrant(account, rec) {
      if (!rec.refreshToken) throw new Error('the token endpoint returned no refresh token');
      const r = await src
        .ops()
        .importToken(account, rec.refreshToken, rec.authorizedEmail ? { authorizedEmail: rec.authorizedEmail } : {});
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
