// One HTTPS request to Microsoft Graph, reduced to status, JSON body and headers. Never throws:
// a network failure is an answer without a status, described without the request (it carries
// the token).
import https from 'node:https';

export interface HttpAnswer {
  /** undefined: no HTTP answer (see netError). */
  status: number | undefined;
  data: unknown;
  headers: Record<string, string | string[] | undefined>;
  netError?: string;
}

export function graphRequest(
  agent: https.Agent,
  token: string | null,
  method: string,
  url: URL,
  body?: Buffer,
  contentType?: string,
  extra: Record<string, string> = {},
): Promise<HttpAnswer> {
  const len = body?.length ?? 0;
  return new Promise((resolve) => {
    const req = https.request(
      url,
      {
        method,
        agent,
        headers: {
          ...(token ? { Authorization: `Bearer ${token}` } : {}),
          ...(contentType ? { 'Content-Type': contentType } : {}),
          'Content-Length': String(len),
          ...extra,
        },
        // Room for a 4 MB request on a slow line (at 100 KB/s), not forever.
        timeout: 60_000 + Math.ceil(len / 100),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (e) => resolve({ status: undefined, data: undefined, headers: {}, netError: e.message }));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let data: unknown = text;
          try {
            data = text ? JSON.parse(text) : undefined;
          } catch {
            /* not JSON: a proxy's page; keep the text */
          }
          resolve({ status: res.statusCode ?? 0, data, headers: res.headers });
        });
      },
    );
    // Only the error's own text: the request carries the token.
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', (e: NodeJS.ErrnoException) =>
      resolve({
        status: undefined,
        data: undefined,
        headers: {},
        netError: `${e.code ? e.code + ' ' : ''}${e.message.split('\n')[0]}`,
      }),
    );
    req.end(body);
  });
}
