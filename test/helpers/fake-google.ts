// A fake Google (token endpoint + Gmail, src/fakes/world.ts) as a long-running process, for
// .ci/run to point an installed form (.deb, image) at, configured the way an operator would:
// the shipped config with its placeholders filled in, nothing else changed.
//   node --import tsx test/helpers/fake-google.ts --fill TEMPLATE --out FILE [--down]
// Fills TEMPLATE (the conffile or the annotated example) and writes FILE (in place keeps its
// owner and mode); beside FILE: fake-google-ca.pem (the fake's CA, named relative to FILE),
// fake-google-refresh-token (for `token import`) and fake-google-password (the SMTP user's).
// Removes certFile/keyFile from the listeners: a TLS listener then makes its own certificate.
// Prints "ready" once listening and "received N from=... to=... subject=..." per message that
// reached the fake Gmail. --down: Gmail refuses connections until SIGUSR1 (SIGUSR2: down again).
import { readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { isMap, isSeq, parseDocument } from 'yaml';
import { startFakeWorld } from '../../src/fakes/world.js';

const { values } = parseArgs({
  options: { fill: { type: 'string' }, out: { type: 'string' }, down: { type: 'boolean', default: false } },
});
if (!values.fill || !values.out) throw new Error('usage: fake-google.ts --fill TEMPLATE --out FILE [--down]');

const world = await startFakeWorld();
const doc = parseDocument(await readFile(values.fill, 'utf8'));
const dir = dirname(values.out);
const ca = 'fake-google-ca.pem';
await writeFile(join(dir, ca), await readFile(world.caFile), { mode: 0o644 });
await writeFile(join(dir, 'fake-google-refresh-token'), world.account.refreshToken + '\n', { mode: 0o600 });
await writeFile(join(dir, 'fake-google-password'), world.user.password + '\n', { mode: 0o600 });

const set = (path: Array<string | number>, value: unknown): void => {
  if (!doc.hasIn(path.slice(0, -1))) throw new Error(`${values.fill} has no ${path.slice(0, -1).join('.')}`);
  doc.setIn(path, value);
};
const oauth = ['accounts', 0, 'oauth'];
set([...oauth, 'clientId'], world.account.clientId);
doc.deleteIn([...oauth, 'clientSecretFile']);
set([...oauth, 'clientSecret'], world.account.clientSecret);
set([...oauth, 'tokenUrl'], world.tokens.url);
set([...oauth, 'authUrl'], world.tokens.authUrl);
set([...oauth, 'caFile'], ca);
const upstream = ['accounts', 0, 'upstream'];
if (!doc.hasIn(upstream)) doc.setIn(upstream, doc.createNode({}));
set([...upstream, 'host'], 'localhost');
set([...upstream, 'port'], world.gmail.port);
set([...upstream, 'tls'], world.gmail.mode);
set([...upstream, 'caFile'], ca);
set(['users', 0, 'passwordHash'], world.user.passwordHash);
set(['users', 0, 'username'], world.user.username);
const listeners = doc.get('listeners');
if (!isSeq(listeners)) throw new Error(`${values.fill} has no listeners`);
for (const l of listeners.items) {
  if (!isMap(l)) continue;
  l.delete('certFile');
  l.delete('keyFile');
}
await writeFile(values.out, doc.toString());

if (values.down) world.gmail.down(true);
process.on('SIGUSR1', () => world.gmail.down(false));
process.on('SIGUSR2', () => world.gmail.down(true));
for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => void world.close().then(() => process.exit(0)));
console.log(`ready gmail=127.0.0.1:${world.gmail.port} account=${world.account.email}${values.down ? ' (down)' : ''}`);

for (let n = 1; ; n++) {
  await world.gmail.waitForMessages(n, 2 ** 31 - 1);
  const m = world.gmail.messages[n - 1];
  const subject = /^Subject: *(.*)$/im.exec(m.raw.toString('utf8'))?.[1]?.trim() ?? '';
  console.log(`received ${n} from=${m.mailFrom} to=${m.rcptTo.join(',')} subject=${subject}`);
}
