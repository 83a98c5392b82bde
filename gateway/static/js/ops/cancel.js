/* onsale: the dashboard's danger card (#cancel-card): cancelling the show, and how
 * far the cancellation has come. Cancelling takes a reason (every fan's email gives
 * it) and a confirmation step that names what follows: the sale closes, every
 * order is refunded in full, every ticket voided, every fan emailed; it cannot be
 * undone. It is sent once (POST /v1/ops/events/{id}/cancel, with its own
 * Idempotency-Key kept across retries). Whether the show is cancelled comes from
 * the event (`cancelled`, GET /v1/events/{id}: as the dashboard loaded it, then
 * every 10 s); once it is, the progress (GET /v1/ops/events/{id}/cancel: orders
 * refunded of those paid, refunds whose money is on its way or was refused, when it
 * finished) is read every second until it has finished, then every 5 s while
 * refunds are on their way. A show already cancelled when the page loads shows it
 * at once, with a banner at the top of the page. */

import { api, retryable } from '../api.js';
import { confirmStep } from '../confirm.js';
import { $, say, setText, show } from '../dom.js';
import { fmtDateTime, message, plural } from '../format.js';
import { enc, sleep, uuid } from '../util.js';
import { auditPoller, statsPoller } from './dashboard.js';
import { num, setFigure } from './format.js';
import { poller } from './poller.js';
import { forbidden } from './session.js';
import { dash, eventId, opsPath, session } from './state.js';

const REASON_MAX = 500;
const FAST_MS = 1000;
const SLOW_MS = 5000;
const WATCH_MS = 10000;

export const cancelPoller = poller(pollCancel);

/* the cancellation as last read: undefined (not known yet), null (not cancelled) */
let cancellation;
let busy = false;
let told = 0; // bumped when a POST's answer says the show is cancelled: older reads give way

/** Whether the show is cancelled, as the event says (the dashboard's copy first). */
async function isCancelled() {
  if (cancellation === undefined && dash.event) return !!dash.event.cancelled;
  const r = await api('GET', `/v1/events/${enc(eventId)}`);
  return r.ok && r.data ? !!r.data.cancelled : null;
}

async function pollCancel() {
  const asOf = told;
  if (!cancellation) {
    /* not known to be cancelled: the event says whether it is (the progress would answer 404 until then) */
    const cancelled = await isCancelled();
    if (!session.active) return null;
    if (asOf !== told) return 0;
    if (cancelled === false) {
      cancellation = null;
      renderCancel();
      return WATCH_MS;
    }
    if (cancelled === null) return WATCH_MS;
  }
  const r = await api('GET', `${opsPath}/cancel`);
  if (!session.active) return null;
  if (asOf !== told) return 0;
  if (r.ok && r.data) {
    cancellation = r.data;
    renderCancel();
    if (!r.data.finished_at) return FAST_MS;
    return r.data.refunds_pending > 0 ? SLOW_MS : null;
  }
  if (r.status === 404) {
    /* not cancelled after all (an event that does not exist is the dashboard's to say) */
    cancellation = null;
    renderCancel();
    return WATCH_MS;
  }
  if (r.status === 401) return null;
  if (r.status === 403) {
    forbidden();
    return null;
  }
  say('cancel-message', `The cancellation’s state could not be read (${message(r.error)}). Retrying…`, 'info');
  return r.retryAfter != null ? Math.max(1000, r.retryAfter * 1000) : 3000;
}

function renderCancel() {
  const c = cancellation;
  show($('cancel-loading'), c === undefined);
  show($('cancel-form'), c === null);
  show($('cancel-progress'), !!c);
  show($('cancelled-banner'), !!c);
  $('cancel-button').disabled = busy || c !== null;
  $('cancel-card').dataset.state = c === undefined ? '' : c ? (c.finished_at ? 'finished' : 'refunding') : 'live';
  if (!c) return;
  const total = Number(c.orders_total) || 0;
  const done = Number(c.orders_refunded) || 0;
  const pending = Number(c.refunds_pending) || 0;
  const failed = Number(c.refunds_failed) || 0;
  const meter = $('cancel-meter');
  meter.max = Math.max(1, total);
  meter.value = total ? Math.min(done, total) : c.finished_at ? 1 : 0;
  setFigure('cancel-refunded', done, `${num(done)} of ${num(total)}`);
  setFigure('cancel-pending', pending, num(pending));
  setFigure('cancel-failed', failed, num(failed));
  $('figure-cancel-failed').dataset.warn = String(failed > 0);
  let status;
  if (!c.finished_at) status = `Refunding: ${num(done)} of ${plural(total, 'order', 'orders')} so far…`;
  else if (!total) status = 'Finished: no order had been paid, so nobody needed a refund.';
  else status = `Finished: every order is refunded (${num(done)} of ${num(total)}).`;
  setText($('cancel-status'), status);
  /* "being refunded" is old news once the status line says it finished */
  if (c.finished_at && $('cancel-message').dataset.kind === 'ok') say('cancel-message', '', '');
  $('cancel-progress').dataset.finished = String(!!c.finished_at);
  let money = '';
  if (pending) money = `${plural(pending, 'refund is', 'refunds are')} still on the way to fans’ cards.`;
  else if (c.finished_at && total) money = 'Every refund has reached the card it was paid with.';
  if (failed) money = `${money} ${plural(failed, 'refund was', 'refunds were')} refused by the card’s bank: try them again through the API (POST /v1/ops/refunds/{refund_id}/retry).`.trim();
  setText($('cancel-money'), money);
  setText($('cancel-reason-shown'), c.reason);
  const times = [`Cancelled ${fmtDateTime(c.started_at)}`];
  if (c.finished_at) times.push(`finished ${fmtDateTime(c.finished_at)}`);
  setText($('cancel-times'), times.join(' · '));
  setText($('cancelled-banner-text'), c.finished_at
    ? 'This show is cancelled: every order is refunded and every ticket void.'
    : `This show is being cancelled: ${num(done)} of ${plural(total, 'order', 'orders')} refunded so far.`);
}

