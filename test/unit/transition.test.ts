// The one transition function, table-driven over every state x event, plus the outcomes of
// an attempt per recipient.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { transition, type MessageView, type QueueEvent, type Decision } from '../../src/delivery/transition.js';
import type { Recipient } from '../../src/types.js';
import { refusalText } from '../../src/delivery/commands.js';

const rcpts: Recipient[] = [
  { address: 'a@example.org', status: 'accepted', reply: '250 ok' },
  { address: 'b@example.org', status: 'deferred', reply: '451 later' },
  { address: 'c@example.org', status: 'pending' },
];

const STATES: Record<string, MessageView> = {
  queued: { state: 'queued', reason: null, rcpts },
  deferred: { state: 'deferred', reason: null, rcpts },
  'in-flight': { state: 'in-flight', reason: null, rcpts },
  'held:needs-reauth': { state: 'held', reason: 'needs-reauth', rcpts },
  'held:quota': { state: 'held', reason: 'quota', rcpts },
  'held:operator': { state: 'held', reason: 'operator', rcpts },
  'held:transport': { state: 'held', reason: 'transport', rcpts },
  failed: {
    state: 'failed',
    reason: null,
    rcpts: rcpts.map((r) => (r.status === 'accepted' ? r : { ...r, status: 'rejected' as const, reply: '550 no' })),
  },
  corrupt: { state: 'corrupt', reason: null, rcpts: [] },
};

const retryAt = '2030-01-01T00:00:00.000Z';
const EVENTS: Record<string, QueueEvent> = {
  start: { type: 'start' },
  'outcome:transient': {
    type: 'outcome',
    outcome: 'transient',
    response: '421 try later',
    accepted: [],
    rejected: [],
    retryAt,
  },
  retry: { type: 'retry' },
  'retry --force': { type: 'retry', force: true },
  hold: { type: 'hold' },
  release: { type: 'release' },
  delete: { type: 'delete' },
  'account-hold:quota': { type: 'account-hold', reason: 'quota' },
  'account-hold:needs-reauth': { type: 'account-hold', reason: 'needs-reauth' },
  'account-ok': { type: 'account-ok' },
  park: { type: 'park', until: retryAt },
  'data-lost': { type: 'data-lost' },
};

/** refuse | after (the attempt in flight) | same | STATE[:REASON][!] (! = due now) | removed */
function code(d: Decision): string {
  if (d.kind === 'refuse') return 'refuse';
  if (d.kind === 'after-attempt') return 'after';
  if (d.kind === 'same') return 'same';
  return `${d.state}${d.state === 'held' ? `:${d.reason}` : ''}${d.dueNow ? '!' : ''}`;
}

// Columns in EVENTS order.
const TABLE: Record<string, string[]> = {
  //                  start        outcome     retry     retry--force  hold            release   delete     acct-hold:quota acct-hold:reauth   account-ok  park  data-lost
  queued: [
    'in-flight',
    'refuse',
    'queued!',
    'queued!',
    'held:operator',
    'refuse',
    'removed',
    'held:quota',
    'held:needs-reauth',
    'same',
    'queued',
    'failed',
  ],
  deferred: [
    'in-flight',
    'refuse',
    'queued!',
    'queued!',
    'held:operator',
    'refuse',
    'removed',
    'held:quota',
    'held:needs-reauth',
    'queued!',
    'deferred',
    'failed',
  ],
  'in-flight': [
    'refuse',
    'deferred',
    'after',
    'after',
    'after',
    'after',
    'after',
    'same',
    'same',
    'same',
    'same',
    'after',
  ],
  'held:needs-reauth': [
    'refuse',
    'refuse',
    'refuse',
    'refuse',
    'held:operator',
    'refuse',
    'removed',
    'held:quota',
    'same',
    'queued!',
    'same',
    'failed',
  ],
  'held:quota': [
    'refuse',
    'refuse',
    'refuse',
    'queued!',
    'held:operator',
    'refuse',
    'removed',
    'same',
    'held:needs-reauth',
    'queued!',
    'same',
    'failed',
  ],
  'held:operator': [
    'refuse',
    'refuse',
    'refuse',
    'refuse',
    'same',
    'queued!',
    'removed',
    'same',
    'same',
    'same',
    'same',
    'failed',
  ],
  // Only an operator moves it on: retry/release choose the transport again (e.g. after `transport: auto`); never expired.
  'held:transport': [
    'refuse',
    'refuse',
    'queued!',
    'queued!',
    'held:operator',
    'queued!',
    'removed',
    'same',
    'same',
    'same',
    'same',
    'failed',
  ],
  failed: [
    'refuse',
    'refuse',
    'queued!',
    'queued!',
    'refuse',
    'refuse',
    'removed',
    'same',
    'same',
    'same',
    'same',
    'same',
  ],
  corrupt: [
    'refuse',
    'refuse',
    'refuse',
    'refuse',
    'refuse',
    'refuse',
    'removed',
    'same',
    'same',
    'same',
    'same',
    'same',
  ],
};

