// DATA: the message itself. It streams through the filter (size limits, the From-header
// policy) into the spool, and the client gets 250 only once the spool has made it durable;
// a refusal comes at the end of DATA, as SMTP expects.
import type { SMTPServerDataStream, SMTPServerSession } from 'smtp-server';
import type { AccountConfig, ListenerConfig } from '../config/schema.js';
import type { Logger } from '../log/logger.js';
import { addressForLog } from '../log/redact.js';
import type { NewMessage } from '../spool/spool.js';
import type { Envelope, TransportSizeLimit } from '../types.js';
import { discardRest, headerValues, MessageFilter, SmtpReply } from './filter.js';
import { receivedHeader } from './received.js';
import { checkFromHeaders, decodeEncodedWords, loadWordDecoder, type SenderPolicy } from './senders.js';

export interface SpoolSink {
  receive(
    source: NodeJS.ReadableStream | AsyncIterable<Buffer>,
    meta: NewMessage,
    opts?: { prefix?: (id: string) => string },
  ): Promise<Envelope>;
}

/** What DATA needs of the listener stage. */
export interface DataContext {
  log: Logger;
  spool: SpoolSink;
  hostName: string;
  onQueued: (env: Envelope) => void;
  transportLimitOf: (account: AccountConfig) => TransportSizeLimit | null;
}

/** Who the current mail transaction relays for, decided at MAIL FROM. */
export interface Transaction {
  user: string | null;
  account: AccountConfig;
  policy: SenderPolicy;
  /** "user X" or "trusted account Y", for replies and logs. */
  owner: string;
}

export async function receiveData(
  ctx: DataContext,
  listener: ListenerConfig,
  tx: Transaction,
  msg: { stream: SMTPServerDataStream; session: SMTPServerSession; mailFrom: string },
  cb: (err?: Error | null, message?: string) => void,
): Promise<void> {
  const { stream, session, mailFrom } = msg;
  const ip = session.remoteAddress;
  let disconnected = false;
  const limit = tighter(ctx.transportLimitOf(tx.account), listener.maxMessageSize);
  // Both callbacks get this message's one header section: its From values are read once.
  let from: string[] | undefined;
  const fromOf = (header: string) => (from ??= headerValues(header, 'from'));
  const filter = new MessageFilter({
    maxBytes: limit?.bytes ?? listener.maxMessageSize,
    tooBigText: limit ? tooBigText(limit) : undefined,
    prepareHeaders: (header) => (fromOf(header).some((v) => v.includes('=?')) ? loadWordDecoder() : null),
    inspectHeaders: (header) => {
      const fromValues = fromOf(header);
      const bad = checkFromHeaders(fromValues, tx.policy, { nullSender: mailFrom === '' });
      if (!bad) return null;
      if (listener.fromHeader === 'rewrite') {
        // Keep the display name, put an address the sender owns, and let replies reach the original.
        const owned = mailFrom || tx.account.email;
        const edit = { from: rewrittenFrom(fromValues[0] ?? '', owned), replyTo: fromValues[0] };
        ctx.log.info('from header rewritten', {
          listener: listener.name,
          ip,
          user: tx.user,
          from: addressForLog(bad),
          to: owned,
        });
        return edit;
      }
      ctx.log.info('from header rejected', { listener: listener.name, ip, user: tx.user, from: addressForLog(bad) });
      return new SmtpReply(553, `5.7.1 Sender address rejected: From header address not owned by ${tx.owner}`);
    },
    // Stop feeding the spool, but read the client's DATA to its end so the reply
    // comes at the end of DATA as SMTP expects.
    onReject: () => {
      stream.unpipe(filter);
      discardRest(stream);
    },
  });
  // Errors surface through spool.receive (its iterator throws them), which may start
  // reading only after the filter already refused the message: no unhandled 'error'.
  filter.on('error', () => {});
  stream.on('error', () => {}); // the close handler below deals with it
  stream.once('close', () => {
    if (stream.readableEnded) return;
    disconnected = true;
    filter.destroy(new Error('client disconnected during DATA'));
  });
  stream.pipe(filter);
  const meta: NewMessage = {
    user: tx.user,
    account: tx.account.name,
    mailFrom,
    rcptTo: session.envelope.rcptTo.map((r) => r.address),
    clientIp: ip,
    bodyType: session.envelope.bodyType === '8bitmime' ? '8bitmime' : '7bit',
    smtputf8: !!session.envelope.smtpUtf8,
  };
  let env: Envelope;
  try {
    const trace = (id: string) =>
      receivedHeader({
        helo: session.hostNameAppearsAs,
        ip,
        host: ctx.hostName,
        listener: listener.name,
        esmtp: session.openingCommand === 'EHLO',
        tls: !!session.secure,
        authenticated: !!session.user,
        id,
        date: new Date(),
      });
    env = await ctx.spool.receive(filter, meta, { prefix: trace });
  } catch (err) {
    stream.unpipe(filter);
    discardRest(stream);
    if (filter.rejection) {
      if (filter.rejection.responseCode === 552)
        ctx.log.info('message too big', {
          listener: listener.name,
          ip,
          user: tx.user,
          limit: limit?.bytes ?? listener.maxMessageSize,
        });
      return cb(filter.rejection);
    }
    if (disconnected) {
      ctx.log.info('client disconnected during DATA, nothing queued', { listener: listener.name, ip, user: tx.user });
      return cb(new SmtpReply(451, '4.3.0 Connection lost'));
    }
    ctx.log.error('spool write failed, message refused with 452', { listener: listener.name, ip, user: tx.user, err });
    return cb(new SmtpReply(452, '4.3.1 Insufficient system storage'));
  }
  cb(null, `2.0.0 Ok: queued as ${env.id}`);
  ctx.log.info('received', {
    id: env.id,
    ip,
    user: tx.user,
    account: env.account,
    from: env.mailFrom,
    rcpts: env.rcptTo.length,
    size: env.size,
    listener: listener.name,
  });
  try {
    ctx.onQueued(env);
  } catch (err) {
    ctx.log.error('onQueued failed', { id: env.id, err });
  }
}

/** The account's transport limit when it is tighter than the listener's own. */
export function tighter(limit: TransportSizeLimit | null, listenerMax: number): TransportSizeLimit | null {
  return limit && limit.bytes < listenerMax ? limit : null;
}

export function tooBigText(limit: TransportSizeLimit): string {
  return `5.3.4 Message too big for this account's transport (${limit.reason})`;
}

/** `"Scanner 3rd floor" <owned@example.com>` from an original From value and the owned address. */
function rewrittenFrom(original: string, owned: string): string {
  const display = /^\s*(.*?)\s*<[^>]*>\s*$/.exec(original)?.[1]?.trim() ?? '';
  // Judged decoded: an encoded word can hide an address in the name.
  const safe = display && !/[@<>\r\n]/.test(decodeEncodedWords(display)) ? display : '';
  return safe ? `${safe} <${owned}>` : owned;
}
