// transport graph, upstream.largeMessages: a message over sendMail's 4 MB goes as a draft
// (parsed by mailparser), attachments over 3 MB through upload sessions (chunks <= 4 MB,
// Content-Range checked by the fake), then /send; a kill -9 between "upload session created"
// and "sent" never sends twice (the draft id is on disk before the upload).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import MailComposer from 'nodemailer/lib/mail-composer';
import {
  startFakeWorld,
  startFakeGraphTenant,
  bridgeConfig,
  writeBridgeConfig,
  type FakeWorld,
  type FakeGraphTenant,
} from '../../src/fakes/world.js';
import { GRAPH_MAX_CHUNK } from '../../src/fakes/graph.js';
import { sendThroughBridge, spawnBridge, startBridge } from '../helpers/bridge.js';
import { waitFor } from '../helpers/wait.js';

const MAILBOX = 'printer@contoso.com';

function compose(opts: {
  subject: string;
  to: string;
  bcc?: string;
  attachments: { filename: string; content: Buffer; contentType: string; cid?: string }[];
}): Promise<Buffer> {
  return new MailComposer({
    from: `Scanner <${MAILBOX}>`,
    to: opts.to,
    subject: opts.subject,
    html: '<p>Your scans <img src="cid:logo@x"></p>',
    headers: { 'X-Scanner-Job': 'job-42' },
    messageId: `<${randomBytes(6).toString('hex')}@printer.local>`,
    attachments: opts.attachments,
  })
    .compile()
    .build();
}

function config(w: FakeWorld, t: FakeGraphTenant): Record<string, unknown> {
  return bridgeConfig(w, {
    listeners: [{ name: 'local', host: '127.0.0.1', port: 0, tls: 'none', maxMessageSize: '40MB' }],
    queue: { retry: ['500ms'] },
    log: { level: 'debug', format: 'json' },
    accounts: [t.account('m365', 'app', { upstream: { apiUrl: t.graph.url, caFile: w.caFile, largeMessages: true } })],
    users: [{ username: w.user.username, passwordHash: w.user.passwordHash, account: 'm365' }],
  });
}

test('graph largeMessages: a 20 MB message with two large attachments goes through upload sessions with the same bytes', {
  timeout: 240_000,
}, async () => {
  const w = await startFakeWorld();
  const t = await startFakeGraphTenant(w, { mailbox: MAILBOX, graphRoles: ['Mail.Send', 'Mail.ReadWrite'] });
  const a1 = randomBytes(7 * 1024 * 1024);
  const a2 = randomBytes(8 * 1024 * 1024);
  const logo = randomBytes(20 * 1024);
  const raw = await compose({
    subject: 'Scans',
    to: 'Alice <alice@example.org>',
    attachments: [
      { filename: 'scan-1.pdf', content: a1, contentType: 'application/pdf' },
      { filename: 'scan-2.pdf', content: a2, contentType: 'application/pdf' },
      { filename: 'logo.png', content: logo, contentType: 'image/png', cid: 'logo@x' },
    ],
  });
  assert.ok(raw.length > 20_000_000, `${raw.length} bytes`);
  const b = await startBridge(w, config(w, t), { importToken: false });
  try {
    const t0 = Date.now();
    await sendThroughBridge({
      port: b.port,
      user: w.user.username,
      pass: w.user.password,
      from: MAILBOX,
      to: ['alice@example.org', 'hidden@example.net'],
      raw,
    });
    await t.graph.waitForMessages(1, 150_000);
    const ms = Date.now() - t0;
    const m = t.graph.messages[0];
    assert.ok(m.draft, 'sent from a draft');
    const by = (n: string) => m.draft!.attachments.find((a) => a.name === n)!;
    assert.ok(by('scan-1.pdf').bytes.equals(a1) && by('scan-1.pdf').via === 'upload');
    assert.ok(by('scan-2.pdf').bytes.equals(a2) && by('scan-2.pdf').via === 'upload');
    assert.ok(by('logo.png').bytes.equals(logo) && by('logo.png').via === 'post');
    assert.equal(by('logo.png').contentId, 'logo@x');
    const json = m.draft.json as {
      subject: string;
      toRecipients: unknown;
      bccRecipients: unknown;
      internetMessageHeaders: unknown;
      body: { contentType: string };
    };
    assert.equal(json.subject, 'Scans');
    assert.deepEqual(json.toRecipients, [{ emailAddress: { address: 'alice@example.org', name: 'Alice' } }]);
    assert.deepEqual(
      json.bccRecipients,
      [{ emailAddress: { address: 'hidden@example.net' } }],
      'the envelope-only recipient as Bcc',
    );
    assert.ok(!m.visible.toString().includes('hidden@example.net'));
    assert.deepEqual(json.internetMessageHeaders, [{ name: 'X-Scanner-Job', value: 'job-42' }]);
    assert.equal(json.body.contentType, 'HTML');
    const puts = t.graph.requests.filter((r) => r.method === 'PUT');
    assert.ok(
      puts.every((r) => r.bytes <= GRAPH_MAX_CHUNK && (r.status === 200 || r.status === 201)),
      'every chunk <= 4 MB and accepted',
    );
    assert.equal(puts.length, Math.ceil(a1.length / (12 * 320 * 1024)) + Math.ceil(a2.length / (12 * 320 * 1024)));
    assert.equal(t.graph.drafts.size, 0);
    await waitFor(() => b.logs.some((l) => l.includes('"message":"delivered"')), 10_000, 'delivered');
    assert.ok(
      !b.logs.some((l) => l.includes('/upload/')),
      'upload URLs (they carry a credential at Graph) are not logged',
    );
    assert.ok(
      !existsSync(join(w.dir, 'state', 'graph-drafts')) ||
        readdirSync(join(w.dir, 'state', 'graph-drafts')).length === 0,
      'journal emptied',
    );
    console.log(
      `# upload-session path: ${raw.length} bytes in ${ms} ms (${(raw.length / 1048576 / (ms / 1000)).toFixed(1)} MB/s, SMTP in + parse + upload on the fake)`,
    );
  } finally {
    await b.stop();
    await t.close();
    await w.close();
  }
});

