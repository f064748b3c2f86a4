// Token store on disk: mode, atomic writes with backup, encryption at rest, locking.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { TokenService } from '../../src/oauth/service.js';
import { TokenStore, resolveStoreKey } from '../../src/oauth/store.js';
import { tokenImport, tokenStatus } from '../../src/cli/token.js';
import { nullLogger } from '../../src/log/logger.js';
import { oauthWorld, collect } from '../helpers/oauth.js';

/** The daemon keeps running on an unusable store: the account is held, its status carries the store's message. */
async function storeRefusal(svc: TokenService): Promise<string> {
  await svc.init();
  const st = svc.status()[0];
  svc.stop();
  assert.equal(st.state, 'error');
  await assert.rejects(svc.getAccessToken(st.account), /token store unusable/);
  return st.lastError ?? '';
}

test('store file is 0600, written atomically with the previous version kept as .bak', async () => {
  const w = await oauthWorld();
  try {
    const svc = new TokenService({ config: w.config(), log: nullLogger });
    await svc.init();
    await svc.importRefreshToken('office', w.refreshToken);
    const file = join(w.stateDir, 'tokens.json');
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const first = readFileSync(file, 'utf8');
    await svc.getAccessToken('office');
    assert.equal(readFileSync(join(w.stateDir, 'tokens.json.bak'), 'utf8'), first);
    assert.equal(statSync(join(w.stateDir, 'tokens.json.bak')).mode & 0o777, 0o600);
    const left = readdirSync(w.stateDir).filter((f) => f.includes('.tmp-') || f.endsWith('.lock'));
    assert.deepEqual(left, [], 'no temp or lock files left behind');
    const rec = JSON.parse(readFileSync(file, 'utf8')).accounts.office;
    assert.equal(rec.refreshToken, w.refreshToken);
    assert.equal(rec.state, 'ok');
    assert.ok(Date.parse(rec.accessTokenExpiresAt) > Date.now());
  } finally {
    await w.close();
  }
});

test('a group/world-readable store is refused with the fix in the message', async () => {
  const w = await oauthWorld();
  try {
    const svc = new TokenService({ config: w.config(), log: nullLogger });
    await svc.init();
    await svc.importRefreshToken('office', w.refreshToken);
    const file = join(w.stateDir, 'tokens.json');
    chmodSync(file, 0o644);
    const before = readFileSync(file);
    const again = new TokenService({ config: w.config(), log: nullLogger });
    const refused = await storeRefusal(again);
    assert.ok(refused.includes(`chmod 600 ${file}`) && /mode 644/.test(refused), refused);
    const out = collect();
    // The account shows as not ok, with the store's message (the daemon keeps running on it).
    assert.equal(await tokenStatus(w.config(), { json: false }, out.stream), 1);
    assert.match(out.text(), /error .*group\/others/);
    assert.deepEqual(readFileSync(file), before);
  } finally {
    await w.close();
  }
});

