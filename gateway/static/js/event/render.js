/* onsale: what the waiting room shows: the sale's state and countdown, which card
 * is up (sign in, join, in line, held, confirmed, ended), the place in line, the
 * hold and its clock, the confirmation (whose paid order shows its tickets, in
 * tickets.js) and why a request ended. */

import { email, token } from '../api.js';
import { now } from '../clock.js';
import { $, say, setText, show } from '../dom.js';
import { fmtClock, fmtDateTime, fmtMoney, fmtNumber, fmtWait, plural } from '../format.js';
import { load } from '../util.js';
import { findOrder, paying } from './checkout.js';
import { describeAsk, joining } from './join.js';
import { noteOrder } from './tickets.js';
import { JOINABLE, TERMINAL, isLive, onsaleAt, priceOf, saleState, seatLabel, state, totalOf } from './state.js';

const SALE_TEXT = {
  scheduled: 'The sale has not started yet. You can join the pre-queue now.',
  drawing: 'The sale is opening: places in the pre-queue are being drawn…',
  open: 'On sale now',
  paused: 'The sale is paused. You keep your place in line.',
  sold_out: 'Sold out',
  closed: 'The sale is closed.',
};

/** The sale's state, or, before the server said, what the event's time implies. */
function shownSaleState() {
  const s = saleState();
  if (s) return s;
  const at = onsaleAt();
  return at && at > now() ? 'scheduled' : '';
}

function saleText() {
  const s = shownSaleState();
  const at = onsaleAt();
  if (s === 'scheduled' && at != null && at <= now()) return 'The sale is opening…';
  if (s === 'paused' && !isLive(state.request)) return 'The sale is paused. The line keeps its order.';
  if (s === 'sold_out' && state.request && state.request.state === 'confirmed') return 'Sold out. You got your seats.';
  return SALE_TEXT[s] || '';
}

export function renderSale() {
  const s = saleState();
  const el = $('sale-state');
  const at = onsaleAt();
  const guessed = shownSaleState();
  el.dataset.state = s || '';
  setText(el, saleText());
  show($('countdown-box'), guessed === 'scheduled' && at != null);
  setText($('onsale-at'), at ? `On sale ${fmtDateTime(new Date(at).toISOString())}` : '');
  show($('sold-out-note'), s === 'sold_out');
  tick();
}

export function render() {
  const signedIn = !!token();
  const req = state.request;
  const st = req ? req.state : null;
  const s = saleState();
  const joinable = !s || JOINABLE.has(s);

  show($('auth'), !signedIn && !!state.event);
  show($('join'), signedIn && !!state.event && !req && joinable);
  show($('line'), signedIn && (st === 'prequeue' || st === 'queued'));
  show($('hold'), signedIn && (st === 'held' || st === 'paying'));
  show($('confirmation'), signedIn && st === 'confirmed');
  show($('ended'), signedIn && !!req && TERMINAL.has(st) && st !== 'confirmed');
  $('join-button').disabled = joining;

  if (st === 'prequeue' || st === 'queued') renderLine();
  if (st === 'held' || st === 'paying') renderHold();
  if (st === 'confirmed') renderConfirmation();
  if (req && TERMINAL.has(st) && st !== 'confirmed') renderEnded();
  renderSaleText();
}

function renderSaleText() {
  setText($('sale-state'), saleText());
}

export function renderLine() {
  const req = state.request;
  if (!req) return;
  const pre = req.state === 'prequeue';
  setText($('line-title'), pre ? 'You are in the pre-queue' : 'You are in line');
  show($('prequeue-note'), pre);
  const p = state.position;
  const hasPosition = !pre && p && p.position != null;
  show($('line-stats'), !!hasPosition);
  setText($('asked-for'), describeAsk(state.ask));
  if (!hasPosition) return;
  const posEl = $('position');
  setText(posEl, fmtNumber(p.position));
  posEl.dataset.position = String(p.position);
  const paused = saleState() === 'paused';
  let eta = '–';
  if (paused) eta = 'paused';
  else if (p.eta_seconds != null) eta = p.position === 0 ? 'any moment now' : fmtWait(p.eta_seconds);
  setText($('eta'), eta);
  const first = Math.max(load(`onsale.first.${req.request_id}`) || 0, p.position);
  const bar = $('progress');
  const max = Math.max(1, first);
  bar.max = max;
  bar.value = first === 0 ? 1 : first - p.position;
  bar.setAttribute('aria-valuetext', first ? `${fmtNumber(first - p.position)} of ${fmtNumber(first)} fans ahead of you served` : 'at the front');
  let odds;
  const left = p.seats_left;
  const leftText = left == null ? '' : left === 0
    ? '; no seats left right now (holds that run out come back)'
    : `; ${plural(left, 'seat', 'seats')} left`;
  if (p.position === 0) odds = `You are at the front of the line${leftText}.`;
  else odds = `about ${plural(p.position, 'fan', 'fans')} ahead of you${leftText}`;
  setText($('odds'), odds);
  document.title = `${fmtNumber(p.position)} ahead · ${state.event ? state.event.name : 'onsale'}`;
}

