// Server-rendered HTML for the console. Every value goes through esc(); nothing secret is
// ever passed in (views carry states, dates and redacted error texts only).
import type { AccountView, QueueSummary } from './ops.js';
import type { AttemptView } from './reauth.js';
import type { QueueRow } from '../../control/ops.js';
import { grantRisk } from '../../alerts/grants.js';
import { formatAge, formatRelative, formatSize } from '../../log/format.js';

export const esc = (s: unknown): string => String(s ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

export interface PageContext {
  csrf: string | null;
  /** Things a person must act on (alerts firing, accounts needing re-authorization). */
  attention: string[];
  flash?: { ok: boolean; text: string };
  loggedIn: boolean;
}

const CSS = `
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1b1f24;background:#f6f7f9}
header{background:#24292f;color:#fff;padding:.6em 1.5em;display:flex;gap:1.5em;align-items:center}
header a{color:#fff;text-decoration:none;font-weight:600}header .sp{flex:1}
header form{margin:0}header button{background:none;border:1px solid #8b949e;color:#fff}
main{padding:1em 1.5em;max-width:80em}
table{border-collapse:collapse;width:100%;background:#fff;margin:.5em 0 1.5em}
th,td{border-bottom:1px solid #d0d7de;padding:.4em .6em;text-align:left;vertical-align:top}
th{background:#eaeef2;font-weight:600}
.banner{background:#ffebe9;border:1px solid #cf222e;color:#82071e;padding:.7em 1em;margin:1em 0;border-radius:6px}
.banner ul{margin:.3em 0 0 1.2em;padding:0}
.ok-banner{background:#dafbe1;border:1px solid #1a7f37;color:#044f1e;padding:.7em 1em;margin:1em 0;border-radius:6px}
.flash-bad{background:#fff8c5;border:1px solid #9a6700;padding:.7em 1em;margin:1em 0;border-radius:6px}
.st{display:inline-block;padding:0 .5em;border-radius:1em;font-size:12px;font-weight:600}
.st-ok{background:#dafbe1;color:#1a7f37}.st-needs-reauth,.st-error,.st-held,.st-failed{background:#ffebe9;color:#cf222e}
.st-deferred,.st-warn{background:#fff8c5;color:#9a6700}.st-queued,.st-in-flight,.st-info{background:#ddf4ff;color:#0969da}
button{font:inherit;padding:.2em .8em;border-radius:6px;border:1px solid #8c959f;background:#f6f8fa;cursor:pointer}
button.primary{background:#1f883d;color:#fff;border-color:#1a7f37}
form.inline{display:inline}.muted{color:#57606a}.err{color:#82071e;font-size:12px;max-width:30em;word-break:break-word}
.counts span{display:inline-block;margin-right:1.5em}.counts b{font-size:18px}
code.url{display:block;word-break:break-all;background:#fff;border:1px solid #d0d7de;padding:.6em;margin:.5em 0}
input[type=text],input[type=password]{font:inherit;padding:.3em;width:100%;max-width:50em;box-sizing:border-box}
`;

/** `refreshSec`: the page reloads itself that often (a status page; no script needed). */
function layout(title: string, ctx: PageContext, body: string, refreshSec?: number): string {
  const banner = ctx.attention.length
    ? `<div class="banner" id="attention" role="alert"><b>Needs attention</b><ul>${ctx.attention.map((a) => `<li>${esc(a)}</li>`).join('')}</ul></div>`
    : '';
  const flash = ctx.flash
    ? `<div class="${ctx.flash.ok ? 'ok-banner' : 'flash-bad'}" id="flash">${esc(ctx.flash.text)}</div>`
    : '';
  const logout =
    ctx.loggedIn && ctx.csrf
      ? `<form method="post" action="/logout"><input type="hidden" name="csrf" value="${esc(ctx.csrf)}"><button>Log out</button></form>`
      : '';
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
${refreshSec ? `<meta http-equiv="refresh" content="${refreshSec}">` : ''}<title>${esc(title)} · xoauth2-bridge</title><style>${CSS}</style></head><body>
<header><span>xoauth2-bridge</span><a href="/accounts">Accounts</a><a href="/queue">Queue</a><span class="sp"></span>${logout}</header>
<main>${banner}${flash}${body}</main></body></html>\n`;
}

const state = (s: string) => `<span class="st st-${esc(s)}">${esc(s)}</span>`;
const csrfField = (ctx: PageContext) => `<input type="hidden" name="csrf" value="${esc(ctx.csrf ?? '')}">`;
const when = (iso: string | null, now: number) => {
  if (!iso) return '<span class="muted">—</span>';
  const rel = formatRelative(Date.parse(iso), now);
  return `<time datetime="${esc(iso)}" title="${esc(iso)}">${esc(rel)}</time>`;
};

export function loginPage(ctx: PageContext, error?: string): string {
  return layout(
    'Log in',
    ctx,
    `<h1>Log in</h1>${error ? `<div class="flash-bad" id="flash">${esc(error)}</div>` : ''}
<form method="post" action="/login"><p><label>Admin password<br><input type="password" name="password" autocomplete="current-password" autofocus required></label></p>
<p><button class="primary">Log in</button></p></form>
<p class="muted">Or, on the bridge host as the service's user: <code>xoauth2-bridge console-link</code>, and open the address it prints.</p>`,
  );
}

