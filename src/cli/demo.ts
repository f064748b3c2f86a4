// `demo`: the whole job end to end on loopback, with no Google account: a fake token
// endpoint and a fake Gmail (both real TLS servers), the bridge in front of them, and one
// message sent through a real SMTP session. `--keep` (rehearsal mode) then leaves it all
// running and prints where to point a real printer, swaks, the console and `authorize`, until
// Ctrl-C.
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

export interface DemoOptions {
  provider?: 'google' | 'microsoft';
  transport?: 'smtp' | 'gmail-api' | 'graph';
  /** Rehearsal mode: keep the fakes and the bridge running until SIGINT/SIGTERM. */
  keep?: boolean;
  /** With keep: the SMTP listener's address (default 127.0.0.1, any free port). */
  listen?: { host: string; port: number };
}

export async function demoCommand(out: NodeJS.WritableStream, opts: DemoOptions = {}): Promise<number> {
  const say = (s = '') => out.write(s + '\n');
  const microsoft = opts.provider === 'microsoft';
  const graphDemo = opts.transport === 'graph';
  if (microsoft && opts.transport === 'gmail-api') {
    say(
      'demo: --transport gmail-api is for Google; Microsoft accounts send over SMTP or Microsoft Graph (--transport graph)',
    );
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
    const upstreamName = graphDemo
      ? 'fake Microsoft Graph'
      : microsoft
        ? 'fake Exchange Online'
        : api
          ? 'fake Gmail API'
          : 'fake Gmail';
    let how = `AUTH XOAUTH2 over TLS to ${upstreamName}`;
    let received: () => Promise<Received>;
    /** Everything the fake upstream has received so far (rehearsal mode reports each new one). */
    let arrivals: () => Received[];
    if (graphDemo) {
      const t = (tenant = await startFakeGraphTenant(world, { mailbox: sender }));
      refreshToken = t.identity.issueRefreshToken(t.clientId, sender);
      overrides = { accounts: [t.account(world.account.name, 'user')] };
      say('xoauth2-bridge demo: everything runs on loopback; no Microsoft account is used.');
      say(
        `  fake identity        ${t.identity.tokenUrl}  (HTTPS, test CA; tokens for https://graph.microsoft.com, scope Mail.Send)`,
      );
      say(
        `  fake Microsoft Graph ${t.graph.url}  (HTTPS, POST /v1.0/users/{mailbox}/sendMail with base64 MIME; checks audience and scp)`,
      );
      how = `POST /v1.0/users/${sender}/sendMail (base64 MIME, text/plain) over HTTPS to ${upstreamName}`;
      arrivals = () =>
        t.graph.messages.map((m) => ({
          authUser: `${m.caller}, token audience https://graph.microsoft.com, scp Mail.Send`,
          mailFrom: `(none: Graph sends from the mailbox ${m.mailbox})`,
          rcptTo: m.recipients,
          raw: m.raw,
          secure: true,
          tlsProtocol: '(HTTPS)',
        }));
      received = async () => {
        await t.graph.waitForMessages(1, 15_000);
        return arrivals()[0];
      };
    } else if (identity && exo) {
      const clientId = '00000000-0000-4000-8000-00000000demo'.slice(0, 36);
      const secret = `demo~${Math.random().toString(36).slice(2)}`;
      identity.registerApp(clientId, secret);
      refreshToken = identity.issueRefreshToken(clientId, sender);
      overrides = {
        accounts: [
          {
            name: world.account.name,
            provider: 'microsoft',
            email: sender,
            oauth: identity.accountOAuth('user', clientId, { clientSecret: secret }, world.caFile),
            upstream: { host: 'localhost', port: exo.port, caFile: world.caFile },
          },
        ],
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
      arrivals = () => exo.messages.map((m) => ({ ...m, secure: true }));
    } else if (api && world.gmailApi) {
      const gapi = world.gmailApi;
      say('xoauth2-bridge demo: everything runs on loopback; no Google account is used.');
      say(`  fake token endpoint  ${world.tokens.url}  (HTTPS, test CA; the grant has only the gmail.send scope)`);
      say(
        `  fake Gmail API       ${gapi.url}  (HTTPS, users.messages.send media upload; checks the bearer and its scope)`,
      );
      how = `users.messages.send (media upload, message/rfc822, streamed from the spool file) over HTTPS to ${upstreamName}`;
      received = async () => {
        await gapi.waitForMessages(1, 15_000);
        const m = gapi.messages[0];
        const scope = world.tokens.requests.filter((r) => r.ok && r.email === m.user).at(-1)?.scope ?? '?';
        // The API has no envelope: Gmail sends to the To/Cc/Bcc headers, which the bridge made match it.
        return {
          authUser: `${m.user}, token scope ${scope}`,
          mailFrom: "(none: the API sends as the token's user)",
          rcptTo: m.recipients,
          raw: m.raw,
          secure: true,
          tlsProtocol: '(HTTPS)',
        };
      };
      arrivals = () =>
        gapi.messages.map((m) => ({
          authUser: m.user,
          mailFrom: m.user,
          rcptTo: m.recipients,
          raw: m.raw,
          secure: true,
        }));
    } else {
      say('xoauth2-bridge demo: everything runs on loopback; no Google account is used.');
      say(`  fake token endpoint  ${world.tokens.url}  (HTTPS, test CA)`);
      say(`  fake Gmail           localhost:${world.gmail.port}  (implicit TLS, AUTH XOAUTH2 only)`);
      received = async () => {
        await world.gmail.waitForMessages(1, 15_000);
        return world.gmail.messages[0];
      };
      arrivals = () => world.gmail.messages;
    }
    if (opts.keep) {
      const l = opts.listen ?? { host: '127.0.0.1', port: 0 };
      // A printer on the LAN: STARTTLS with a generated certificate, AUTH only after it.
      const lan = !['127.0.0.1', '::1', 'localhost'].includes(l.host);
      // `authorize` against the fake consent page signs in as the account's own address.
      if (!identity) world.tokens.consentEmail = world.account.email;
      overrides = {
        ...overrides,
        listeners: [{ name: 'demo', host: l.host, port: l.port, tls: lan ? 'starttls' : 'none' }],
        http: { host: '127.0.0.1', port: 0, console: true },
      };
    }
    const file = await writeBridgeConfig(
      world,
      bridgeConfig(world, { log: { level: 'info', format: 'text' }, ...overrides }),
    );
    const config = parseConfig(await readFile(file, 'utf8'), file);
    // Bridge log lines go to stderr so stdout stays the demo's story.
    const log = createLogger({ level: 'info', format: 'text', stream: process.stderr });
    bridge = new Bridge({ config, configFile: file, log, httpEphemeral: opts.keep });
    await bridge.start();
    await bridge.tokens.importRefreshToken(world.account.name, refreshToken);
    const listener = bridge.bound[0];
    say(
      `  bridge listener      ${listener.host}:${listener.port}  (user "${world.user.username}", account "${world.account.name}" <${sender}>)`,
    );
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
    say(
      `1. printer -> bridge: SMTP AUTH PLAIN as "${world.user.username}", MAIL FROM:<${sender}>, RCPT TO:<alice@example.org>, ${raw.length} bytes`,
    );
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
    say(
      `   bytes               ${got.raw.length} (sha256 ${createHash('sha256').update(got.raw).digest('hex').slice(0, 16)}…) ${same ? 'a Received: header, then exactly what the printer sent' : 'DIFFERENT from what was sent'}`,
    );
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
    const ok = same && left.length === 0;
    if (!opts.keep) return ok ? 0 : 1;
    await rehearse(say, {
      bridge,
      file,
      sender,
      upstreamName,
      user: world.user,
      account: world.account.name,
      arrivals,
    });
    return ok ? 0 : 1;
  } finally {
    await bridge?.stop(5000);
    await exo?.close();
    await identity?.close();
    await tenant?.close();
    await world.close();
  }
}

/**
 * Rehearsal mode: print where to point real clients, report each message the fake upstream
 * receives, and wait for Ctrl-C (SIGINT) or SIGTERM; the caller then stops everything and
 * removes the temporary directory.
 */
async function rehearse(
  say: (s?: string) => void,
  o: {
    bridge: Bridge;
    file: string;
    sender: string;
    upstreamName: string;
    user: { username: string; password: string };
    account: string;
    arrivals: () => Received[];
  },
): Promise<void> {
  const l = o.bridge.bound[0];
  const host = l.host === '0.0.0.0' || l.host === '::' ? "<this machine's address>" : l.host;
  const http = o.bridge.httpAddress;
  say();
  say('Rehearsal mode (--keep): the fakes and the bridge keep running until Ctrl-C.');
  say(`  SMTP host     ${host}`);
  say(
    `  SMTP port     ${l.port}  (${o.bridge.config.listeners[0].tls === 'none' ? 'no TLS' : 'STARTTLS, self-signed certificate'}; AUTH PLAIN or LOGIN)`,
  );
  say(`  user          ${o.user.username}`);
  say(`  password      ${o.user.password}`);
  say(`  sender        ${o.sender}  (the account's address; other From addresses are refused)`);
  say(
    `  swaks         swaks --server ${host === l.host ? host : '127.0.0.1'}:${l.port} --auth-user ${o.user.username} --auth-password '${o.user.password}' --from ${o.sender} --to you@example.org`,
  );
  if (http) say(`  console       http://${http.host}:${http.port}/  (loopback: no password)`);
  say(
    `  authorize     xoauth2-bridge authorize ${o.account} --manual -c ${o.file}  (the fake consent page; its certificate is the demo's test CA)`,
  );
  say(`  config        ${o.file}`);
  say();
  let seen = o.arrivals().length;
  // The fakes keep what they receive in memory; a short poll reports each new message.
  const poll = setInterval(() => {
    const all = o.arrivals();
    for (; seen < all.length; seen++) {
      const m = all[seen];
      const subject = /^Subject: ?(.*)$/im.exec(m.raw.toString('utf8').split(/\r?\n\r?\n/)[0])?.[1]?.trim() ?? '';
      say(
        `arrived at ${o.upstreamName}: from <${m.mailFrom}> to ${m.rcptTo.map((r) => `<${r}>`).join(' ')}, ${m.raw.length} bytes${subject ? `, subject "${subject}"` : ''}`,
      );
    }
  }, 200);
  const signal = await new Promise<string>((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
  });
  clearInterval(poll);
  say(`${signal}: stopping the bridge and the fakes, removing ${o.bridge.config.stateDir.replace(/\/state$/, '')}`);
}
