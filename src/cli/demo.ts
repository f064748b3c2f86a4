// `demo`: the whole job end to end on loopback, with no Google account: a fake token
// endpoint and a fake Gmail (both real TLS servers), the bridge in front of them, and one
// message sent through a real SMTP session.
import { readFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import nodemailer from 'nodemailer';
import { parseConfig } from '../config/load.js';
import { createLogger } from '../log/logger.js';
import { Bridge } from '../daemon/bridge.js';
import { startFakeWorld, bridgeConfig, writeBridgeConfig } from '../fakes/world.js';

export async function demoCommand(out: NodeJS.WritableStream): Promise<number> {
  const say = (s = '') => out.write(s + '\n');
  const world = await startFakeWorld();
  let bridge: Bridge | undefined;
  try {
    say('xoauth2-bridge demo: everything runs on loopback; no Google account is used.');
    say(`  fake token endpoint  ${world.tokens.url}  (HTTPS, test CA)`);
    say(`  fake Gmail           localhost:${world.gmail.port}  (implicit TLS, AUTH XOAUTH2 only)`);
    const file = await writeBridgeConfig(world, bridgeConfig(world, { log: { level: 'info', format: 'text' } }));
    const config = parseConfig(await readFile(file, 'utf8'), file);
    // Bridge log lines go to stderr so stdout stays the demo's story.
    const log = createLogger({ level: 'info', format: 'text', stream: process.stderr });
    bridge = new Bridge({ config, configFile: file, log });
    await bridge.start();
    await bridge.tokens.importRefreshToken(world.account.name, world.account.refreshToken);
    const listener = bridge.bound[0];
    say(`  bridge listener      ${listener.host}:${listener.port}  (user "${world.user.username}", account "${world.account.name}" <${world.account.email}>)`);
    say(`  state dir            ${config.stateDir}`);
    say();

    const client = nodemailer.createTransport({
      host: listener.host,
      port: listener.port,
      secure: false,
      ignoreTLS: true,
      auth: { user: world.user.username, pass: world.user.password },
    });
    const raw = Buffer.from(
      [
        `From: Office Scanner <${world.account.email}>`,
        'To: Alice <alice@example.org>',
        'Subject: Scan from the 3rd floor printer',
        `Date: ${new Date().toUTCString().replace('GMT', '+0000')}`,
        `Message-ID: <demo-${Date.now()}@printer.local>`,
        'MIME-Version: 1.0',
        'Content-Type: text/plain; charset=utf-8',
        'Content-Transfer-Encoding: 8bit',
        '',
        'Your scan is attached (not really: this is the xoauth2-bridge demo). Grüße!',
        '',
      ].join('\r\n'),
    );
    say(`1. printer -> bridge: SMTP AUTH PLAIN as "${world.user.username}", MAIL FROM:<${world.account.email}>, RCPT TO:<alice@example.org>, ${raw.length} bytes`);
    const t0 = process.hrtime.bigint();
    const info = await client.sendMail({ envelope: { from: world.account.email, to: ['alice@example.org'] }, raw });
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    client.close();
    say(`   bridge answered: ${info.response}   (${ms.toFixed(1)} ms, message and envelope fsynced before this reply)`);
    say(`2. spool -> delivery worker -> upstream: token from the token endpoint, AUTH XOAUTH2 over TLS to fake Gmail`);
    await world.gmail.waitForMessages(1, 15_000);
    const got = world.gmail.messages[0];
    say(`3. fake Gmail received it:`);
    say(`   authenticated as    ${got.authUser} (XOAUTH2 bearer issued by the token endpoint)`);
    say(`   connection          ${got.secure ? `TLS ${got.tlsProtocol ?? ''}`.trim() : 'PLAINTEXT (!)'}`);
    say(`   MAIL FROM           <${got.mailFrom}>`);
    say(`   RCPT TO             ${got.rcptTo.map((r) => `<${r}>`).join(' ')}`);
    const same = got.raw.equals(raw);
    say(`   bytes               ${got.raw.length} (sha256 ${createHash('sha256').update(got.raw).digest('hex').slice(0, 16)}…) ${same ? 'identical to what the printer sent' : 'DIFFERENT from what was sent'}`);
    say();
    say('--- message as delivered ---');
    say(got.raw.toString('utf8').trimEnd());
    say('----------------------------');
    // The worker removes the spool files right after Gmail's 250.
    let left = await bridge.spool.list();
    for (let i = 0; i < 50 && left.length; i++) {
      await new Promise((r) => setTimeout(r, 20));
      left = await bridge.spool.list();
    }
    say(`spool after delivery: ${left.length} message(s) left`);
    return same && left.length === 0 ? 0 : 1;
  } finally {
    await bridge?.stop(5000);
    await world.close();
  }
}