/** What a visitor without a session sees when the console has no password: how to get a link. */
export function linkPage(problem?: string): string {
  return layout(
    'Log in',
    { csrf: null, attention: [], loggedIn: false },
    `<h1>Log in with a one-time link</h1>${problem ? `<div class="flash-bad" id="flash">${esc(problem)}</div>` : ''}
<p>This console has no password (<code>http.adminPasswordHash</code>), so it opens only through a login link that the service's own user can get. On the bridge host run:</p>
<pre><code>runuser -u xoauth2-bridge -- xoauth2-bridge console-link</code></pre>
<p>(as the user the daemon runs as; any user that may use its control socket can) and open the address it prints in this browser. A link works once, for 5 minutes.</p>`,
  );
}

export function accountsPage(ctx: PageContext, accounts: AccountView[], warnAheadMs: number, now = Date.now()): string {
  const rows = accounts
    .map((a) => {
      const st = a.status;
      const risk = grantRisk(a.config, st, now, warnAheadMs);
      const user = a.config.oauth.type === 'user';
      const rtAge = st.refreshTokenIssuedAt ? formatAge(now - Date.parse(st.refreshTokenIssuedAt)) : '—';
      const authorize = user
        ? `<form class="inline" method="post" action="/accounts/${encodeURIComponent(a.config.name)}/authorize">${csrfField(ctx)}<button class="${st.state === 'ok' ? '' : 'primary'}">Authorize</button></form>`
        : '<span class="muted">service account</span>';
      return `<tr data-account="${esc(a.config.name)}"><td><b>${esc(a.config.name)}</b><br><span class="muted">${esc(a.config.email)}</span></td>
<td>${esc(a.config.provider)}</td><td class="state">${state(st.state)}</td><td>${when(st.accessTokenExpiresAt, now)}</td>
<td>${esc(rtAge)}</td><td>${risk.level === 'none' ? `<span class="muted">${esc(risk.text)}</span>` : `${state(risk.level)} ${esc(risk.text)}`}</td>
<td>${when(st.lastRefreshAt, now)}</td><td class="err">${esc(st.lastError ?? '')}</td>
<td class="held">${a.held ? `${a.queued} held (${esc(a.held)})` : String(a.queued)}</td><td>${authorize}</td></tr>`;
    })
    .join('\n');
  return layout(
    'Accounts',
    ctx,
    `<h1>Accounts</h1><table id="accounts"><thead><tr><th>Account</th><th>Provider</th><th>State</th><th>Access token expires</th><th>Refresh token age</th><th>Grant expiry risk</th><th>Last refresh</th><th>Last error</th><th>Messages</th><th></th></tr></thead>
<tbody>${rows}</tbody></table>
<p class="muted">Same facts without the console: <code>xoauth2-bridge token status</code>, <code>/readyz</code>, <code>/metrics</code>.</p>`,
  );
}