test('every state x event: the table of decisions', () => {
  const events = Object.keys(EVENTS);
  const got: Record<string, string[]> = {};
  for (const [name, m] of Object.entries(STATES)) got[name] = events.map((e) => code(transition(m, EVENTS[e])));
  assert.deepEqual(got, TABLE);
});

test('no decision ever changes an accepted recipient', () => {
  for (const m of Object.values(STATES)) {
    for (const e of Object.values(EVENTS)) {
      const d = transition(m, e);
      if (d.kind !== 'change') continue;
      for (const r of m.rcpts.filter((x) => x.status === 'accepted')) {
        assert.deepEqual(
          d.rcpts.find((x) => x.address === r.address),
          r,
          `${m.state}/${m.reason} + ${e.type}`,
        );
      }
    }
  }
});

/** The operator's text for a refused decision (rendered by commands.ts from the code). */
function text(type: QueueEvent['type'], d: Decision): string {
  assert.equal(d.kind, 'refuse');
  return d.kind === 'refuse' ? refusalText(type, d.why) : '';
}

test('refusals are codes; the operator text says what to do instead', () => {
  const q = transition(STATES['held:quota'], EVENTS.retry);
  assert.deepEqual(q, { kind: 'refuse', why: { code: 'held', reason: 'quota' } });
  assert.match(text('retry', q), /--force/);
  assert.match(text('retry', transition(STATES['held:operator'], EVENTS.retry)), /queue release/);
  assert.match(text('retry', transition(STATES['held:needs-reauth'], EVENTS['retry --force'])), /authorize/);
  assert.match(text('retry', transition(STATES.corrupt, EVENTS.retry)), /corrupt.*queue delete/);
  assert.equal(text('hold', transition(STATES.failed, EVENTS.hold)), 'a failed message cannot be held');
  assert.equal(text('release', transition(STATES.queued, EVENTS.release)), 'not held (state queued)');
  assert.match(
    text('release', transition(STATES['held:quota'], EVENTS.release)),
    /^not held by an operator: .*daily sending limit/,
  );
});

const inFlight = (list: Recipient[]): MessageView => ({ state: 'in-flight', reason: null, rcpts: list });
const two: Recipient[] = [
  { address: 'a@example.org', status: 'pending' },
  { address: 'b@example.org', status: 'pending' },
];

test('outcome: a accepted and b deferred -> deferred, a accepted, next try as given', () => {
  const d = transition(inFlight(two), {
    type: 'outcome',
    outcome: 'transient',
    response: '451 4.3.0 b later',
    accepted: ['A@example.org'],
    rejected: [],
    retryAt,
  });
  assert.equal(d.kind, 'change');
  if (d.kind !== 'change') return;
  assert.equal(d.state, 'deferred');
  assert.equal(d.nextAttemptAt, retryAt);
  assert.deepEqual(
    d.rcpts.map((r) => r.status),
    ['accepted', 'deferred'],
  );
  assert.equal(d.countAttempt, true);
  assert.deepEqual(d.bounce, []);
});

test('outcome: every recipient accepted -> removed; per-recipient rejection -> bounced, others kept', () => {
  const all = transition(inFlight(two), {
    type: 'outcome',
    outcome: 'ok',
    response: '250 ok',
    accepted: ['a@example.org', 'b@example.org'],
    rejected: [],
    retryAt,
  });
  assert.equal(code(all), 'removed');
  const part = transition(inFlight(two), {
    type: 'outcome',
    outcome: 'ok',
    response: '250 ok',
    accepted: ['a@example.org'],
    rejected: [{ rcpt: 'b@example.org', response: '550 5.1.1 no such user' }],
    retryAt,
  });
  assert.equal(code(part), 'removed');
  assert.deepEqual(part.kind === 'change' && part.bounce, [{ rcpt: 'b@example.org', reply: '550 5.1.1 no such user' }]);
  assert.deepEqual(part.kind === 'change' && part.rcpts.map((r) => r.status), ['accepted', 'rejected']);
  assert.equal(part.kind === 'change' && part.bounceCode, 'rejected');
});

