/* onsale: the fan's waiting room for one event, at /e/{event_id}: the page's entry
 * module. It signs in, loads the event, wires every control and starts the live
 * updates; the parts live beside it (state, request, seatmap, join, checkout, live,
 * render, tickets). */

import { api, onAccountChange, token } from '../api.js';
import { $, pageError, setText, show } from '../dom.js';
import { fmtDateTime, message } from '../format.js';
import { accountBar, fanSignIn } from '../signin.js';
import { enc, sleep } from '../util.js';
import { formatExpiry, pay } from './checkout.js';
import { join, leave, renderJoinMode, resendConfirmation } from './join.js';
import { live } from './live.js';
import { render, renderSale, tick } from './render.js';
import { forgetRequest, restoreRequest } from './request.js';
import { loadSeats, markMine, wireSeatMap } from './seatmap.js';
import { BACKOFF_MAX_S, eventId, state } from './state.js';
import { loadTickets } from './tickets.js';

async function loadEvent() {
  for (let attempt = 0; ; attempt++) {
    const r = await api('GET', `/v1/events/${enc(eventId)}`);
    if (r.ok) {
      state.event = r.data;
      break;
    }
    if (r.status === 404 || r.status === 400) {
      setText($('event-name'), 'Event not found');
      setText($('event-meta'), 'This event does not exist, or its link is wrong.');
      $('event-name').dataset.state = 'not-found';
      show($('sale'), false);
      show($('join'), false);
      show($('auth'), false);
      show($('seatmap'), false);
      return false;
    }
    pageError(`${message(r.error)} Retrying…`);
    await sleep(Math.min(BACKOFF_MAX_S, 2 ** attempt) * 1000);
  }
  pageError('');
  const ev = state.event;
  setText($('event-name'), ev.name);
  document.title = `${ev.name} · onsale`;
  for (const el of document.querySelectorAll('.max-per-fan')) setText(el, String(ev.max_per_fan));
  const q = $('best-quantity');
  q.max = String(ev.max_per_fan);
  if (Number(q.value) > ev.max_per_fan) q.value = String(ev.max_per_fan);
  renderMeta();
  api('GET', `/v1/venues/${enc(ev.venue_id)}`).then((v) => {
    if (v.ok && v.data && v.data.name) {
      state.venueName = v.data.name;
      renderMeta();
    }
  });
  return true;
}

function renderMeta() {
  const ev = state.event;
  if (!ev) return;
  const parts = [];
  if (state.venueName) parts.push(state.venueName);
  parts.push(fmtDateTime(ev.starts_at));
  setText($('event-meta'), parts.join(' · '));
}

async function onAccount(next) {
  live.stop();
  live.started = false;
  state.request = null;
  state.position = null;
  state.order = null;
  state.ended = false;
  show($('unverified'), false);
  markMine();
  render();
  loadTickets(true);
  if (next) {
    await restoreRequest();
    live.start();
  } else {
    live.start();
  }
}

async function main() {
  accountBar($('account'));
  fanSignIn($('auth'), 'Sign in to join the line');
  wireSeatMap();
  $('join-form').addEventListener('submit', join);
  $('resend-link').addEventListener('click', resendConfirmation);
  for (const r of document.querySelectorAll('input[name="mode"]')) r.addEventListener('change', renderJoinMode);
  $('leave').addEventListener('click', () => leave('leave'));
  $('release').addEventListener('click', () => leave('release'));
  $('checkout-form').addEventListener('submit', pay);
  $('join-again').addEventListener('click', () => {
    forgetRequest();
    const first = $('mode-best').checked ? $('best-quantity') : $('mode-pick');
    setTimeout(() => first.focus(), 0);
  });
  $('card-expiry').addEventListener('input', formatExpiry);
  onAccountChange((next) => onAccount(next));
  window.addEventListener('online', () => live.reconnectNow());
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') live.reconnectNow();
  });
  setInterval(tick, 250);

  if (!eventId) {
    setText($('event-name'), 'No event given');
    return;
  }
  renderSale();
  render();
  const found = await loadEvent();
  if (!found) return;
  renderSale();
  render();
  await loadSeats(0);
  renderJoinMode();
  loadTickets(true);
  if (token()) await restoreRequest();
  render();
  live.start();
}

/* for the browser test and for debugging: what the page believes */
window.onsaleState = state;

main().catch((e) => {
  console.error(e);
  pageError('Something went wrong on this page. Reload it to try again.');
});