/* ---------- cancelling ---------- */

/** The reason as sent: one paragraph (the API takes no line breaks), trimmed. */
function reasonOf(input) {
  return input.value.replace(/\s+/g, ' ').trim();
}

function reasonError(text) {
  const input = $('cancel-reason');
  setText($('cancel-error'), text || '');
  if (text) input.setAttribute('aria-invalid', 'true');
  else input.removeAttribute('aria-invalid');
}

function countChars() {
  const n = reasonOf($('cancel-reason')).length;
  setText($('cancel-count'), `${num(n)} of ${num(REASON_MAX)} characters`);
  $('cancel-count').dataset.over = String(n > REASON_MAX);
}

async function submitCancel() {
  if (busy || cancellation !== null) return;
  const input = $('cancel-reason');
  const button = $('cancel-button');
  const reason = reasonOf(input);
  if (!reason) {
    reasonError('Say why the show is cancelled: every fan’s email gives this reason.');
    input.focus();
    return;
  }
  if (reason.length > REASON_MAX) {
    reasonError(`The reason is ${num(reason.length)} characters long; it may be at most ${num(REASON_MAX)}.`);
    input.focus();
    return;
  }
  reasonError('');
  const name = dash.event ? dash.event.name : 'this show';
  const paid = dash.stats && dash.stats.orders ? Number(dash.stats.orders.paid) : null;
  const ok = await confirmStep(
    {
      title: `Cancel “${name}”?`,
      text: 'The sale closes now. Every order is refunded in full, with no fee. Every ticket is voided: it no longer admits anyone at the door. Every fan who bought is emailed, with your reason.',
      note: `This cannot be undone.${Number.isFinite(paid) ? ` ${plural(paid, 'paid order is', 'paid orders are')} refunded.` : ''} Reason: “${reason}”`,
      yes: 'Cancel the show',
      no: 'Keep the show',
      danger: true,
    },
    button
  );
  if (!ok) {
    say('cancel-message', 'Not cancelled: nothing changed.', 'info');
    return;
  }
  busy = true;
  renderCancel();
  say('cancel-message', 'Cancelling the show…', 'info');
  const key = uuid();
  let r;
  try {
    for (let tries = 0; tries < 4; tries++) {
      r = await api('POST', `${opsPath}/cancel`, { body: { reason }, idempotencyKey: key });
      if (r.ok || !retryable(r)) break;
      await sleep((r.retryAfter != null ? Math.max(1, r.retryAfter) : 1 + tries) * 1000);
    }
  } finally {
    busy = false;
  }
  if (!session.active) return;
  if (r.ok && r.data) {
    told++;
    cancellation = r.data;
    renderCancel();
    say('cancel-message', 'The show is cancelled. Its orders are being refunded; this card follows them.', 'ok');
    $('cancel-progress').focus();
    cancelPoller.start();
    statsPoller.kick();
    auditPoller.kick();
    return;
  }
  renderCancel();
  const e = r.error || {};
  say('cancel-message', `Refused (${r.status ? `${r.status} ` : ''}${e.code || 'error'}): ${e.message || message(e)}`, 'error');
  if (r.status === 422) reasonError(e.message || message(e));
  $('cancel-message').focus();
}

export function wireCancel() {
  $('cancel-form').addEventListener('submit', (e) => {
    e.preventDefault();
    submitCancel();
  });
  $('cancel-reason').addEventListener('input', () => {
    countChars();
    if ($('cancel-reason').getAttribute('aria-invalid')) reasonError('');
  });
  countChars();
}

/** Forgets what was read (another account signed in, or the dashboard stopped). */
export function resetCancel() {
  cancellation = undefined;
  renderCancel();
}