test('AES-256-GCM at rest: round trip with hex, raw and base64 keys; wrong key is a clear error and loses nothing', async () => {
  const w = await oauthWorld();
  try {
    const key = randomBytes(32);
    const keyFile = join(w.dir, 'token-key');
    writeFileSync(keyFile, key.toString('hex') + '\n', { mode: 0o600 });
    const cfg = w.config({ tokens: { encryptionKeyFile: keyFile } });
    const svc = new TokenService({ config: cfg, log: nullLogger });
    await svc.init();
    await svc.importRefreshToken('office', w.refreshToken);
    const tok = await svc.getAccessToken('office');
    const file = join(w.stateDir, 'tokens.json');
    const sealed = readFileSync(file, 'utf8');
    assert.ok(!sealed.includes(w.refreshToken) && !sealed.includes(tok), 'no token in clear text');
    assert.equal(JSON.parse(sealed).encryption, 'aes-256-gcm');

    // Same key from systemd's credentials directory, as raw bytes and as base64 text.
    const creds = join(w.dir, 'creds');
    mkdirSync(creds);
    for (const content of [key, Buffer.from(key.toString('base64') + '\n')]) {
      writeFileSync(join(creds, 'token-key'), content, { mode: 0o600 });
      const viaCreds = new TokenService({ config: w.config(), log: nullLogger, env: { CREDENTIALS_DIRECTORY: creds } });
      await viaCreds.init();
      assert.equal(await viaCreds.getAccessToken('office'), tok, 'stored access token decrypted and reused');
      assert.equal(viaCreds.status()[0].refreshTokenIssuedAt !== null, true);
    }

    // Wrong key: init fails naming the key source; nothing is written, even by import.
    const wrongFile = join(w.dir, 'wrong-key');
    writeFileSync(wrongFile, randomBytes(32).toString('hex'), { mode: 0o600 });
    const wrongCfg = w.config({ tokens: { encryptionKeyFile: wrongFile } });
    const before = readFileSync(file);
    const wrong = new TokenService({ config: wrongCfg, log: nullLogger });
    const undecryptable = await storeRefusal(wrong);
    assert.ok(
      /cannot decrypt/.test(undecryptable) &&
        undecryptable.includes(`tokens.encryptionKeyFile (${wrongFile})`) &&
        /left untouched/.test(undecryptable),
      undecryptable,
    );
    const input = new PassThrough();
    input.end('rtsomethingelse0123456789\n');
    const out = collect();
    assert.equal(await tokenImport(wrongCfg, 'office', input, out.stream), 1);
    assert.match(out.text(), /cannot decrypt/);
    const st = collect();
    assert.equal(await tokenStatus(wrongCfg, { json: true }, st.stream), 1);
    assert.match((JSON.parse(st.text()) as { lastError: string }[])[0].lastError, /cannot decrypt/);
    assert.deepEqual(readFileSync(file), before, 'store untouched');

    // Encrypted store but no key configured: clear error too.
    assert.match(
      await storeRefusal(new TokenService({ config: w.config(), log: nullLogger, env: {} })),
      /encrypted but no key is configured/,
    );
    assert.deepEqual(readFileSync(file), before);

    // The right key still works afterwards.
    const right = new TokenService({ config: cfg, log: nullLogger });
    await right.init();
    assert.equal(await right.getAccessToken('office'), tok);
  } finally {
    await w.close();
  }
});

test('bad key material and an exposed key file are refused', async () => {
  const w = await oauthWorld();
  try {
    const short = join(w.dir, 'short-key');
    writeFileSync(short, 'abcd', { mode: 0o600 });
    assert.throws(() => resolveStoreKey(short, {}), /not 32 bytes/);
    const open = join(w.dir, 'open-key');
    writeFileSync(open, randomBytes(32).toString('hex'), { mode: 0o644 });
    chmodSync(open, 0o644);
    assert.throws(() => resolveStoreKey(open, {}), /chmod 600/);
    assert.equal(resolveStoreKey(null, {}), null);
  } finally {
    await w.close();
  }
});

test('a plaintext store is encrypted on the next write once a key is configured', async () => {
  const w = await oauthWorld();
  try {
    const plain = new TokenService({ config: w.config(), log: nullLogger });
    await plain.init();
    await plain.importRefreshToken('office', w.refreshToken);
    const keyFile = join(w.dir, 'k');
    writeFileSync(keyFile, randomBytes(32).toString('base64'), { mode: 0o600 });
    const enc = new TokenService({ config: w.config({ tokens: { encryptionKeyFile: keyFile } }), log: nullLogger });
    await enc.init();
    assert.equal(enc.state('office'), 'ok');
    await enc.getAccessToken('office');
    const text = readFileSync(join(w.stateDir, 'tokens.json'), 'utf8');
    assert.equal(JSON.parse(text).encryption, 'aes-256-gcm');
    assert.ok(!text.includes(w.refreshToken));
  } finally {
    await w.close();
  }
});

test("concurrent writers (daemon and CLI) never drop each other's changes", async () => {
  const w = await oauthWorld();
  try {
    // Two store objects stand in for two processes: they only share the lock file.
    const a = new TokenStore({ stateDir: w.stateDir, key: null });
    const b = new TokenStore({ stateDir: w.stateDir, key: null });
    await Promise.all(
      Array.from({ length: 20 }, (_, i) => [
        a.update((d) => {
          d.accounts[`a${i}`] = { state: 'ok', refreshToken: `ra${i}` };
        }),
        b.update((d) => {
          d.accounts[`b${i}`] = { state: 'ok', refreshToken: `rb${i}` };
        }),
      ]).flat(),
    );
    const data = await a.load();
    assert.equal(Object.keys(data.accounts).length, 40);
  } finally {
    await w.close();
  }
});
