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
import { FakeMicrosoftIdentity } from '../fakes/microsoftIdentity.js';
import { FakeExchange } from '../fakes/exchange.js';
import { startFakeGraphTenant, type FakeGraphTenant } from '../fakes/world.js';

interface Received {
  authUser: string;
  mailFrom: string;
  rcptTo: string[];
  raw: Buffer;
  secure: boolean;
  tlsProtocol?: string;
}

export async function demoCommand(out: NodeJS.WritableStream, opts: { provider?: 'google' | 'microsoft'; transport?: 'smtp' | 'gmail-api' | 'graph' } = {}): Promise<number> {
  const say = (s = '') => out.write(s + '\n');
  const microsoft = opts.provider === 'microsoft';
  const graphDemo = opts.transport === 'graph';
  if (microsoft && opts.transport === 'gmail-api') {
    say('demo: --transport gmail-api is for Google; Microsoft accounts send over SMTP or Microsoft Graph (--transport graph)');
    return 2;
  }
  if (!microsoft && graphDemo) {
    say('demo: --transport graph is Microsoft Graph: add --provider microsoft');
    return 2;
  }
  // Microsoft Graph: the fake identity platform and the fake Graph take the whole demo.
  const api = opts.transport === 'gmail-api' || graphDemo;
  const world = await startFakeWorld({ transport: opts.transport === 'gmail-api' ? 'gmail-api' : 'smtp' });
  let tenant: FakeGraphTenant | undefined;
  const identity = microsoft && !graphDemo ? await FakeMicrosoftIdentity.start({ pki: world.pki }) : undefined;
  const exo = identity ? await FakeExchange.start({ pki: world.pki, identity }) : undefined;
  let bridge: Bridge | undefined;
  try {
    let overrides: Record<string, unknown> = {};
    let refreshToken = world.account.refreshToken;
    const sender = microsoft ? 'printer@contoso.com' : world.account.email;
    const upstreamName = graphDemo ? 'fake Microsoft Graph' : microsoft ? 'fake Exchange Online' : api ? 'fake Gmail API' : 'fake Gmail';
    let how = `AUTH XOAUTH2 over TLS to ${upstreamName}`;
    let received: () => Promise<Received>;
    if (graphDemo) {
      const t = (tenant = await startFakeGraphTenant(world, { mailbox: sender }));
      refreshToken = t.identity.issueRefreshToken(t.clientId, sender);
      overrides = { accounts: [t.account(world.account.name, 'user')] };
      say('xoauth2-bridge demo: everything runs on loopback; no Microsoft account is used.');
      say(`  fake identity        ${t.identity.tokenUrl}  (HTTPS, test CA; tokens for https://graph.microsoft.com, scope Mail.Send)`);
      say(`  fake Microsoft Graph ${t.graph.url}  (HTTPS, POST /v1.0/users/{mailbox}/sendMail with base64 MIME; checks audience and scp)`);
      how = `POST /v1.0/users/${sender}/sendMail (base64 MIME, text/plain) over HTTPS to ${upstreamName}`;
      received = async () => {
        await t.graph.waitForMessages(1, 15_000);
        const m = t.graph.messages[0];
        return { authUser: `${m.caller}, token audience https://graph.microsoft.com, scp Mail.Send`, mailFrom: `(none: Graph sends from the mailbox ${m.mailbox})`, rcptTo: m.recipients, raw: m.raw, secure: true, tlsProtocol: '(HTTPS)' };
      };
    } else if (identity && exo) {
      const clientId = '00000000-0000-4000-8000-00000000demo'.slice(0, 36);
      const secret = `demo~${Math.random().toString(36).slice(2)}`;
      identity.registerApp(clientId, secret);
      refreshToken = identity.issueRefreshToken(clientId, sender);
      overrides = {
        accounts: [{ name: world.account.name, provider: 'microsoft', email: sender, oauth: { type: 'user', tenant: identity.tenant, authorityHost: identity.authorityHost, clientId, clientSecret: secret, caFile: world.caFile }, upstream: { host: 'localhost', port: exo.port, caFile: world.caFile } }],
      };
      say('xoauth2-bridge demo: everything runs on loopback; no Microsoft account is used.');
      say(`  fake identity        ${identity.tokenUrl}  (HTTPS, test CA; refresh tokens rotate and work once)`);
      say(`  fake Exchange Online localhost:${exo.port}  (587-style STARTTLS, AUTH XOAUTH2)`);
      received = async () => {
        for (let i = 0; i < 750 && !exo.messages.length; i++) await new Promise((r) => setTimeout(r, 20));
        const m = exo.messages[0];
        if (!m) throw new Error('fake Exchange Online received nothing within 15 s');
        return { ...m, secure: true, tlsProtocol: 'STARTTLS' };
      };
    } else if (api && world.gmailApi) {
      const gapi = world.gmailApi;
      say('xoauth2-bridge demo: everything runs on loopback; no Google account is used.');
      say(`  fake token endpoint  ${world.tokens.url}  (HTTPS, test CA; the grant has only the gmail.send scope)`);
      say(`  fake Gmail API       ${gapi.url}  (HTTPS, users.messages.send media upload; checks the bearer and its scope)`);
      how = `users.messages.send (media upload, message/rfc822, streamed from the spool file) over HTTPS to ${upstreamName}`;
      received = async () => {
        await gapi.waitForMessages(1, 15_000);
        const m = gapi.messages[0];
        const scope = world.tokens.requests.filter((r) => r.ok && r.email === m.user).at(-1)?.scope ?? '?';
        // The API has no envelope: Gmail sends to the To/Cc/Bcc headers, which the bridge made match it.
        return { authUser: `${m.user}, token scope ${scope}`, mailFrom: '(none: the API sends as the token\'s user)', rcptTo: m.recipients, raw: m.raw, secure: true, tlsProtocol: '(HTTPS)' };
      };
    } else {
      say('xoauth2-bridge demo: everything runs on loopback; no Google account is used.');
      say(`  fake token endpoint  ${world.tokens.url}  (HTTPS, test CA)`);
      say(`  fake Gmail           localhost:${world.gmail.port}  (implicit TLS, AUTH XOAUTH2 only)`);
      received = async () => {
        await world.gmail.waitForMessages(1, 15_000);
        return world.gmail.messages[0];
      };
    }
    const file = await writeBridgeConfig(world, bridgeConfig(world, { log: { level: 'info', format: 'text' }, ...overrides }));
    const config = parseConfig(await readFile(file, 'utf8'), file);
    // Bridge log lines go to stderr so stdout stays the demo's story.
    const log = createLogger({ level: 'info', format: 'text', stream: process.stderr });
    bridge = new Bridge({ config, configFile: file, log });
    await bridge.start();
    await bridge.tokens.importRefreshToken(world.account.name, refreshToken);
    const listener = bridge.bound[0];
    say(`  bridge listener      ${listener.host}:${listener.port}  (user "${world.user.username}", account "${world.account.name}" <${sender}>)`);
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
        `From: Office Scanner <${sender}>`,
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
    say(`1. printer -> bridge: SMTP AUTH PLAIN as "${world.user.username}", MAIL FROM:<${sender}>, RCPT TO:<alice@example.org>, ${raw.length} bytes`);
    const t0 = process.hrtime.bigint();
    const info = await client.sendMail({ envelope: { from: sender, to: ['alice@example.org'] }, raw });
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    client.close();
    say(`   bridge answered: ${info.response}   (${ms.toFixed(1)} ms, message and envelope fsynced before this reply)`);
    say(`2. spool -> delivery worker -> upstream: token from the token endpoint, ${how}`);
    const got = await received();
    say(`3. ${upstreamName} received it:`);
    say(`   authenticated as    ${got.authUser} (${api ? 'Bearer' : 'XOAUTH2 bearer'} issued by the token endpoint)`);
    say(`   connection          ${got.secure ? `TLS ${got.tlsProtocol ?? ''}`.trim() : 'PLAINTEXT (!)'}`);
    say(`   MAIL FROM           ${api ? got.mailFrom : `<${got.mailFrom}>`}`);
    say(`   ${api ? 'recipients (To/Cc) ' : 'RCPT TO            '} ${got.rcptTo.map((r) => `<${r}>`).join(' ')}`);
    // The bridge prepends one Received: trace header; every byte after it is the printer's.
    const afterTrace = got.raw.toString('latin1').replace(/^Received:[^\r\n]*(?:\r\n[ \t][^\r\n]*)*\r\n/, '');
    const same = Buffer.from(afterTrace, 'latin1').equals(raw);
    say(`   bytes               ${got.raw.length} (sha256 ${createHash('sha256').update(got.raw).digest('hex').slice(0, 16)}…) ${same ? 'a Received: header, then exactly what the printer sent' : 'DIFFERENT from what was sent'}`);
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
    await exo?.close();
    await identity?.close();
    await tenant?.close();
    await world.close();
  }
}
