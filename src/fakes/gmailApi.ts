// Fake Gmail API (users.messages.send, media upload) for tests and `demo`: real HTTPS (test
// CA), the bearer token and its scope checked against the fake token endpoint, Google's JSON
// error bodies, the raw message recorded, and scriptable failures (429, quota, 401, 403
// scope, 400, 500, a stall in the middle of the body).
import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomBytes } from 'node:crypto';
import { listenHttps, type HttpsListener, type TestPki } from './ca.js';
import { GMAIL_SCOPE, GMAIL_SEND_SCOPE, type FakeTokenEndpoint } from './tokenEndpoint.js';
import { readSubmitted, withoutBcc } from './mime.js';

export const SEND_PATH = '/upload/gmail/v1/users/me/messages/send';
const MAX_UPLOAD = 35 * 1024 * 1024;
/** Scopes that allow users.messages.send. */
const SEND_SCOPES = new Set([
  GMAIL_SCOPE,
  GMAIL_SEND_SCOPE,
  'https://www.googleapis.com/auth/gmail.compose',
  'https://www.googleapis.com/auth/gmail.modify',
]);

export type ApiFailureKind = 'rate429' | 'quota' | 'unauthorized' | 'scope403' | 'invalid400' | 'backend500' | 'stall';

export interface ApiMessage {
  /** The uploaded bytes, exactly. */
  raw: Buffer;
  /** What a recipient sees: the message without its Bcc field(s), as Gmail delivers it. */
  visible: Buffer;
  /** Whom Gmail delivers to: every To, Cc and Bcc address. */
  recipients: string[];
  bcc: string[];
  /** Whose token sent it. */
  user: string;
  id: string;
}

export interface ApiRequestRecord {
  at: number;
  status: number;
  reason?: string;
  bytes: number;
}

interface Stall {
  bytes: number;
  waiters: Array<() => void>;
}

const rnd = (n: number) => randomBytes(n).toString('hex');

export class FakeGmailApi {
  readonly url: string;
  readonly messages: ApiMessage[] = [];
  readonly requests: ApiRequestRecord[] = [];
  /** A stalled upload stops reading after this many body bytes (default: half the body). */
  stallAfterBytes?: number;
  private readonly failures: ApiFailureKind[] = [];
  private readonly waiters: Array<() => void> = [];
  private readonly stalls: Stall[] = [];
  private stalledBytes = 0;

  readonly port: number;

  private constructor(
    private readonly listener: HttpsListener,
    private readonly tokens: FakeTokenEndpoint,
  ) {
    this.port = listener.port;
    this.url = `https://localhost:${listener.port}`;
  }

