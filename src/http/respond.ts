// One way the HTTP endpoint answers (health, metrics and console pages alike): never cached,
// no content sniffing, no body for HEAD.
import type http from 'node:http';

export const TEXT = 'text/plain; charset=utf-8';
export const HTML = 'text/html; charset=utf-8';

export function send(
  res: http.ServerResponse,
  req: http.IncomingMessage,
  status: number,
  body: string,
  type: string = TEXT,
): void {
  res.statusCode = status;
  res.setHeader('Content-Type', type);
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('X-Content-Type-Options', 'nosniff');
  res.end(req.method === 'HEAD' ? undefined : body);
}
