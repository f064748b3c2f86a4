// The large-message path's view of a MIME message: parsed by mailparser (Nodemailer's parser,
// no hand-written MIME parsing here) into the JSON of a Graph message plus its attachments.
// Graph rebuilds the MIME itself, so only what the message resource can carry survives:
// Subject, From (when it is not the mailbox), To, Cc, Bcc (and the envelope-only recipients),
// Reply-To, Message-ID (internetMessageId), Importance/X-Priority, X- headers
// (internetMessageHeaders), the HTML or else the text body, and each attachment's bytes, name,
// content type, inline flag and Content-ID. Everything else (Date, Received, other headers,
// the MIME structure and encodings) is Graph's.
// mailparser is loaded on first use: it costs about 10 MB of RSS, and only large messages of
// accounts with upstream.largeMessages ever need it.
import type { AddressObject } from 'mailparser';
import type { Readable } from 'node:stream';

export interface DraftAttachment {
  name: string;
  contentType: string;
  isInline: boolean;
  contentId?: string;
  bytes: Buffer;
}

export interface ParsedDraft {
  /** The message resource for POST /users/{mailbox}/messages (no attachments). */
  json: Record<string, unknown>;
  attachments: DraftAttachment[];
}

type Recipient = { emailAddress: { address: string; name?: string } };

function recipients(a: AddressObject | AddressObject[] | undefined): Recipient[] {
  const list = a === undefined ? [] : Array.isArray(a) ? a : [a];
  const out: Recipient[] = [];
  const walk = (vs: AddressObject['value']) => {
    for (const v of vs) {
      if (v.group) walk(v.group);
      else if (v.address) out.push({ emailAddress: { address: v.address, ...(v.name ? { name: v.name } : {}) } });
    }
  };
  for (const o of list) walk(o.value);
  return out;
}

export async function parseDraft(
  source: Readable,
  opts: { mailbox: string; extraBcc: readonly string[] },
): Promise<ParsedDraft> {
  const { simpleParser } = await import('mailparser');
  const p = await simpleParser(source, {
    skipHtmlToText: true,
    skipTextToHtml: true,
    skipTextLinks: true,
    skipImageLinks: true,
    keepCidLinks: true,
  });
  const bcc = [...recipients(p.bcc), ...opts.extraBcc.map((address) => ({ emailAddress: { address } }))];
  const from = recipients(p.from)[0];
  const headers: { name: string; value: string }[] = [];
  for (const h of p.headerLines)
    if (/^x-/i.test(h.key))
      headers.push({
        name: h.line.slice(0, h.line.indexOf(':')),
        value: h.line
          .slice(h.line.indexOf(':') + 1)
          .replace(/\r?\n[ \t]+/g, ' ')
          .trim(),
      });
  const json: Record<string, unknown> = {
    subject: p.subject ?? '',
    body:
      typeof p.html === 'string'
        ? { contentType: 'HTML', content: p.html }
        : { contentType: 'Text', content: p.text ?? '' },
    toRecipients: recipients(p.to),
    ccRecipients: recipients(p.cc),
    bccRecipients: bcc,
    ...(p.replyTo ? { replyTo: recipients(p.replyTo) } : {}),
    ...(from && from.emailAddress.address.toLowerCase() !== opts.mailbox.toLowerCase() ? { from } : {}),
    ...(p.messageId ? { internetMessageId: p.messageId } : {}),
    ...(priority(p.headers.get('priority')) ? { importance: priority(p.headers.get('priority')) } : {}),
    ...(headers.length ? { internetMessageHeaders: headers } : {}),
  };
  const attachments = p.attachments.map((a, i) => ({
    name: a.filename ?? `attachment-${i + 1}`,
    contentType: a.contentType,
    isInline: a.contentDisposition === 'inline' && !!a.cid,
    ...(a.cid ? { contentId: a.cid } : {}),
    bytes: a.content,
  }));
  return { json, attachments };
}

/** mailparser's header value for X-Priority / Importance ("high" | "normal" | "low"); Graph's importance. */
function priority(v: unknown): 'high' | 'low' | undefined {
  return v === 'high' || v === 'low' ? v : undefined;
}