  static async start(opts: { pki: TestPki; tokens: FakeTokenEndpoint }): Promise<FakeGmailApi> {
    const listener = await listenHttps(opts.pki);
    const fake = new FakeGmailApi(listener, opts.tokens);
    listener.server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      fake.handle(req, res).catch(() => {
        if (!res.headersSent) fake.error(res, 500, 'INTERNAL', 'Internal error encountered.', 'backendError');
      });
    });
    return fake;
  }

  failNext(count: number, kind: ApiFailureKind): void {
    for (let i = 0; i < count; i++) this.failures.push(kind);
  }

  async waitForMessages(n: number, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.messages.length < n) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`fake Gmail API: ${this.messages.length} of ${n} messages after ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Resolves once a stalled upload holds at least `bytes` body bytes (it never answers). */
  waitForStall(bytes: number, timeoutMs = 20_000): Promise<number> {
    if (this.stalledBytes >= bytes) return Promise.resolve(this.stalledBytes);
    return new Promise((resolve, reject) => {
      const t = setTimeout(
        () => reject(new Error(`fake Gmail API: no upload stalled after ${bytes} bytes within ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.stalls.push({
        bytes,
        waiters: [
          () => {
            clearTimeout(t);
            resolve(this.stalledBytes);
          },
        ],
      });
    });
  }

  close(): Promise<void> {
    return this.listener.close();
  }

  // ---- HTTP ----

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const u = new URL(req.url ?? '/', 'https://localhost');
    const rec: ApiRequestRecord = { at: Date.now(), status: 0, bytes: 0 };
    this.requests.push(rec);
    const fail = (status: number, gstatus: string, message: string, reason: string, details?: unknown[]) => {
      rec.status = status;
      rec.reason = reason;
      req.resume(); // drain what is left of the body, as a server does before answering
      this.error(res, status, gstatus, message, reason, details);
    };
    if (u.pathname !== SEND_PATH || req.method !== 'POST') return fail(404, 'NOT_FOUND', 'Not Found', 'notFound');
    if (u.searchParams.get('uploadType') !== 'media')
      return fail(400, 'INVALID_ARGUMENT', 'Invalid upload type; this fake takes uploadType=media', 'invalidArgument');
    const bearer = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '')?.[1];
    const info = bearer ? this.tokens.tokenInfo(bearer) : null;
    const scripted = this.failures.shift();
    if (!info || scripted === 'unauthorized')
      return fail(
        401,
        'UNAUTHENTICATED',
        'Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.',
        'authError',
      );
    if (!info.scope.split(' ').some((s) => SEND_SCOPES.has(s)) || scripted === 'scope403')
      return fail(
        403,
        'PERMISSION_DENIED',
        'Request had insufficient authentication scopes.',
        'insufficientPermissions',
        [
          {
            '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
            reason: 'ACCESS_TOKEN_SCOPE_INSUFFICIENT',
            domain: 'googleapis.com',
            metadata: { service: 'gmail.googleapis.com' },
          },
        ],
      );
    const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
    if (!type.startsWith('message/'))
      return fail(
        400,
        'INVALID_ARGUMENT',
        `Media type '${type}' is not supported. Valid media types: [message/*]`,
        'badContent',
      );
    if (Number(req.headers['content-length'] ?? 0) > MAX_UPLOAD)
      return fail(413, 'INVALID_ARGUMENT', 'Request Entity Too Large', 'uploadTooLarge');

    if (scripted === 'stall') return this.stall(req, rec);
    const chunks: Buffer[] = [];
    for await (const c of req as AsyncIterable<Buffer>) {
      rec.bytes += c.length;
      if (rec.bytes > MAX_UPLOAD) return fail(413, 'INVALID_ARGUMENT', 'Request Entity Too Large', 'uploadTooLarge');
      chunks.push(c);
    }
    if (scripted === 'rate429')
      return fail(429, 'RESOURCE_EXHAUSTED', 'Too many concurrent requests for user.', 'rateLimitExceeded');
    if (scripted === 'quota')
      return fail(
        429,
        'RESOURCE_EXHAUSTED',
        `User-rate limit exceeded.  Retry after ${new Date(Date.now() + 3 * 3600e3).toISOString()} (Mail sending)`,
        'rateLimitExceeded',
      );
    if (scripted === 'backend500') return fail(500, 'INTERNAL', 'Internal error encountered.', 'backendError');
    if (scripted === 'invalid400') return fail(400, 'INVALID_ARGUMENT', 'Invalid To header', 'invalidArgument');
    const raw = Buffer.concat(chunks);
    const { end, addresses: addrs } = readSubmitted(raw);
    const recipients = [...addrs('to'), ...addrs('cc'), ...addrs('bcc')];
    if (!recipients.length) return fail(400, 'INVALID_ARGUMENT', 'Recipient address required', 'invalidArgument');
    const id = rnd(8);
    this.messages.push({ raw, visible: withoutBcc(raw, end), recipients, bcc: addrs('bcc'), user: info.email, id });
    rec.status = 200;
    this.sendJson(res, 200, { id, threadId: id, labelIds: ['SENT'] });
    for (const w of this.waiters.splice(0)) w();
  }

  /** Reads part of the body, then stops reading and never answers (a hung upload). */
  private stall(req: IncomingMessage, rec: ApiRequestRecord): void {
    const limit = this.stallAfterBytes ?? Math.floor(Number(req.headers['content-length'] ?? 0) / 2);
    req.on('data', (c: Buffer) => {
      rec.bytes += c.length;
      this.stalledBytes = Math.max(this.stalledBytes, rec.bytes);
      if (rec.bytes >= limit) {
        req.pause();
        for (const s of this.stalls.filter((x) => this.stalledBytes >= x.bytes)) {
          this.stalls.splice(this.stalls.indexOf(s), 1);
          for (const w of s.waiters) w();
        }
      }
    });
  }

  private error(
    res: ServerResponse,
    code: number,
    status: string,
    message: string,
    reason: string,
    details?: unknown[],
  ): void {
    const domain = code === 429 || reason === 'dailyLimitExceeded' ? 'usageLimits' : 'global';
    this.sendJson(res, code, {
      error: { code, message, errors: [{ message, domain, reason }], status, ...(details ? { details } : {}) },
    });
  }

  private sendJson(res: ServerResponse, status: number, body: unknown): void {
    const text = JSON.stringify(body);
    res.writeHead(status, {
      'Content-Type': 'application/json; charset=UTF-8',
      'Content-Length': Buffer.byteLength(text),
    });
    res.end(text);
  }
}