/** Whether the account's provider offers the device-code sign-in, or why not (one line for the page). */
export type DeviceOffer = { offered: true } | { offered: false; why: string };

export function authorizePage(
  ctx: PageContext,
  acct: { name: string; email: string },
  url: string,
  offer: DeviceOffer,
  error?: string,
): string {
  const account = acct.name;
  const a = encodeURIComponent(account);
  const device = offer.offered
    ? `<h2>Or sign in with a code</h2><p>Nothing to copy back: the bridge shows a code, you enter it at the provider's sign-in page on any device, and this page follows the sign-in by itself.</p>
<form method="post" action="/accounts/${a}/authorize/device">${csrfField(ctx)}<button id="device-start">Sign in with a code</button></form>`
    : `<p class="muted" id="no-device">${esc(offer.why)}</p>`;
  return layout(
    `Authorize ${account}`,
    ctx,
    `<h1>Authorize account ${esc(account)}</h1>${error ? `<div class="flash-bad" id="flash">${esc(error)}</div>` : ''}
<ol><li>Open this address in a browser and sign in as <b>${esc(acct.email)}</b>:<code class="url"><a id="consent-url" href="${esc(url)}" target="_blank" rel="noopener noreferrer">${esc(url)}</a></code></li>
<li>After you allow access, the browser is sent to <code>http://127.0.0.1:…/?state=…&amp;code=…</code>. That page usually fails to load (the bridge is not on your computer); that is expected.</li>
<li>Copy the whole address from the browser's address bar and paste it here:
<form method="post" action="/accounts/${a}/authorize/complete">${csrfField(ctx)}<p><input type="text" name="redirect" id="redirect" placeholder="http://127.0.0.1:…/?state=…&amp;code=…" required autocomplete="off"></p>
<p><button class="primary" id="complete">Complete authorization</button></p></form></li></ol>
<p class="muted">Same as <code>xoauth2-bridge authorize ${esc(account)} --manual</code>. The attempt expires after 15 minutes; <a href="/accounts">cancel</a>.</p>
${device}`,
  );
}

/** How often the device sign-in page reloads itself while the daemon polls. */
export const DEVICE_REFRESH_SEC = 2;

/** The device sign-in's status page: the code and where to enter it, then the outcome. */
export function devicePage(ctx: PageContext, account: string, email: string, a: AttemptView, now = Date.now()): string {
  const enc = encodeURIComponent(account);
  const title = `Authorize ${account} with a code`;
  if (a.settled) {
    const r = a.settled;
    const body = r.ok
      ? `<div class="ok-banner" id="device-status" role="status">Account ${esc(account)} authorized as ${esc(r.email)}; its held mail is being sent.</div>`
      : `<div class="flash-bad" id="device-status" role="status">Authorization of ${esc(account)} failed: ${esc(r.error)}</div>
<form method="post" action="/accounts/${enc}/authorize/device">${csrfField(ctx)}<button id="device-start">Get a new code</button></form>`;
    return layout(title, ctx, `<h1>${esc(title)}</h1>${body}<p><a href="/accounts">Back to the accounts</a></p>`);
  }
  // The URL comes from the identity platform: a link only when it is http(s); escaped either way.
  const link = /^https?:\/\//i.test(a.url)
    ? `<a id="verification-url" href="${esc(a.url)}" target="_blank" rel="noopener noreferrer">${esc(a.url)}</a>`
    : `<span id="verification-url">${esc(a.url)}</span>`;
  const left = a.expiresAt ? Math.max(0, Math.ceil((a.expiresAt - now) / 60e3)) : null;
  return layout(
    title,
    ctx,
    `<h1>${esc(title)}</h1>
<ol><li>On any device, open ${link}</li>
<li>Enter the code <code id="user-code" style="font-size:20px;font-weight:600;letter-spacing:.1em">${esc(a.userCode ?? '')}</code></li>
<li>Sign in as <b>${esc(email)}</b> and allow access.</li></ol>
<p class="st st-info" id="device-status" role="status">Waiting for you to enter the code…</p>
<p class="muted">This page checks again every ${DEVICE_REFRESH_SEC} seconds.${left !== null ? ` The code works for ${left} more minute(s).` : ''} Same as <code>xoauth2-bridge authorize ${esc(account)} --device</code>.</p>
<form method="post" action="/accounts/${enc}/authorize/cancel">${csrfField(ctx)}<button id="device-cancel">Cancel</button></form>`,
    DEVICE_REFRESH_SEC,
  );
}