test('outcome: permanent -> failed with a bounce for the open recipients; quota / auth -> held without burning an attempt', () => {
  const p = transition(inFlight(two), {
    type: 'outcome',
    outcome: 'permanent',
    response: '554 5.7.0 policy',
    accepted: [],
    rejected: [],
    retryAt,
  });
  assert.equal(code(p), 'failed');
  assert.deepEqual(p.kind === 'change' && p.bounce?.map((b) => b.rcpt), ['a@example.org', 'b@example.org']);
  assert.equal(p.kind === 'change' && p.bounceCode, 'permanent');
  const q = transition(inFlight(two), {
    type: 'outcome',
    outcome: 'quota',
    response: '550 5.4.5 limit',
    accepted: [],
    rejected: [],
    retryAt,
  });
  assert.equal(code(q), 'held:quota');
  assert.equal(q.kind === 'change' && q.countAttempt, undefined);
  const recheckAt = '2029-01-01T00:00:00.000Z';
  const a = transition(inFlight(two), {
    type: 'outcome',
    outcome: 'auth',
    response: '535 5.7.8',
    accepted: [],
    rejected: [],
    retryAt,
    recheckAt,
  });
  assert.equal(code(a), 'held:needs-reauth');
  // The daemon looks again after the first retry step, should the account still report ok.
  assert.equal(a.kind === 'change' && a.nextAttemptAt, recheckAt);
  assert.equal(a.kind === 'change' && a.countAttempt, undefined);
});

test('outcome transport (the Gmail API cannot send to exactly the envelope) -> held:transport, no attempt burnt, not bounced, the reason kept', () => {
  const why = 'the To/Cc/Bcc headers name x@example.org, which is not in the envelope';
  const d = transition(inFlight(two), {
    type: 'outcome',
    outcome: 'transport',
    response: why,
    accepted: [],
    rejected: [],
    retryAt,
  });
  assert.equal(code(d), 'held:transport');
  if (d.kind !== 'change') return;
  assert.equal(d.countAttempt, undefined);
  assert.deepEqual(d.bounce, []);
  assert.equal(d.lastReply, why);
  assert.deepEqual(
    d.rcpts.map((r) => r.status),
    ['deferred', 'deferred'],
  );
  // Even past maxAge the transport hold keeps the mail: only an operator decides.
  const late = transition(inFlight(two), {
    type: 'outcome',
    outcome: 'transport',
    response: why,
    accepted: [],
    rejected: [],
    retryAt,
    expiry: 'gave up after 5d',
  });
  assert.equal(code(late), 'held:transport');
  assert.match(text('start', transition(STATES['held:transport'], EVENTS.start)), /transport to auto/);
});

test('outcome past maxAge: failed, every open recipient bounced with the reason', () => {
  const d = transition(inFlight(two), {
    type: 'outcome',
    outcome: 'transient',
    response: '421 later',
    accepted: ['a@example.org'],
    rejected: [],
    retryAt,
    expiry: 'gave up after 5d',
  });
  assert.equal(code(d), 'failed');
  if (d.kind !== 'change') return;
  assert.equal(d.failReason, 'gave up after 5d');
  assert.equal(d.bounceCode, 'expired');
  assert.deepEqual(d.bounce, [{ rcpt: 'b@example.org', reply: '421 later' }]);
  assert.deepEqual(
    d.rcpts.map((r) => r.status),
    ['accepted', 'rejected'],
  );
});

test('park (a rate limit): the message keeps its state and is next tried when the limit allows', () => {
  for (const m of [STATES.queued, STATES.deferred]) {
    const d = transition(m, EVENTS.park);
    assert.equal(d.kind, 'change');
    if (d.kind !== 'change') return;
    assert.equal(d.state, m.state);
    assert.equal(d.nextAttemptAt, retryAt);
    assert.ok(!d.dueNow && !d.countAttempt && !d.bounce);
    assert.deepEqual(d.rcpts, m.rcpts);
  }
});

test('retry of a failed message re-queues only the recipients that failed', () => {
  const d = transition(STATES.failed, { type: 'retry' });
  assert.equal(code(d), 'queued!');
  assert.deepEqual(d.kind === 'change' && d.rcpts.map((r) => `${r.address}=${r.status}`), [
    'a@example.org=accepted',
    'b@example.org=pending',
    'c@example.org=pending',
  ]);
  const done = transition(
    { state: 'failed', reason: null, rcpts: [{ address: 'a@example.org', status: 'accepted' }] },
    { type: 'retry' },
  );
  assert.equal(done.kind, 'refuse');
});

test('data-lost: every open recipient fails with the notice text, accepted ones stay, the code is data-lost', () => {
  for (const m of [STATES.deferred, STATES['held:needs-reauth'], STATES['held:operator']]) {
    const d = transition(m, { type: 'data-lost' });
    assert.equal(d.kind, 'change');
    if (d.kind !== 'change') return;
    assert.equal(d.state, 'failed');
    assert.equal(d.failCode, 'data-lost');
    assert.equal(d.bounceCode, 'data-lost');
    assert.match(d.failReason ?? '', /^message data lost on this host/);
    assert.ok(!d.countAttempt);
    assert.deepEqual(d.bounce, [
      { rcpt: 'b@example.org', reply: 'message data lost on this host' },
      { rcpt: 'c@example.org', reply: 'message data lost on this host' },
    ]);
    assert.deepEqual(d.rcpts[0], rcpts[0]);
  }
});
