// "Authorize" from the browser: the same flow as `xoauth2-bridge authorize --manual`
// (src/oauth/authorize.ts: code + PKCE S256 + state), driven by two requests instead of a
// terminal. The first starts it and shows the consent URL; the second passes the URL the
// user's browser ended on. Nothing listens on the redirect port (listen: false): the
// browser is usually on another machine, where 127.0.0.1 is not the bridge.
import { PassThrough } from 'node:stream';
import type { Config } from '../../config/schema.js';
import type { Logger } from '../../log/logger.js';
import { authorize, parseRedirect } from '../../oauth/authorize.js';
import type { TokenRecord } from '../../oauth/store.js';
import { redactString } from '../../log/redact.js';
import { collect } from './ops.js';

const ATTEMPT_TTL_MS = 15 * 60e3;
const EXCHANGE_WAIT_MS = 60e3;

export type AttemptResult = { ok: true; email: string | null } | { ok: false; error: string };

interface Attempt {
  url: string;
  input: PassThrough;
  result: Promise<AttemptResult>;
  settled?: AttemptResult;
}

export interface ReauthOptions {
  config: () => Config;
  log: Logger;
  env?: NodeJS.ProcessEnv;
  /** Hands the grant to the daemon's token service (the owner of the token store), which answers once it is in use. */
  storeGrant: (account: string, rec: TokenRecord) => Promise<void>;
}

export class ConsoleAuthorizations {
  private readonly attempts = new Map<string, Attempt>();

  constructor(private readonly opts: ReauthOptions) {}

  /** Starts a fresh attempt for `account` (an older one is cancelled); resolves the consent URL. */
  async start(account: string): Promise<string> {
    this.cancel(account);
    const input = new PassThrough();
    const out = collect();
    let gotUrl!: (u: string) => void;
    const urlP = new Promise<string>((r) => (gotUrl = r));
    const flow = authorize({
      config: this.opts.config(),
      account,
      manual: true,
      listen: false,
      input,
      output: out.stream,
      openUrl: gotUrl,
      env: this.opts.env,
      timeoutMs: ATTEMPT_TTL_MS,
      save: (rec: TokenRecord) => this.opts.storeGrant(account, rec),
    });
    const result: Promise<AttemptResult> = flow.then(
      ({ email }) => {
        this.opts.log.info('account authorized from the web console', { account });
        return { ok: true as const, email };
      },
      (e: unknown) => ({ ok: false as const, error: redactString((e as Error).message) }),
    );
    const attempt: Attempt = { url: '', input, result };
    void result.then((r) => {
      attempt.settled = r;
      if (!r.ok) this.opts.log.warn('web console authorization failed', { account, error: r.error });
    });
    const first = await Promise.race([urlP, result]);
    if (typeof first !== 'string') {
      if (first.ok) throw new Error('authorization finished before it started');
      throw new Error(first.error);
    }
    attempt.url = first;
    this.attempts.set(account, attempt);
    return first;
  }

  current(account: string): { url: string; settled?: AttemptResult } | undefined {
    const a = this.attempts.get(account);
    return a ? { url: a.url, settled: a.settled } : undefined;
  }

  /** The pasted address: completes the exchange, or says what is wrong with it. */
  async complete(account: string, pasted: string): Promise<AttemptResult> {
    const a = this.attempts.get(account);
    if (!a)
      return {
        ok: false,
        error: 'No authorization is in progress for this account (it expired or finished). Start again.',
      };
    if (!a.settled) {
      if (!parseRedirect(pasted))
        return {
          ok: false,
          error:
            'That does not look like the redirect address: it should contain code= and state=. Paste the whole address from the address bar.',
        };
      a.input.write(pasted.trim().replace(/[\r\n]+/g, '') + '\n');
    }
    let timer: NodeJS.Timeout | undefined;
    const r = await Promise.race([
      a.result,
      new Promise<AttemptResult>(
        (res) =>
          (timer = setTimeout(
            () => res({ ok: false, error: 'the token endpoint did not answer in time; try again' }),
            EXCHANGE_WAIT_MS,
          )),
      ),
    ]);
    clearTimeout(timer);
    if (this.attempts.get(account) === a) this.attempts.delete(account);
    return r;
  }

  cancel(account: string): void {
    const a = this.attempts.get(account);
    if (!a) return;
    this.attempts.delete(account);
    a.input.end(); // authorize() gives up ("no redirect URL was pasted") and closes its listener
  }

  close(): void {
    for (const account of [...this.attempts.keys()]) this.cancel(account);
  }
}
