// "Authorize" from the browser, two ways, both driving src/oauth/authorize.ts (so the identity
// and scope checks are the CLI's). The paste flow is `authorize --manual` (code + PKCE S256 +
// state) in two requests: the first shows the consent URL, the second passes the URL the
// user's browser ended on; nothing listens on the redirect port (listen: false), since the
// browser is usually on another machine. The device flow (Microsoft only) is `authorize
// --device`: the page shows the user code and the verification URL and refreshes until the
// daemon's polling ends. One attempt per account at a time; the device code itself stays
// inside authorize() (only the user code and URL come out).
import { PassThrough } from 'node:stream';
import type { Config } from '../../config/schema.js';
import type { Logger } from '../../log/logger.js';
import { authorize, parseRedirect } from '../../oauth/authorize.js';
import type { TokenRecord } from '../../oauth/store.js';
import { redactString } from '../../log/redact.js';
import { collect } from './ops.js';

const ATTEMPT_TTL_MS = 15 * 60e3;
const EXCHANGE_WAIT_MS = 60e3;

export type AttemptResult = { ok: true; email: string } | { ok: false; error: string };

/** What the pages may show of an attempt (never the device code). */
export interface AttemptView {
  kind: 'paste' | 'device';
  /** paste: the consent URL; device: the verification URL. */
  url: string;
  /** device: the code the user enters at `url`, and when it stops working. */
  userCode?: string;
  expiresAt?: number;
  settled?: AttemptResult;
}

/** A start whose attempt was cancelled (or replaced by a newer start) before its URL was known. */
export class AttemptCancelled extends Error {
  constructor() {
    super('the authorization was cancelled');
    this.name = 'AttemptCancelled';
  }
}

interface Attempt extends AttemptView {
  cancelled?: boolean;
  input: PassThrough;
  abort: AbortController;
  /** Resolves once the URL (and user code) are known; rejects when the flow ended before that. */
  ready: Promise<AttemptView>;
  result: Promise<AttemptResult>;
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

  /** Starts a fresh paste attempt for `account` (an older attempt is cancelled); resolves the consent URL. */
  async start(account: string): Promise<string> {
    return (await this.begin(account, 'paste')).url;
  }

  /**
   * Starts a device sign-in for `account`, or joins the one in progress: two starts (two tabs,
   * a double click) give one attempt and one code. Resolves once the code is issued.
   */
  startDevice(account: string): Promise<AttemptView> {
    const cur = this.attempts.get(account);
    if (cur?.kind === 'device' && !cur.settled) return cur.ready;
    return this.begin(account, 'device');
  }

  private begin(account: string, kind: 'paste' | 'device'): Promise<AttemptView> {
    this.cancel(account);
    const input = new PassThrough();
    const abort = new AbortController();
    let issued!: (v: { url: string; userCode?: string; expiresAt?: number }) => void;
    const issuedP = new Promise<{ url: string; userCode?: string; expiresAt?: number }>((r) => (issued = r));
    const device = kind === 'device';
    // authorize() bounds the paste flow itself (timeoutMs) and the device flow by the code's
    // lifetime; this also bounds a device flow whose server announced an absurd lifetime.
    const cap = device ? setTimeout(() => abort.abort(), ATTEMPT_TTL_MS + EXCHANGE_WAIT_MS) : undefined;
    const flow = authorize({
      config: this.opts.config(),
      account,
      manual: true,
      listen: false,
      device,
      signal: abort.signal,
      onDeviceCode: (c) =>
        issued({ url: c.verificationUri, userCode: c.userCode, expiresAt: Date.now() + c.expiresInSec * 1000 }),
      input,
      output: collect().stream,
      openUrl: (url) => issued({ url }),
      env: this.opts.env,
      timeoutMs: ATTEMPT_TTL_MS,
      save: (rec: TokenRecord) => this.opts.storeGrant(account, rec),
    });
    const result: Promise<AttemptResult> = flow.then(
      ({ email }) => {
        this.opts.log.info('account authorized from the web console', { account, flow: kind });
        return { ok: true as const, email };
      },
      (e: unknown) => ({ ok: false as const, error: redactString((e as Error).message) }),
    );
    const attempt: Attempt = {
      kind,
      url: '',
      input,
      abort,
      result,
      ready: Promise.race([issuedP, result]).then((first) => {
        if ('url' in first) {
          Object.assign(attempt, first);
          return this.view(attempt);
        }
        if (this.attempts.get(account) === attempt) this.attempts.delete(account);
        if (attempt.cancelled) throw new AttemptCancelled();
        throw new Error(first.ok ? 'authorization finished before it started' : first.error);
      }),
    };
    // Registered before anything is awaited, so a second start sees (and joins or cancels) it.
    this.attempts.set(account, attempt);
    void result.then((r) => {
      clearTimeout(cap);
      attempt.settled = r;
      if (!r.ok) this.opts.log.warn('web console authorization failed', { account, flow: kind, error: r.error });
    });
    return attempt.ready;
  }

  private view(a: Attempt): AttemptView {
    return { kind: a.kind, url: a.url, userCode: a.userCode, expiresAt: a.expiresAt, settled: a.settled };
  }

  /** The account's attempt once its URL is known. */
  current(account: string): AttemptView | undefined {
    const a = this.attempts.get(account);
    return a && a.url ? this.view(a) : undefined;
  }

  /** The pasted address: completes the exchange, or says what is wrong with it. */
  async complete(account: string, pasted: string): Promise<AttemptResult> {
    const a = this.attempts.get(account);
    if (!a || a.kind !== 'paste')
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

  /** Forgets a finished attempt once its result was shown. */
  finish(account: string): void {
    if (this.attempts.get(account)?.settled) this.attempts.delete(account);
  }

  /** Ends the account's attempt, if any: the paste flow gives up, the device flow stops polling. True when there was one. */
  cancel(account: string): boolean {
    const a = this.attempts.get(account);
    if (!a) return false;
    this.attempts.delete(account);
    a.cancelled = true;
    a.input.end(); // paste: authorize() gives up ("no redirect URL was pasted")
    a.abort.abort(); // device: the wait between polls ends, no further poll
    return !a.settled;
  }

  close(): void {
    for (const account of [...this.attempts.keys()]) this.cancel(account);
  }
}
