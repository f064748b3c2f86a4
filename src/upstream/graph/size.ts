// How large a message Microsoft Graph takes: a MIME sendMail request, or with
// upstream.largeMessages a draft plus upload sessions up to Exchange Online's limit.
import type { TransportSizeLimit } from '../../types.js';

/** Graph's request size limit; a MIME sendMail body is base64, so about 3 MB of message. */
export const GRAPH_MAX_REQUEST = 4 * 1024 * 1024;
/** Exchange Online's message size limit: the most upstream.largeMessages sends. */
export const GRAPH_MAX_MESSAGE = 150 * 1024 * 1024;
/**
 * The largest message (MIME bytes) Graph can send for this account: the whole 150 MB with
 * largeMessages, otherwise what fits GRAPH_MAX_REQUEST as base64. The bridge's Received: line
 * and a Bcc field count too; when they push a message over, send() bounces it naming the limit.
 */
export function graphMaxMessageBytes(acct: { upstream: { largeMessages?: boolean } }): number {
  return acct.upstream.largeMessages ? GRAPH_MAX_MESSAGE : Math.floor(GRAPH_MAX_REQUEST / 4) * 3;
}
/** Over the limit: 552 at DATA time. */
export function graphSizeLimit(account: { upstream: { largeMessages?: boolean } }): TransportSizeLimit {
  const bytes = graphMaxMessageBytes(account);
  return {
    bytes,
    reason: account.upstream.largeMessages
      ? `Exchange Online limit ${bytes} bytes`
      : `Microsoft Graph sendMail limit ${bytes} bytes; upstream.largeMessages raises it to ${GRAPH_MAX_MESSAGE / 1024 / 1024} MB`,
  };
}
