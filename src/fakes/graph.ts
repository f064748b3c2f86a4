// Fake Microsoft Graph (the mail-sending part of v1.0) for tests and `demo`: real HTTPS (test
// CA), and the checks real Graph makes: the bearer token's audience (https://graph.microsoft.com)
// and its scp (delegated Mail.Send / Mail.Send.Shared) or roles (app-only Mail.Send), the
// application access policy, the mailbox (exists, REST-enabled, whom it may send as), the
// 4 MB request limit counted on the base64 body, 4 concurrent requests per mailbox, 429 with
// Retry-After. Error bodies are Graph's: {"error": {"code", "message", "innerError"}}.
// What was sent is recorded (MIME bytes, recipients, what a recipient sees without Bcc).
// Large messages: drafts (POST /messages, JSON, Mail.ReadWrite), small attachments, upload
// sessions (PUT chunks of at most 4 MB with contiguous, checked Content-Range), then /send.
// One file on purpose (over 400 lines): it is one fake service, read as a whole as the
// behaviour the tests rely on.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomBytes, randomUUID } from 'node:crypto';
import { listenHttps, type HttpsListener, type TestPki } from './ca.js';
import { GRAPH_RESOURCE, type FakeMicrosoftIdentity } from './microsoftIdentity.js';
import { readSubmitted, withoutBcc } from './mime.js';

/** Graph's request size limit for sendMail and other JSON/MIME posts (the base64 text counts). */
export const GRAPH_MAX_REQUEST = 4 * 1024 * 1024;
/** Exchange's per-mailbox concurrency limit for Graph requests. */
export const GRAPH_MAILBOX_CONCURRENCY = 4;
/** A file attachment added in one POST (larger ones need an upload session). */
export const GRAPH_MAX_INLINE_ATTACHMENT = 3 * 1024 * 1024;
/** One upload-session chunk. */
export const GRAPH_MAX_CHUNK = 4 * 1024 * 1024;
/** Exchange Online's message size limit. */
export const GRAPH_MAX_MESSAGE = 150 * 1024 * 1024;

export interface GraphAttachment {
  name: string;
  contentType?: string;
  isInline?: boolean;
  contentId?: string;
  bytes: Buffer;
  /** How it arrived: one POST, or an upload session. */
  via: 'post' | 'upload';
}

interface Draft {
  id: string;
  mailbox: string;
  json: Record<string, unknown>;
  attachments: GraphAttachment[];
}

interface UploadSession {
  id: string;
  draft: Draft;
  item: { name: string; size: number; contentType?: string; isInline?: boolean; contentId?: string };
  received: Buffer[];
  next: number;
}

export type GraphFailureKind =
  | 'throttle429'
  | 'unavailable503'
  | 'gateway504'
  | 'unauthorized'
  | 'accessDenied'
  | 'sendAsDenied'
  | 'notRestEnabled'
  | 'quota'
  | 'messageLimit';

export interface GraphMessage {
  /** The decoded MIME bytes, exactly. */
  raw: Buffer;
  /** What a recipient sees: the message without its Bcc field(s), as Exchange delivers it. */
  visible: Buffer;
  /** Whom Exchange delivers to: every To, Cc and Bcc address. */
  recipients: string[];
  bcc: string[];
  /** The mailbox in the URL (/users/{mailbox}/sendMail). */
  mailbox: string;
  /** Who the token speaks for: the user (delegated) or app:<client id>. */
  caller: string;
  id: string;
  /** Sent from a draft (large-message path): the draft's JSON and its attachments. */
  draft?: { json: Record<string, unknown>; attachments: GraphAttachment[] };
}

export interface GraphRequestRecord {
  at: number;
  method: string;
  path: string;
  mailbox?: string;
  status: number;
  code?: string;
  /** Request body bytes as sent (base64 text for sendMail). */
  bytes: number;
}

interface Mailbox {
  address: string;
  restEnabled: boolean;
  /** Addresses this mailbox may send as besides its own (Send As granted to it). */
  sendAs: Set<string>;
  /** Users (delegated callers) allowed to send from this mailbox (Send As / Send on Behalf on a shared mailbox). */
  delegates: Set<string>;
}

class GraphError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

const lower = (s: string) => s.toLowerCase();