function chips(listId, ids) {
  const ul = $(listId);
  const key = ids.join(',');
  if (ul.dataset.seats === key) return;
  ul.dataset.seats = key;
  ul.replaceChildren(
    ...ids.map((id) => {
      const li = document.createElement('li');
      li.className = 'chip';
      li.dataset.seatId = id;
      const p = priceOf(id);
      li.textContent = seatLabel(id) + (p != null ? ` · ${fmtMoney(p)}` : '');
      return li;
    })
  );
}

export function renderHold() {
  const req = state.request;
  if (!req) return;
  const ids = req.seats || [];
  const hold = $('hold');
  hold.dataset.seats = ids.join(',');
  chips('hold-seats', ids);
  const isPaying = req.state === 'paying';
  const left = holdLeft();
  const expired = left === 0;
  setText($('hold-countdown'), left == null ? '–:––' : fmtClock(left));
  const busy = paying || isPaying || expired;
  for (const id of ['card-number', 'card-expiry', 'card-cvc']) $(id).readOnly = busy;
  const payButton = $('pay');
  payButton.disabled = busy;
  $('release').disabled = busy;
  const total = totalOf(ids);
  setText(payButton, isPaying || paying ? 'Paying…' : total != null ? `Pay ${fmtMoney(total)}` : 'Pay');
  if (isPaying && !paying) {
    const m = $('checkout-message');
    if (!m.textContent || m.dataset.kind !== 'info') say('checkout-message', 'Waiting for your bank…', 'info');
  }
}

function holdLeft() {
  const req = state.request;
  if (!req || !req.hold_expires_at) return null;
  const t = Date.parse(req.hold_expires_at);
  return Number.isNaN(t) ? null : Math.max(0, t - now());
}

export function renderConfirmation() {
  const req = state.request;
  if (!req) return;
  const ids = req.seats && req.seats.length ? req.seats : (state.order && state.order.seats) || [];
  $('confirmation').dataset.seats = ids.join(',');
  chips('confirmation-seats', ids);
  setText($('confirmation-email'), email() || 'your email address');
  const order = state.order && state.order.request_id === req.request_id ? state.order : null;
  setText($('order-id'), order ? order.order_id : '–');
  setText($('order-amount'), order && order.amount_cents != null ? `, ${fmtMoney(order.amount_cents, order.currency)} paid.` : '');
  if (!order) findOrder(req.request_id);
  else noteOrder(order);
}

const REASONS = {
  sold_out: 'it sold out before your turn came',
  seat_unavailable: 'a seat you picked was taken before your turn came',
  no_adjacent_seats: 'there were not enough seats together for your request',
  over_limit: 'it asked for more tickets than one fan may buy',
  conflict: 'it conflicted with another request of yours',
  sale_closed: 'the sale closed before your turn came',
  hold_ended: 'the hold ended',
};

function renderEnded() {
  const req = state.request;
  const s = saleState();
  const texts = {
    expired: ['Your hold ran out', 'Your hold ran out; the seats went back on sale.'],
    released: ['You released your seats', 'Your seats went back on sale, and you left the line.'],
    cancelled: ['Your request was cancelled', 'You left the line.'],
    rejected: [
      'We could not get you seats',
      `Your request was not served: ${REASONS[req.reason] || (req.reason ? req.reason.replace(/_/g, ' ') : 'no reason was given')}.`,
    ],
  }[req.state] || ['Your request has ended', ''];
  setText($('ended-title'), texts[0]);
  const open = !s || JOINABLE.has(s);
  setText($('ended-message'), texts[1] + (open ? ' The sale is still on: you can join the line again.' : ''));
  $('ended').dataset.state = req.state;
  show($('join-again'), open);
}

/* ----- the clock: countdowns ----- */

export function tick() {
  const at = onsaleAt();
  const box = $('countdown-box');
  if (at != null && !box.hidden) {
    const left = at - now();
    setText($('countdown'), fmtClock(left));
    $('countdown').dataset.ms = String(Math.max(0, left));
    if (left <= 0) renderSaleText();
  }
  const req = state.request;
  if (req && (req.state === 'held' || req.state === 'paying')) {
    const left = holdLeft();
    const el = $('hold-countdown');
    setText(el, left == null ? '–:––' : fmtClock(left));
    el.dataset.urgent = left != null && left < 60000 ? 'true' : 'false';
    if (left === 0 && req.state === 'held' && !paying) {
      const m = $('checkout-message');
      if (m.dataset.kind !== 'ended') say('checkout-message', 'Your hold has run out.', 'ended');
      renderHold();
    }
  }
}
