// oauth.clientFile: the client JSON Google Cloud console offers for download
// ({"installed": {...}} for a Desktop app, {"web": {...}} for a Web application). It is read
// when the config is loaded (also on SIGHUP) and fills clientId, clientSecret, tokenUrl and
// authUrl, so the operator does not copy the secret out of it by hand.
import { readFileSync } from 'node:fs';

export interface GoogleClient {
  clientId: string;
  clientSecret: string;
  tokenUrl?: string;
  authUrl?: string;
}

/** Reads and checks the file; throws an Error whose message says what is wrong (never the secret). */
export function readGoogleClientFile(file: string): GoogleClient {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new Error(
      `${file} is not JSON (expected the client JSON downloaded from Google Cloud console, APIs & Services > Credentials)`,
    );
  }
  const top = json && typeof json === 'object' ? (json as Record<string, unknown>) : {};
  const c = (top.installed ?? top.web) as Record<string, unknown> | undefined;
  if (!c || typeof c !== 'object')
    throw new Error(
      `${file} has no "installed" or "web" client (a service-account key goes in oauth.keyFile with type: service-account)`,
    );
  const str = (k: string) => (typeof c[k] === 'string' && c[k] !== '' ? (c[k] as string) : undefined);
  const clientId = str('client_id');
  const clientSecret = str('client_secret');
  if (!clientId || !clientSecret) throw new Error(`${file} lacks client_id or client_secret`);
  return { clientId, clientSecret, tokenUrl: str('token_uri'), authUrl: str('auth_uri') };
}