test('graph largeMessages: kill -9 after the upload session was created; after the restart the draft is replaced and the message is sent once', {
  timeout: 180_000,
}, async () => {
  const w = await startFakeWorld();
  const t = await startFakeGraphTenant(w, { mailbox: MAILBOX, graphRoles: ['Mail.Send', 'Mail.ReadWrite'] });
  try {
    const configFile = await writeBridgeConfig(w, config(w, t));
    const raw = await compose({
      subject: 'Crash',
      to: 'alice@example.org',
      attachments: [
        { filename: 'big.bin', content: randomBytes(6 * 1024 * 1024), contentType: 'application/octet-stream' },
      ],
    });
    t.graph.stallUploads = true;
    const first = await spawnBridge(configFile);
    await sendThroughBridge({
      port: first.ports.local,
      user: w.user.username,
      pass: w.user.password,
      from: MAILBOX,
      to: ['alice@example.org'],
      raw,
    });
    await t.graph.waitForUpload(60_000);
    assert.equal(t.graph.drafts.size, 1, 'a draft with an upload session in progress');
    const [draftId] = t.graph.drafts.keys();
    first.child.kill('SIGKILL');
    await first.exited;
    assert.equal(
      readdirSync(join(w.dir, 'state', 'graph-drafts')).length,
      1,
      'the draft id was on disk before the upload',
    );
    assert.equal(t.graph.messages.length, 0);

    t.graph.stallUploads = false;
    const second = await spawnBridge(configFile);
    try {
      await t.graph.waitForMessages(1, 60_000);
      await waitFor(
        () => second.stderr.some((l) => l.includes('"message":"delivered"')),
        20_000,
        'the delivered log line',
      );
      // Canary: a later message is delivered too, so a second send of the first would have shown.
      await sendThroughBridge({
        port: second.ports.local,
        user: w.user.username,
        pass: w.user.password,
        from: MAILBOX,
        to: ['canary@example.org'],
        raw: Buffer.from(`From: ${MAILBOX}\r\nTo: canary@example.org\r\nSubject: canary\r\n\r\nhi\r\n`),
      });
      await t.graph.waitForMessages(2, 30_000);
      const crash = t.graph.messages.filter(
        (m) => (m.draft?.json as { subject?: string } | undefined)?.subject === 'Crash',
      );
      assert.equal(crash.length, 1, 'sent once');
      assert.deepEqual(t.graph.deletedDrafts, [draftId], 'the unfinished draft was deleted');
      assert.equal(t.graph.drafts.size, 0);
      assert.ok(second.stderr.some((l) => l.includes('deleted an unfinished draft')));
    } finally {
      second.child.kill('SIGTERM');
      await second.exited;
    }
  } finally {
    await t.close();
    await w.close();
  }
});

test('graph largeMessages: kill -9 after /send was issued but before its answer; after the restart the same draft is not sent again', {
  timeout: 180_000,
}, async () => {
  const w = await startFakeWorld();
  const t = await startFakeGraphTenant(w, { mailbox: MAILBOX, graphRoles: ['Mail.Send', 'Mail.ReadWrite'] });
  try {
    const configFile = await writeBridgeConfig(w, config(w, t));
    const raw = await compose({
      subject: 'Lost answer',
      to: 'alice@example.org',
      attachments: [
        { filename: 'big.bin', content: randomBytes(5 * 1024 * 1024), contentType: 'application/octet-stream' },
      ],
    });
    t.graph.loseSendAnswers = true;
    const first = await spawnBridge(configFile);
    await sendThroughBridge({
      port: first.ports.local,
      user: w.user.username,
      pass: w.user.password,
      from: MAILBOX,
      to: ['alice@example.org'],
      raw,
    });
    await t.graph.waitForMessages(1, 60_000);
    first.child.kill('SIGKILL');
    await first.exited;
    const journal = readdirSync(join(w.dir, 'state', 'graph-drafts'));
    assert.equal(journal.length, 1, 'the draft is recorded as being sent');

    t.graph.loseSendAnswers = false;
    const second = await spawnBridge(configFile);
    try {
      await waitFor(
        () => second.stderr.some((l) => l.includes('"message":"delivered"') && l.includes('already sent')),
        30_000,
        'delivered: the draft was already sent',
      );
      // Canary: a later message is delivered, so a second send of the first would have shown by now.
      await sendThroughBridge({
        port: second.ports.local,
        user: w.user.username,
        pass: w.user.password,
        from: MAILBOX,
        to: ['canary@example.org'],
        raw: Buffer.from(`From: ${MAILBOX}\r\nTo: canary@example.org\r\nSubject: canary\r\n\r\nhi\r\n`),
      });
      await t.graph.waitForMessages(2, 30_000);
      assert.equal(
        t.graph.messages.filter((m) => (m.draft?.json as { subject?: string } | undefined)?.subject === 'Lost answer')
          .length,
        1,
        'sent once',
      );
      assert.equal(
        t.graph.requests.filter((r) => r.method === 'POST' && r.path.endsWith('/messages')).length,
        1,
        'no second draft',
      );
      assert.equal(readdirSync(join(w.dir, 'state', 'graph-drafts')).length, 0, 'journal emptied');
    } finally {
      second.child.kill('SIGTERM');
      await second.exited;
    }
  } finally {
    await t.close();
    await w.close();
  }
});
