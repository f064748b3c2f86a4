// A token store the daemon cannot use (group-readable, damaged) must not stop it: it starts,
// accepts and spools mail, holds every account with the store's message (state, /readyz,
// token status), and resumes on its own once the store is repaired.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { get } from 'node:http';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { startFakeWorld, bridgeConfig, writeBridgeConfig, type FakeWorld } from '../../src/fakes/world.js';
import { parseConfig } from '../../src/config/load.js';
import { TokenService } from '../../src/oauth/service.js';
import { nullLogger } from '../../src/log/logger.js';
import { startBridge, sendThroughBridge, message, CLI } from '../helpers/bridge.js';
import { waitFor } from '../helpers/wait.js';

const run = promisify(execFile);

function readyz(port: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    get({ host: '127.0.0.1', port, path: '/readyz' }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', reject);
  });
}

/** A store holding the world's grant, written twice so that tokens.json.bak exists too. */
async function provision(world: FakeWorld): Promise<string> {
  const configFile = await writeBridgeConfig(world, bridgeConfig(world));
  const config = parseConfig(await readFile(configFile, 'utf8'), configFile);
  const t = new TokenService({ config, log: nullLogger });
  await t.init();
  await t.importRefreshToken(world.account.name, world.account.refreshToken);
  await t.importRefreshToken(world.account.name, world.account.refreshToken);
  t.stop();
  return join(config.stateDir, 'tokens.json');
}

for (const c of [
  {
    name: 'a 0644 tokens.json',
    damage: (f: string) => chmod(f, 0o644),
    message: /accessible by group\/others.*chmod 600/,
    repair: (f: string) => chmod(f, 0o600),
  },
  {
    name: 'a damaged tokens.json',
    damage: (f: string) =>
      writeFile(f, '{"format":"xoauth2-bridge-tokens","accounts":{"office":{"refre', { mode: 0o600 }),
    message: /not valid JSON \(damaged\?\); the previous version is in .*tokens\.json\.bak/,
    repair: (f: string) => copyFile(`${f}.bak`, f),
  },
]) {
  test(`${c.name}: the daemon starts, spools and holds mail with the store's message, and resumes once it is repaired`, {
    timeout: 60_000,
  }, async () => {
    const world = await startFakeWorld();
    try {
      const file = await provision(world);
      await c.damage(file);
      const b = await startBridge(world, { queue: { retry: ['300ms'] } }, { importToken: false, http: true });
      try {
        assert.ok(
          b.logs.some(
            (l) => /"level":"error"/.test(l) && c.message.test(l) && l.includes('Mail is still accepted and spooled'),
          ),
          'one loud line with the store message',
        );
        const r = await sendThroughBridge({
          port: b.port,
          user: world.user.username,
          pass: world.user.password,
          from: 'scanner@example.com',
          to: ['held@example.org'],
          raw: message({ from: 'scanner@example.com', to: 'held@example.org' }),
        });
        assert.match(r.response, /^250 /);
        const id = r.response.split(' ').pop()!;
        await waitFor(
          () =>
            b.logs.some((l) => l.includes('"message":"held"') && l.includes(id) && l.includes('token store unusable')),
          10_000,
          'held with the store message',
        );
        assert.equal(b.bridge.tokens.state('office'), 'error');
        assert.match(b.bridge.tokens.status()[0].lastError ?? '', c.message);
        const ready = await readyz(b.bridge.httpAddress!.port);
        assert.equal(ready.status, 503);
        assert.match(ready.body, c.message);
        const status = await run(process.execPath, [...CLI, 'token', 'status', '-c', b.configFile]).catch(
          (e: { stdout: string; code: number }) => e,
        );
        assert.match(status.stdout, c.message);
        assert.equal(world.gmail.messages.length, 0);
        assert.equal((await b.bridge.spool.list()).length, 1, 'the message waits in the spool');

        await c.repair(file);
        await world.gmail.waitForMessages(1, 20_000);
        assert.deepEqual(world.gmail.messages[0].rcptTo, ['held@example.org']);
        assert.equal(b.bridge.tokens.state('office'), 'ok');
        assert.equal((await readyz(b.bridge.httpAddress!.port)).status, 200);
      } finally {
        await b.stop();
      }
    } finally {
      await world.close();
    }
  });
}
