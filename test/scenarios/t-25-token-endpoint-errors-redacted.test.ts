// What the token service lets out when the token endpoint misbehaves: error bodies that
// echo the request (refresh token, client secret) or carry a cut-off access token are
// redacted everywhere they go (log lines, the envelope's lastError in the spool, queue
// list/show, token status, /readyz), failures say what happened, and the redactor only
// keeps the live secrets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { get } from 'node:http';
import { Writable } from 'node:stream';
import { startFakeWorld } from '../../src/fakes/world.js';
import { TokenService } from '../../src/oauth/service.js';
import { createLogger } from '../../src/log/logger.js';
import { isQueueId } from '../../src/spool/ids.js';
import { isLiveSecret, redactString, secretRegistrySize } from '../../src/log/redact.js';
import { startBridge, sendThroughBridge, message, secretsOf, assertNoSecrets, CLI } from '../helpers/bridge.js';
import { oauthWorld } from '../helpers/oauth.js';
import { waitFor } from '../helpers/wait.js';

const run = promisify(execFile);
// stdout and stderr whatever the exit code (token status exits 1 while an account is not ok).
async function cli(...args: string[]): Promise<string> {
  const r = await run(process.execPath, [...CLI, ...args]).catch((e: { stdout?: string; stderr?: string }) => e);
  return `${r.stdout ?? ''}\n${r.stderr ?? ''}`;
}

/** Every file under `dir`, read again from the start when one vanished meanwhile (the daemon
 * renames its temp files into place): the scan then sees the file under its new name. */
async function filesUnder(dir: string): Promise<string> {
  for (;;) {
    let text = '';
    try {
      for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
        if (e.isFile()) text += await readFile(join(e.parentPath, e.name), 'utf8');
      }
      return text;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  }
}

function httpGet(port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    get({ host: '127.0.0.1', port, path }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve(body));
    }).on('error', reject);
  });
}

test('token endpoint bodies that echo secrets never reach the spool, queue list/show, token status, /readyz or logs', {
  timeout: 90_000,
}, async () => {
  const world = await startFakeWorld();
  // Access tokens without the ya29. shape: only the registered-secret check can catch them.
  world.tokens.accessTokenPrefix = 'at';
  const b = await startBridge(world, { queue: { retry: ['200ms'] } }, { http: true });
  const seenErrors: string[] = [];
  try {
    // 1. A 500 whose JSON error_description echoes the form (refresh_token=1%2F%2F…&client_secret=…);
    //    the library retries 5xx twice, so three answers make one failed refresh.
    world.tokens.failNext(3, 'echo500json');
    const r = await sendThroughBridge({
      port: b.port,
      user: world.user.username,
      pass: world.user.password,
      from: 'scanner@example.com',
      to: ['x@example.org'],
      raw: message({ from: 'scanner@example.com', to: 'x@example.org' }),
    });
    const id = r.response.split(' ').pop()!;
    const lastError = async () => (await b.bridge.spool.list()).find((e) => e.id === id)?.lastReply ?? '';
    await waitFor(async () => (await lastError()).includes('internal_failure'), 10_000, 'the echoed 500 in lastError');
    seenErrors.push(await lastError());
    assert.match(await lastError(), /refresh_token=\[redacted\]/);
    assert.match(await lastError(), /client_secret=\[redacted\]/);

    // 2. The same echo as text/plain, and 3. a 200 with a cut-off JSON body holding an access token.
    world.tokens.failNext(3, 'echo500');
    await assert.rejects(
      b.bridge.tokens.refresh('office'),
      /token endpoint answered HTTP 500 \(text\/plain, not an OAuth error\)/,
    );
    await waitFor(
      async () => (await lastError()).includes('HTTP 500 (text/plain'),
      10_000,
      'the text 500 in lastError',
    );
    seenErrors.push(await lastError());
    world.tokens.failNext(1, 'truncated');
    await assert.rejects(
      b.bridge.tokens.refresh('office'),
      /token endpoint sent invalid JSON in the response \(HTTP 200, application\/json[^)]*\)/,
    );
    await waitFor(async () => (await lastError()).includes('invalid JSON'), 10_000, 'invalid JSON in lastError');
    seenErrors.push(await lastError());

    const issued = world.tokens.requests.length;
    assert.ok(issued >= 7);
    // Every surface an operator (or an attacker with read access to it) sees.
    const surfaces = [
      ...seenErrors,
      await filesUnder(join(b.bridge.config.stateDir, 'spool')),
      await cli('queue', 'list', '--json', '-c', b.configFile),
      await cli('queue', 'list', '-c', b.configFile),
      await cli('queue', 'show', id, '-c', b.configFile),
      await cli('token', 'status', '--json', '-c', b.configFile),
      JSON.stringify(b.bridge.tokens.status()),
      await httpGet(b.bridge.httpAddress!.port, '/readyz'),
      b.logs.join('\n'),
    ].join('\n');
    // The access tokens the truncated bodies carried: every one the fake issued.
    const accessTokens = [...surfaces.matchAll(/\bat[A-Za-z0-9_-]{40,}/g)].map((m) => m[0]);
    assert.deepEqual(accessTokens, [], 'no access token from a cut-off body');
    assertNoSecrets(surfaces, [
      ...secretsOf(world),
      encodeURIComponent(world.account.refreshToken),
      encodeURIComponent(world.account.clientSecret),
    ]);

    // The endpoint recovers: the held-back message goes out.
    await b.bridge.tokens.refresh('office');
    await world.gmail.waitForMessages(1, 10_000);
  } finally {
    await b.stop();
    await world.close();
  }
});

