/* onsale: joining the line (best available, or the seats picked on the map, with
 * one Idempotency-Key per attempt), leaving it, and releasing held seats; when the
 * sale needs a confirmed email address, saying so and sending the link again. */

import { api, refreshSession, retryable, token } from '../api.js';
import { $, say, show } from '../dom.js';
import { message, plural } from '../format.js';
import { enc, sleep, uuid } from '../util.js';
import { resendLink } from '../verification.js';
import { render } from './render.js';
import { adoptRequest } from './request.js';
import { paintSeat, renderPicked } from './seatmap.js';
import { BACKOFF_MAX_S, eventId, seatLabel, state } from './state.js';

/** Shows the fields of the mode chosen: best available, or picked seats. */
export function renderJoinMode() {
  const pick = $('mode-pick').checked;
  show($('best-fields'), !pick);
  show($('pick-fields'), pick);
  if (pick) renderPicked();
}

function buildAsk() {
  const max = state.event ? state.event.max_per_fan : 50;
  if ($('mode-pick').checked) {
    const seats = Array.from(state.selected);
    if (!seats.length) {
      say('join-message', 'Pick at least one seat on the seat map, or choose best available.', 'error');
      return null;
    }
    return { seats };
  }
  const qInput = $('best-quantity');
  const quantity = Number(qInput.value);
  qInput.removeAttribute('aria-invalid');
  if (!Number.isInteger(quantity) || quantity < 1 || quantity > max) {
    qInput.setAttribute('aria-invalid', 'true');
    say('join-message', `Ask for 1 to ${max} seats.`, 'error');
    qInput.focus();
    return null;
  }
  const ask = { quantity };
  const section = $('best-section').value;
  if (section) ask.section = section;
  return ask;
}

export function describeAsk(ask) {
  if (!ask) return '';
  if (ask.seats) return `You asked for ${ask.seats.map(seatLabel).join('; ')}.`;
  const where = ask.section ? ` in ${ask.section}` : '';
  return `You asked for the best ${plural(ask.quantity, 'seat', 'seats')} available${where}.`;
}

/** Waits `seconds`, counting down in a message. */
export async function countdownMessage(id, prefix, seconds) {
  for (let s = seconds; s > 0; s--) {
    say(id, `${prefix}, retrying in ${s} s…`, 'info');
    await sleep(1000);
  }
}

/** A join is being sent. */
export let joining = false;

export async function join(e) {
  e.preventDefault();
  if (joining) return;
  if (!token()) {
    say('join-message', 'Please sign in first.', 'error');
    return;
  }
  const ask = buildAsk();
  if (!ask) return;
  joining = true;
  const button = $('join-button');
  button.disabled = true;
  const key = uuid(); // one attempt: every retry of it carries the same key
  say('join-message', 'Joining the line…', 'info');
  show($('unverified'), false);
  let refreshedForEmail = false;
  try {
    for (let attempt = 0; attempt < 30; attempt++) {
      const r = await api('POST', `/v1/events/${enc(eventId)}/requests`, { body: ask, idempotencyKey: key });
      if (r.ok) {
        const d = r.data;
        say('join-message', '', '');
        state.selected.clear();
        for (const entry of state.seats.values()) paintSeat(entry);
        adoptRequest(
          {
            request_id: d.request_id,
            event_id: eventId,
            state: d.queue_number == null ? 'prequeue' : 'queued',
            queue_number: d.queue_number == null ? undefined : d.queue_number,
            position: d.position == null ? undefined : d.position,
          },
          ask
        );
        return;
      }
      if (r.status === 429) {
        await countdownMessage('join-message', 'Too many requests', Math.max(1, r.retryAfter != null ? r.retryAfter : 2));
        continue;
      }
      if (retryable(r)) {
        const wait = r.retryAfter != null ? Math.max(1, r.retryAfter) : Math.min(BACKOFF_MAX_S, 2 ** attempt);
        await countdownMessage('join-message', message(r.error).replace(/\.$/, ''), wait);
        continue;
      }
      const code = r.error.code;
      if (code === 'email_unverified') {
        /* confirmed since the token was issued (in another tab, say)? A refreshed
         * token says so: one more try with it. */
        if (!refreshedForEmail && (await refreshSession())) {
          refreshedForEmail = true;
          continue;
        }
        say('join-message', 'Your email address is not confirmed yet.', 'error');
        show($('unverified'), true);
        $('unverified').scrollIntoView({ block: 'nearest' });
        return;
      }
      if (code === 'already_in_line' && r.error.request_id) {
        say('join-message', message(r.error), 'info');
        const existing = await api('GET', `/v1/requests/${enc(r.error.request_id)}`);
        if (existing.ok) adoptRequest(existing.data);
        return;
      }
      if (code === 'sold_out' || code === 'sale_closed') {
        state.sale = Object.assign({}, state.sale, { state: code === 'sold_out' ? 'sold_out' : 'closed' });
      }
      let text = message(r.error);
      if (code === 'over_limit' && state.event) {
        text = `That is more than the ${state.event.max_per_fan} tickets one fan may buy for this event` +
          (r.error.message ? ` (${r.error.message}).` : '.');
      }
      say('join-message', text, 'error');
      render();
      return;
    }
    say('join-message', 'The line is very busy; please try again in a moment.', 'error');
  } finally {
    joining = false;
    button.disabled = false;
  }
}

/** Sends the confirmation link again (the "unverified" note's button). */
export async function resendConfirmation() {
  const button = $('resend-link');
  /* aria-disabled, not disabled: a disabled button drops the keyboard's focus to
   * the top of the page */
  if (button.getAttribute('aria-disabled') === 'true') return;
  button.setAttribute('aria-disabled', 'true');
  say('resend-message', 'Sending…', 'info');
  const r = await resendLink();
  say('resend-message', r.text, r.ok ? 'ok' : 'error');
  button.removeAttribute('aria-disabled');
  if (r.verified) {
    show($('unverified'), false);
    say('join-message', 'Your email address is confirmed: join the line now.', 'ok');
    $('join-button')?.focus();
  }
}

/** Leaves the line ('leave') or releases the held seats ('release'), once confirmed. */
export async function leave(kind) {
  const req = state.request;
  if (!req) return;
  const question =
    kind === 'release'
      ? 'Release your seats? They go back on sale at once and you leave the line.'
      : 'Leave the line? You lose your place.';
  if (!window.confirm(question)) return;
  const msgId = kind === 'release' ? 'checkout-message' : 'line-message';
  say(msgId, kind === 'release' ? 'Releasing your seats…' : 'Leaving the line…', 'info');
  for (let attempt = 0; attempt < 5; attempt++) {
    const r = await api('DELETE', `/v1/requests/${enc(req.request_id)}`);
    if (r.ok) {
      say(msgId, '', '');
      adoptRequest(r.data);
      return;
    }
    if (!retryable(r)) {
      say(msgId, message(r.error), 'error');
      return;
    }
    await sleep((r.retryAfter != null ? Math.max(1, r.retryAfter) : 2 ** attempt) * 1000);
  }
  say(msgId, 'That did not go through; please try again.', 'error');
}