export class FakeGraph {
  readonly url: string;
  readonly messages: GraphMessage[] = [];
  readonly requests: GraphRequestRecord[] = [];
  /** Highest number of requests in progress at once, per mailbox (lower-case). */
  readonly maxConcurrent = new Map<string, number>();
  /** Hold every sendMail this long before answering (to make concurrency visible). */
  delayMs = 0;
  /** Recipients Exchange cannot resolve (400 ErrorInvalidRecipients). */
  readonly invalidRecipients = new Set<string>();
  /** Drafts in the mailboxes (created, not yet sent or deleted). */
  readonly drafts = new Map<string, Draft>();
  /** Draft ids deleted through DELETE /messages/{id}. */
  readonly deletedDrafts: string[] = [];
  /** Upload-session PUTs are read but never answered (a hung upload; for crash tests). */
  stallUploads = false;
  /** POST /messages/{id}/send sends the draft but never answers (the answer lost; for crash tests). */
  loseSendAnswers = false;
  private readonly sessions = new Map<string, UploadSession>();
  private readonly uploadWaiters: Array<() => void> = [];
  private readonly mailboxes = new Map<string, Mailbox>();
  /** Application access policies (New-ApplicationAccessPolicy -AccessRight RestrictAccess): app id -> mailboxes it may reach. */
  private readonly policies = new Map<string, Set<string>>();
  private readonly failures: Array<{ kind: GraphFailureKind; retryAfterSec?: number }> = [];
  private readonly inFlight = new Map<string, number>();
  private readonly waiters: Array<() => void> = [];

  readonly port: number;

  private constructor(
    private readonly listener: HttpsListener,
    private readonly identity: FakeMicrosoftIdentity,
  ) {
    this.port = listener.port;
    this.url = `https://localhost:${listener.port}`;
  }

  static async start(opts: { pki: TestPki; identity: FakeMicrosoftIdentity }): Promise<FakeGraph> {
    const listener = await listenHttps(opts.pki);
    const fake = new FakeGraph(listener, opts.identity);
    listener.server.on('request', (req: IncomingMessage, res: ServerResponse) => void fake.handle(req, res));
    return fake;
  }

  /** A mailbox in the tenant. `sendAs`: other addresses it may send as; `delegates`: users who may send from it. */
  addMailbox(address: string, opts: { restEnabled?: boolean; sendAs?: string[]; delegates?: string[] } = {}): void {
    this.mailboxes.set(lower(address), {
      address,
      restEnabled: opts.restEnabled ?? true,
      sendAs: new Set((opts.sendAs ?? []).map(lower)),
      delegates: new Set((opts.delegates ?? []).map(lower)),
    });
  }

  /** New-ApplicationAccessPolicy -AppId APP -PolicyScopeGroupId GROUP -AccessRight RestrictAccess: the app reaches only these mailboxes. */
  restrictApp(appId: string, mailboxes: string[]): void {
    this.policies.set(appId, new Set(mailboxes.map(lower)));
  }

  failNext(count: number, kind: GraphFailureKind, retryAfterSec?: number): void {
    for (let i = 0; i < count; i++) this.failures.push({ kind, retryAfterSec });
  }

  /** A throttling storm: the next `count` requests get 429 with Retry-After `retryAfterSec`. */
  storm(count: number, retryAfterSec: number): void {
    this.failNext(count, 'throttle429', retryAfterSec);
  }

  sendMailRequests(): GraphRequestRecord[] {
    return this.requests.filter((r) => r.path.endsWith('/sendMail'));
  }