test('token endpoint failures name what happened: invalid JSON, a timeout, an HTML page', async () => {
  const w = await oauthWorld();
  try {
    const svc = new TokenService({ config: w.config(), log: w.log, http: { timeoutMs: 400 } });
    await svc.init();
    await svc.importRefreshToken('office', w.refreshToken);
    w.fake.failNext(1, 'notJson');
    await assert.rejects(
      svc.refresh('office'),
      /token endpoint sent invalid JSON in the response \(HTTP 200, text\/html/,
    );
    // One retry on no response: two hanging answers.
    w.fake.failNext(2, 'hang');
    await assert.rejects(svc.refresh('office'), /token endpoint timed out after 0\.4 s/);
    assert.match(svc.status()[0].lastError ?? '', /timed out after 0\.4 s/);
    w.fake.down(true);
    await assert.rejects(svc.refresh('office'), /token endpoint unreachable: ECONNRESET/);
  } finally {
    await w.close();
  }
});

test('the redactor keeps only live secrets: after many refreshes old access tokens are dropped, current ones scrubbed', async () => {
  const w = await oauthWorld();
  w.fake.accessTokenPrefix = 'at';
  w.fake.rotateRefreshTokens = true;
  try {
    const svc = new TokenService({ config: w.config(), log: w.log });
    await svc.init();
    await svc.importRefreshToken('office', w.refreshToken);
    const first = await svc.getAccessToken('office');
    const size = secretRegistrySize();
    const seen = [first];
    for (let i = 0; i < 30; i++) {
      await svc.refresh('office');
      seen.push(await svc.getAccessToken('office'));
      assert.ok(
        secretRegistrySize() <= size + 1,
        `registry bounded after ${i + 1} refreshes (${secretRegistrySize()} vs ${size})`,
      );
    }
    assert.equal(new Set(seen).size, 31, 'every refresh gave a new token');
    const current = seen.at(-1)!;
    assert.equal(redactString(`token ${current} end`), 'token [redacted] end', 'the live token is scrubbed');
    assert.ok(isLiveSecret(current), 'the live token is one the redactor scans for');
    // Asked of the registry, not of redactString: about 1 random token in 100 reads, in some
    // base64 alignment, as a PLAIN credential blob and is scrubbed by that rule instead.
    assert.equal(isLiveSecret(first), false, 'a replaced token is no longer scanned for');
    // The current rotated refresh token (no well-known shape) is scrubbed, also URL-encoded.
    const rt = JSON.parse(await readFile(join(w.stateDir, 'tokens.json'), 'utf8').catch(() => '{}')) as {
      accounts?: Record<string, { refreshToken?: string }>;
    };
    const liveRt = rt.accounts?.office?.refreshToken;
    if (liveRt) assert.equal(redactString(`rt=${encodeURIComponent(liveRt)}`), 'rt=[redacted]');
    svc.stop();
  } finally {
    await w.close();
  }
});

test('a log line keeps a queue id that happens to read as a PLAIN blob; the blob itself elsewhere is scrubbed', async () => {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      lines.push(String(chunk));
      cb();
    },
  });
  const log = createLogger({ level: 'info', format: 'json', stream });
  // Real queue ids the generator made; each decodes, in some alignment, to `\0…\0…`.
  const ids = ['0MXCZDDAN00NABFG', '0MXCZMAUX00ADCYG', '0MXCZYYA1004YAAC'];
  for (const id of ids) assert.ok(isQueueId(id));
  const plain = Buffer.from('\0printer\0hunter22').toString('base64');
  for (const id of ids) log.info('delivered', { id, account: 'office', note: `client sent ${plain}` });
  await new Promise((r) => setImmediate(r));
  const out = lines.join('');
  for (const id of ids) assert.match(out, new RegExp(`"id":"${id}"`), 'the queue id is in the log as is');
  assert.doesNotMatch(out, new RegExp(plain.slice(0, 12)), 'a credential blob is scrubbed');
  assert.equal((out.match(/client sent \[redacted\]/g) ?? []).length, ids.length);
});