function messageRow(ctx: PageContext, m: QueueRow, now: number, canHold: boolean): string {
  const act = (what: string, label: string) =>
    `<form class="inline" method="post" action="/queue/${encodeURIComponent(m.id)}/${what}">${csrfField(ctx)}<button name="do" value="${what}">${label}</button></form>`;
  const actions = [
    act('retry', 'Retry'),
    canHold ? (m.state === 'held' && m.reason === 'operator' ? act('release', 'Release') : act('hold', 'Hold')) : '',
    act('delete', 'Delete'),
  ].join(' ');
  const to = m.rcpts.map((x) => x.address);
  const rcpts = to.length === 1 ? to[0] : `${to[0] ?? ''} (+${to.length - 1})`;
  return `<tr data-id="${esc(m.id)}"><td><code>${esc(m.id)}</code></td><td>${esc(m.account ?? '?')}</td><td>${esc(m.from || '<>')}</td><td>${esc(rcpts)}</td>
<td>${esc(formatSize(m.size))}</td><td>${esc(formatAge(now - Date.parse(m.receivedAt ?? '')))}</td><td class="state">${state(m.state)}${m.reason ? `<br><span class="muted">${esc(m.reason)}</span>` : ''}</td>
<td>${m.attempts}</td><td>${m.state === 'held' ? '—' : when(m.nextAttemptAt, now)}</td><td class="err">${esc(m.lastReply ?? '')}</td><td>${actions}</td></tr>`;
}

export function queuePage(ctx: PageContext, q: QueueSummary, canHold: boolean, now = Date.now()): string {
  const c = q.counts;
  const waiting = q.rows.filter((m) => m.state === 'held' || m.state === 'deferred');
  const others = q.rows.length - waiting.length;
  return layout(
    'Queue',
    ctx,
    `<h1>Queue</h1><p class="counts" id="counts">${(['queued', 'deferred', 'in-flight', 'held', 'failed'] as const)
      .map((k) => `<span data-state="${k}"><b>${c[k]}</b> ${k}</span>`)
      .join(
        '',
      )}<span>oldest: <b id="oldest">${q.oldestAgeMs === null ? '—' : esc(formatAge(q.oldestAgeMs))}</b></span></p>
<h2>Held and deferred</h2>${
      waiting.length
        ? `<table id="messages"><thead><tr><th>ID</th><th>Account</th><th>From</th><th>To</th><th>Size</th><th>Age</th><th>State</th><th>Attempts</th><th>Next try</th><th>Last error</th><th></th></tr></thead><tbody>${waiting
            .map((m) => messageRow(ctx, m, now, canHold))
            .join('\n')}</tbody></table>`
        : '<p id="no-waiting" class="muted">Nothing is held or deferred.</p>'
    }${others ? `<p class="muted">${others} more message(s) queued for delivery now.</p>` : ''}
<p class="muted">Same facts without the console: <code>xoauth2-bridge queue list</code>, <code>/metrics</code>.</p>`,
  );
}

export function messagePage(status: number, text: string): string {
  return layout(
    String(status),
    { csrf: null, attention: [], loggedIn: false },
    `<h1>${esc(status)}</h1><p>${esc(text)}</p>`,
  );
}
