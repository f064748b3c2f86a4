// Reading a scrypt PHC string ($scrypt$ln=15,r=8,p=1$<salt>$<hash>): the one parser behind the
// config's check of users' passwordHash and the listener's password check
// (src/listener/passwords.ts), so a hash the config accepts is one a login can match.

export interface Phc {
  ln: number;
  r: number;
  p: number;
  salt: Buffer;
  hash: Buffer;
}

export function parsePhc(phc: string): Phc | null {
  const m = /^\$scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})\$([A-Za-z0-9+/]+={0,2})\$([A-Za-z0-9+/]+={0,2})$/.exec(
    phc.trim(),
  );
  if (!m) return null;
  const [ln, r, p] = [Number(m[1]), Number(m[2]), Number(m[3])];
  // Bounds keep a hand-edited hash from asking for gigabytes of memory per login.
  if (ln < 10 || ln > 20 || r < 1 || r > 32 || p < 1 || p > 16 || 128 * 2 ** ln * r > 256 * 1024 * 1024) return null;
  const salt = Buffer.from(m[4], 'base64');
  const hash = Buffer.from(m[5], 'base64');
  if (salt.length < 8 || hash.length < 16) return null;
  return { ln, r, p, salt, hash };
}

export function isValidPasswordHash(phc: string): boolean {
  return parsePhc(phc) !== null;
}