  async waitForMessages(n: number, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.messages.length < n) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`fake Graph: ${this.messages.length} of ${n} messages after ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  close(): Promise<void> {
    return this.listener.close();
  }

  // ---- HTTP ----

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const u = new URL(req.url ?? '/', 'https://localhost');
    const rec: GraphRequestRecord = { at: Date.now(), method: req.method ?? '', path: u.pathname, status: 0, bytes: 0 };
    this.requests.push(rec);
    // Upload sessions are pre-authorized URLs (no bearer, not counted against the mailbox).
    const up = /^\/upload\/([^/]+)$/.exec(u.pathname);
    const m = /^\/v1\.0\/users\/([^/]+)\/(.+)$/.exec(u.pathname);
    const mailboxKey = m ? lower(decodeURIComponent(m[1])) : undefined;
    rec.mailbox = mailboxKey;
    let counted = false;
    try {
      if (up) return await this.upload(req, res, rec, up[1]);
      if (!m)
        throw new GraphError(
          404,
          'UnknownError',
          `Resource not found for the segment '${u.pathname.split('/').pop()}'.`,
        );
      // Per-mailbox concurrency is checked before anything else, as Exchange's throttling is.
      const now = (this.inFlight.get(mailboxKey!) ?? 0) + 1;
      if (now > GRAPH_MAILBOX_CONCURRENCY)
        throw new GraphError(429, 'ApplicationThrottled', 'Application is over its MailboxConcurrency limit.', {
          'Retry-After': '1',
        });
      this.inFlight.set(mailboxKey!, now);
      counted = true;
      this.maxConcurrent.set(mailboxKey!, Math.max(this.maxConcurrent.get(mailboxKey!) ?? 0, now));
      const mailbox = decodeURIComponent(m[1]);
      const rest = m[2];
      const reply = (status: number, body?: unknown) => {
        rec.status = status;
        const text = body === undefined ? '' : JSON.stringify(body);
        res.writeHead(status, {
          'Content-Length': Buffer.byteLength(text),
          'request-id': randomUUID(),
          ...(text ? { 'Content-Type': 'application/json' } : {}),
        });
        res.end(text);
      };
      if (rest === 'sendMail' && req.method === 'POST') {
        await this.sendMail(req, rec, mailbox);
        reply(202);
        for (const w of this.waiters.splice(0)) w();
        return;
      }
      const caller = this.authorize(req, mailbox, 'Mail.ReadWrite');
      if (rest === 'messages' && req.method === 'POST') {
        const json = (await this.json(req, rec)) as Record<string, unknown>;
        const id = `AAMk${randomBytes(12).toString('base64url')}`;
        this.drafts.set(id, { id, mailbox, json, attachments: [] });
        return reply(201, { id, isDraft: true });
      }
      const dm = /^messages\/([^/]+)(?:\/(attachments|attachments\/createUploadSession|send))?$/.exec(rest);
      const draft = dm ? this.drafts.get(decodeURIComponent(dm[1])) : undefined;
      if (!dm || (!draft && !(req.method === 'GET' || req.method === 'DELETE' || dm[2] === 'send'))) throw notFound();
      if (!dm[2] && req.method === 'GET') {
        if (!draft) throw notFound();
        return reply(200, { id: draft.id, isDraft: true });
      }
      if (!dm[2] && req.method === 'DELETE') {
        if (!draft) throw notFound();
        this.drafts.delete(draft.id);
        this.deletedDrafts.push(draft.id);
        return reply(204);
      }
      if (dm[2] === 'attachments' && req.method === 'POST') {
        const a = (await this.json(req, rec)) as {
          name?: string;
          contentType?: string;
          contentBytes?: string;
          isInline?: boolean;
          contentId?: string;
        };
        const bytes = Buffer.from(a.contentBytes ?? '', 'base64');
        if (bytes.length > GRAPH_MAX_INLINE_ATTACHMENT)
          throw new GraphError(
            413,
            'ErrorRequestEntityTooLarge',
            'The attachment is larger than 3 MB: use an upload session.',
          );
        draft!.attachments.push({
          name: a.name ?? '',
          contentType: a.contentType,
          isInline: a.isInline,
          contentId: a.contentId,
          bytes,
          via: 'post',
        });
        return reply(201, { id: randomBytes(8).toString('hex') });
      }
      if (dm[2] === 'attachments/createUploadSession' && req.method === 'POST') {
        const body = (await this.json(req, rec)) as {
          AttachmentItem?: {
            attachmentType?: string;
            name?: string;
            size?: number;
            contentType?: string;
            isInline?: boolean;
            contentId?: string;
          };
        };
        const item = body.AttachmentItem;
        if (!item || item.attachmentType !== 'file' || !item.name || typeof item.size !== 'number' || item.size <= 0)
          throw new GraphError(400, 'ErrorInvalidRequest', 'AttachmentItem needs attachmentType file, name and size.');
        if (item.size > GRAPH_MAX_MESSAGE)
          throw new GraphError(413, 'ErrorRequestEntityTooLarge', 'The attachment exceeds the maximum message size.');
        const sid = randomBytes(12).toString('hex');
        this.sessions.set(sid, {
          id: sid,
          draft: draft!,
          item: {
            name: item.name,
            size: item.size,
            contentType: item.contentType,
            isInline: item.isInline,
            contentId: item.contentId,
          },
          received: [],
          next: 0,
        });
        return reply(201, {
          uploadUrl: `${this.url}/upload/${sid}`,
          expirationDateTime: new Date(Date.now() + 86400e3).toISOString(),
          nextExpectedRanges: ['0-'],
        });
      }
      if (dm[2] === 'send' && req.method === 'POST') {
        if (!draft) throw notFound();
        this.sendDraft(draft, caller);
        for (const w of this.waiters.splice(0)) w();
        if (this.loseSendAnswers) return void (rec.status = 202);
        return reply(202);
      }
      throw notFound();
    } catch (e) {
      if (!(e instanceof GraphError)) throw e;
      req.resume();
      rec.status = e.status;
      rec.code = e.code;
      this.error(res, e);
    } finally {
      if (counted) this.inFlight.set(mailboxKey!, (this.inFlight.get(mailboxKey!) ?? 1) - 1);
    }
  }

  /** Resolves once an upload-session PUT arrived (stalled or not). */
  waitForUpload(timeoutMs = 20_000): Promise<void> {
    if (this.requests.some((r) => r.method === 'PUT')) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`fake Graph: no upload within ${timeoutMs} ms`)), timeoutMs);
      this.uploadWaiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  private async json(req: IncomingMessage, rec: GraphRequestRecord): Promise<unknown> {
    const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
    if (type !== 'application/json')
      throw new GraphError(415, 'ErrorInvalidRequest', `Content-Type '${type}' is not supported: send JSON.`);
    const chunks: Buffer[] = [];
    for await (const c of req as AsyncIterable<Buffer>) {
      rec.bytes += c.length;
      if (rec.bytes > GRAPH_MAX_REQUEST) throw tooLarge();
      chunks.push(c);
    }
    try {
      return JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      throw new GraphError(400, 'BadRequest', 'Unable to read JSON request payload.');
    }
  }

  /** PUT to an upload session: Content-Range checked (contiguous, inside the declared size, at most 4 MB). */
  private async upload(req: IncomingMessage, res: ServerResponse, rec: GraphRequestRecord, sid: string): Promise<void> {
    const s = this.sessions.get(sid);
    if (req.method !== 'PUT' || !s) throw notFound();
    if (req.headers.authorization)
      throw new GraphError(
        401,
        'InvalidAuthenticationToken',
        'An upload URL is pre-authenticated: send it without an Authorization header.',
      );
    const range = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(req.headers['content-range'] ?? '');
    if (!range) throw new GraphError(400, 'InvalidContentRange', 'Content-Range header is missing or invalid.');
    const [from, to, total] = [Number(range[1]), Number(range[2]), Number(range[3])];
    const len = to - from + 1;
    if (total !== s.item.size || from !== s.next || to < from || to >= total)
      throw new GraphError(
        416,
        'InvalidRange',
        `The range ${from}-${to}/${total} is not the next expected ${s.next}- of ${s.item.size}.`,
      );
    if (len > GRAPH_MAX_CHUNK)
      throw new GraphError(413, 'ErrorRequestEntityTooLarge', `A chunk is at most ${GRAPH_MAX_CHUNK} bytes.`);
    if (Number(req.headers['content-length'] ?? -1) !== len)
      throw new GraphError(400, 'InvalidContentLength', 'Content-Length does not match Content-Range.');
    const chunks: Buffer[] = [];
    for await (const c of req as AsyncIterable<Buffer>) {
      rec.bytes += c.length;
      chunks.push(c);
    }
    for (const w of this.uploadWaiters.splice(0)) w();
    if (this.stallUploads) return; // never answered
    const body = Buffer.concat(chunks);
    if (body.length !== len)
      throw new GraphError(400, 'InvalidContentLength', 'The body is shorter than Content-Range says.');
    s.received.push(body);
    s.next = to + 1;
    rec.status = s.next === total ? 201 : 200;
    if (s.next === total) {
      this.sessions.delete(sid);
      s.draft.attachments.push({ ...s.item, bytes: Buffer.concat(s.received), via: 'upload' });
      res.writeHead(201, { 'Content-Length': '0' });
      return void res.end();
    }
    const text = JSON.stringify({
      expirationDateTime: new Date(Date.now() + 86400e3).toISOString(),
      nextExpectedRanges: [`${s.next}-`],
    });
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
    res.end(text);
  }

  /** POST /messages/{id}/send: the draft's recipients from its JSON, its size limit, then delivered. */
  /** Graph refuses a message with no recipient, or with one it cannot resolve. */
  private checkRecipients(recipients: string[]): void {
    if (!recipients.length)
      throw new GraphError(400, 'ErrorInvalidRecipients', 'At least one recipient is required, but none were found.');
    const bad = recipients.find((r) => this.invalidRecipients.has(lower(r)));
    if (bad)
      throw new GraphError(
        400,
        'ErrorInvalidRecipients',
        `At least one recipient is not valid., Recipient '${bad}' is not resolved. All recipients must be resolved before a message can be submitted.`,
      );
  }

  private sendDraft(d: Draft, caller: string): void {
    const list = (k: string) =>
      ((d.json[k] as Array<{ emailAddress?: { address?: string } }> | undefined) ?? [])
        .map((r) => r.emailAddress?.address ?? '')
        .filter(Boolean);
    const to = list('toRecipients');
    const cc = list('ccRecipients');
    const bcc = list('bccRecipients');
    const recipients = [...to, ...cc, ...bcc];
    this.checkRecipients(recipients);
    const size = d.attachments.reduce((n, a) => n + a.bytes.length, 0) + JSON.stringify(d.json).length;
    if (size > GRAPH_MAX_MESSAGE)
      throw new GraphError(413, 'ErrorMessageSizeExceeded', 'The message exceeds the maximum supported size.');
    this.drafts.delete(d.id);
    const { bccRecipients: _hidden, ...visibleJson } = d.json;
    const raw = Buffer.from(JSON.stringify(d.json));
    this.messages.push({
      raw,
      visible: Buffer.from(JSON.stringify(visibleJson)),
      recipients,
      bcc,
      mailbox: d.mailbox,
      caller,
      id: d.id,
      draft: { json: d.json, attachments: d.attachments },
    });
  }

  private async sendMail(req: IncomingMessage, rec: GraphRequestRecord, mailboxName: string): Promise<void> {
    const caller = this.authorize(req, mailboxName);
    const scripted = this.failures.shift();
    if (scripted) throw scriptedError(scripted.kind, mailboxName, scripted.retryAfterSec);
    const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
    if (type !== 'text/plain')
      throw new GraphError(
        415,
        'ErrorInvalidRequest',
        `Content-Type '${type}' is not supported for a MIME message: send the base64 MIME as text/plain.`,
      );
    if (Number(req.headers['content-length'] ?? 0) > GRAPH_MAX_REQUEST) throw tooLarge();
    const chunks: Buffer[] = [];
    for await (const c of req as AsyncIterable<Buffer>) {
      rec.bytes += c.length;
      if (rec.bytes > GRAPH_MAX_REQUEST) throw tooLarge();
      chunks.push(c);
    }
    const text = Buffer.concat(chunks).toString('latin1');
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text.replace(/\r?\n/g, '')) || !text.length)
      throw new GraphError(400, 'ErrorMimeContentInvalidBase64String', 'Invalid base64 string for MIME content.');
    const raw = Buffer.from(text, 'base64');
    const { end, addresses: addrs } = readSubmitted(raw);
    const recipients = [...addrs('to'), ...addrs('cc'), ...addrs('bcc')];
    this.checkRecipients(recipients);
    const box = this.mailboxes.get(lower(mailboxName))!;
    const from = addrs('from')[0];
    if (from && lower(from) !== lower(box.address) && !box.sendAs.has(lower(from)))
      throw new GraphError(
        403,
        'ErrorSendAsDenied',
        'The user account which was used to submit this request does not have the right to send mail on behalf of the specified sending account., Cannot submit message.',
      );
    if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
    this.messages.push({
      raw,
      visible: withoutBcc(raw, end),
      recipients,
      bcc: addrs('bcc'),
      mailbox: box.address,
      caller,
      id: randomBytes(8).toString('hex'),
    });
  }

  /** Bearer token, audience, scp/roles, access policy, mailbox: what Graph and Exchange check before the body. */
  private authorize(req: IncomingMessage, mailboxName: string, permission = 'Mail.Send'): string {
    const bearer = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '')?.[1];
    if (!bearer) throw new GraphError(401, 'InvalidAuthenticationToken', 'Access token is empty.');
    const claims = this.identity.tokenClaims(bearer);
    if (!claims)
      throw new GraphError(401, 'InvalidAuthenticationToken', 'Access token has expired or is not yet valid.');
    if (claims.aud !== GRAPH_RESOURCE && claims.aud !== `${GRAPH_RESOURCE}/`)
      throw new GraphError(401, 'InvalidAuthenticationToken', 'Access token validation failure. Invalid audience.');
    const scp = (claims.scp ?? '').split(' ');
    const box = this.mailboxes.get(lower(mailboxName));
    if (claims.upn) {
      const own = lower(claims.upn) === lower(mailboxName);
      const shared = !own && box?.delegates.has(lower(claims.upn));
      const needed =
        permission === 'Mail.Send'
          ? own
            ? ['Mail.Send']
            : ['Mail.Send.Shared', 'Mail.Send']
          : own
            ? [permission]
            : [`${permission}.Shared`, permission];
      if (!needed.some((p) => scp.includes(p)))
        throw new GraphError(403, 'ErrorAccessDenied', 'Access is denied. Check credentials and try again.');
      if (!own && !shared)
        throw new GraphError(403, 'ErrorAccessDenied', 'Access is denied. Check credentials and try again.');
    } else {
      if (!(claims.roles ?? []).includes(permission))
        throw new GraphError(403, 'ErrorAccessDenied', 'Access is denied. Check credentials and try again.');
      const policy = this.policies.get(claims.appid);
      if (policy && !policy.has(lower(mailboxName)))
        throw new GraphError(
          403,
          'ErrorAccessDenied',
          'Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly AccessPolicy settings.',
        );
    }
    if (!box) throw new GraphError(404, 'ErrorInvalidUser', `The requested user '${mailboxName}' is invalid.`);
    if (!box.restEnabled)
      throw new GraphError(
        404,
        'MailboxNotEnabledForRESTAPI',
        'The mailbox is either inactive, soft-deleted, or is hosted on-premise.',
      );
    return claims.upn ?? `app:${claims.appid}`;
  }

  private error(res: ServerResponse, e: GraphError): void {
    const text = JSON.stringify({
      error: {
        code: e.code,
        message: e.message,
        innerError: {
          date: new Date().toISOString().slice(0, 19),
          'request-id': randomUUID(),
          'client-request-id': randomUUID(),
        },
      },
    });
    res.writeHead(e.status, {
      'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(text),
      ...e.headers,
    });
    res.end(text);
  }
}

function notFound(): GraphError {
  return new GraphError(404, 'ErrorItemNotFound', 'The specified object was not found in the store.');
}

function tooLarge(): GraphError {
  return new GraphError(
    413,
    'ErrorRequestEntityTooLarge',
    `The request exceeds the maximum request size of ${GRAPH_MAX_REQUEST} bytes.`,
  );
}

function scriptedError(kind: GraphFailureKind, mailbox: string, retryAfterSec = 1): GraphError {
  switch (kind) {
    case 'throttle429':
      return new GraphError(429, 'ApplicationThrottled', 'Application is over its MailboxConcurrency limit.', {
        'Retry-After': String(retryAfterSec),
      });
    case 'unavailable503':
      return new GraphError(503, 'ServiceUnavailable', 'Service Unavailable', { 'Retry-After': String(retryAfterSec) });
    case 'gateway504':
      return new GraphError(504, 'UnknownError', 'Gateway Timeout', { 'Retry-After': String(retryAfterSec) });
    case 'unauthorized':
      return new GraphError(401, 'InvalidAuthenticationToken', 'Lifetime validation failed, the token is expired.');
    case 'accessDenied':
      return new GraphError(
        403,
        'ErrorAccessDenied',
        'Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly AccessPolicy settings.',
      );
    case 'sendAsDenied':
      return new GraphError(
        403,
        'ErrorSendAsDenied',
        'The user account which was used to submit this request does not have the right to send mail on behalf of the specified sending account., Cannot submit message.',
      );
    case 'notRestEnabled':
      return new GraphError(
        404,
        'MailboxNotEnabledForRESTAPI',
        'The mailbox is either inactive, soft-deleted, or is hosted on-premise.',
      );
    case 'quota':
      return new GraphError(403, 'ErrorQuotaExceeded', `The mailbox ${mailbox} has exceeded its quota.`);
    case 'messageLimit':
      return new GraphError(
        429,
        'ErrorExceededMessageLimit',
        'Cannot send message. Message submission limit exceeded for this mailbox.',
      );
  }
}
