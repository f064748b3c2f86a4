// Fake Exchange Online SMTP (smtp.office365.com:587) for tests and `demo`: STARTTLS with the
// test CA, AUTH XOAUTH2 checked against the fake Microsoft identity platform, and
// Exchange's own replies for the cases the bridge must tell apart: 535 5.7.3 (token not
// accepted) and 535 5.7.139 (SMTP AUTH disabled for the mailbox).
import { EventEmitter } from 'node:events';
import { SMTPServer, type SMTPServerAuthentication, type SMTPServerSession } from 'smtp-server';
import type { TestPki } from './ca.js';
import type { FakeMicrosoftIdentity } from './microsoftIdentity.js';

export interface ExchangeMessage {
  mailFrom: string;
  rcptTo: string[];
  raw: Buffer;
  authUser: string;
}

function reply(code: number, text: string): Error & { responseCode: number } {
  return Object.assign(new Error(text), { responseCode: code });
}

/** Events: 'auth-held' (user) when holdAuth kept an AUTH waiting. */
export class FakeExchange extends EventEmitter {
  readonly host = '127.0.0.1';
  readonly messages: ExchangeMessage[] = [];
  readonly auths: { user: string; ok: boolean; reply?: string }[] = [];
  /** Mailboxes with SMTP AUTH disabled (Set-CASMailbox -SmtpClientAuthenticationDisabled $true). */
  readonly smtpAuthDisabled = new Set<string>();
  /** Mailboxes whose tokens are refused with 535 5.7.3 however fresh (a mailbox Exchange will not let in). */
  readonly refuseTokens = new Set<string>();
  /** While true, a valid AUTH gets no answer until releaseAuths() (a client caught between token and use). */
  holdAuth = false;
  /** Replies for the next MAIL FROM commands (e.g. Exchange's 4.3.2 throttling), used up in order. */
  readonly mailReplies: { code: number; text: string }[] = [];
  private readonly held: (() => void)[] = [];

  private constructor(
    private readonly smtp: SMTPServer,
    readonly port: number,
  ) {
    super();
  }

  /** Answers every held AUTH (235) and stops holding. */
  releaseAuths(): void {
    this.holdAuth = false;
    for (const answer of this.held.splice(0)) answer();
  }

  static async start(opts: { pki: TestPki; identity: FakeMicrosoftIdentity }): Promise<FakeExchange> {
    let self: FakeExchange | undefined;
    const smtp = new SMTPServer({
      secure: false,
      key: opts.pki.key,
      cert: opts.pki.cert,
      minVersion: 'TLSv1.2',
      name: 'SN4PR0601CA0012.outlook.office365.com',
      banner: 'Microsoft ESMTP MAIL Service ready',
      allowInsecureAuth: false,
      authMethods: ['LOGIN', 'XOAUTH2'],
      size: 36700160,
      logger: false,
      disableReverseLookup: true,
      closeTimeout: 100,
      onAuth: (
        auth: SMTPServerAuthentication,
        _session: SMTPServerSession,
        cb: (err: Error | null | undefined, res?: { user?: unknown }) => void,
      ) => {
        const me = self!;
        const user = auth.username ?? '';
        const fail = (text: string) => {
          me.auths.push({ user, ok: false, reply: `535 ${text}` });
          cb(reply(535, text));
        };
        if (me.smtpAuthDisabled.has(user.toLowerCase()))
          return fail(
            '5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox. Visit https://aka.ms/smtp_auth_disabled for more information. [SN4PR0601CA0012.namprd06.prod.outlook.com]',
          );
        if (
          auth.method !== 'XOAUTH2' ||
          !auth.accessToken ||
          !opts.identity.mayUse(auth.accessToken, user) ||
          me.refuseTokens.has(user.toLowerCase())
        )
          return fail('5.7.3 Authentication unsuccessful [SN4PR0601CA0012.namprd06.prod.outlook.com]');
        const answer = () => {
          me.auths.push({ user, ok: true });
          cb(null, { user });
        };
        if (!me.holdAuth) return answer();
        me.held.push(answer);
        me.emit('auth-held', user);
      },
      onMailFrom: (address, session, cb) => {
        const scripted = self!.mailReplies.shift();
        if (scripted) return cb(reply(scripted.code, scripted.text));
        if (address.address.toLowerCase() !== String(session.user).toLowerCase())
          return cb(
            reply(
              554,
              `5.2.252 SendAsDenied; ${String(session.user)} not allowed to send as ${address.address}; STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied`,
            ),
          );
        cb();
      },
      onData: (stream, session, cb) => {
        const chunks: Buffer[] = [];
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('end', () => {
          self!.messages.push({
            mailFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
            rcptTo: session.envelope.rcptTo.map((r) => r.address),
            raw: Buffer.concat(chunks),
            authUser: String(session.user),
          });
          cb(null, '2.0.0 OK <fake@outlook.office365.com> [Hostname=SN4PR0601MB3712.namprd06.prod.outlook.com]');
        });
      },
    });
    await new Promise<void>((resolve) => smtp.listen(0, '127.0.0.1', resolve));
    self = new FakeExchange(smtp, (smtp.server.address() as { port: number }).port);
    return self;
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.smtp.close(() => resolve()));
  }
}
