/* onsale: /orders: the signed-in fan's orders, newest first (GET /v1/orders), each
 * with its event, dates, state, amount and seats; its money (invoice, refund policy,
 * asking for a refund, its refunds and credit notes: refunds.js); and for a paid or
 * refunded order its tickets (QR code, seat, state; built by tickets.js) with a
 * "Reissue" per valid ticket: after a confirmation step, POST
 * /v1/tickets/{id}/reissue, and the new QR code takes the old one's place. The list
 * is read again while an order is pending, a paid order's tickets are being issued
 * or a refund's money is on its way, and when the tab comes back. */

import { api, onAccountChange, retryable, token } from './api.js';
import { confirmStep, wireConfirm } from './confirm.js';
import { $, h, pageError, setText, show } from './dom.js';
import { fmtDateTime, fmtMoney, fmtSeat, fmtSeatSpoken, message, plural } from './format.js';
import { fillMoney, moneyBox, refundsPending } from './refunds.js';
import { accountBar, fanSignIn } from './signin.js';
import { renderTickets, ticketMessage } from './tickets.js';
import { enc, sleep } from './util.js';

const ORDER_STATE = {
  paid: 'Paid',
  partially_refunded: 'Partly refunded',
  pending: 'Payment pending',
  declined: 'Declined',
  refunded: 'Refunded',
  cancelled: 'Cancelled',
};

const REASON = {
  card_declined: 'the card was declined',
  hold_ended: 'the payment arrived after the hold had ended',
};

let orders = []; // as GET /v1/orders, newest first
const events = new Map(); // event_id -> Promise<event | null>
const known = new Map(); // event_id -> event, once read
let account = 0; // bumped on every change of account
let timer = null;
let reissuing = false;

function ticketsOf(o) {
  return Array.isArray(o.tickets) ? o.tickets : [];
}

/* ---------- reading ---------- */

async function load() {
  const mine = account;
  clearTimeout(timer);
  if (!token()) return;
  for (let attempt = 0; mine === account; attempt++) {
    const r = await api('GET', '/v1/orders');
    if (mine !== account) return;
    if (r.ok && r.data && Array.isArray(r.data.orders)) {
      pageError('');
      orders = r.data.orders;
      render();
      /* a pending payment or tickets being issued: look again soon; a refund's money on its way: now and then */
      const moving = orders.some((o) => o.state === 'pending' || (o.state === 'paid' && !ticketsOf(o).length));
      if (moving) timer = setTimeout(load, 3000);
      else if (orders.some(refundsPending)) timer = setTimeout(load, 5000);
      return;
    }
    if (r.status === 401) return; // signed out: the sign-in box shows
    if (!retryable(r)) {
      setText($('orders-status'), `Your orders could not be loaded: ${message(r.error)}`);
      return;
    }
    const wait = r.retryAfter != null ? Math.max(1, r.retryAfter) : Math.min(15, 2 ** attempt);
    setText($('orders-status'), `Your orders could not be loaded (${message(r.error)}) Retrying in ${wait} s…`);
    await sleep(wait * 1000);
  }
}

function eventOf(id) {
  let p = events.get(id);
  if (!p) {
    p = api('GET', `/v1/events/${enc(id)}`, { auth: false }).then((r) => {
      if (r.ok && r.data) {
        known.set(id, r.data);
        return r.data;
      }
      events.delete(id); // asked again at the next render
      return null;
    });
    events.set(id, p);
  }
  return p;
}

/* ---------- drawing ---------- */

function render() {
  const list = $('orders');
  setText($('orders-status'), orders.length ? plural(orders.length, 'order', 'orders') : '');
  show($('orders-status'), orders.length > 0);
  show($('orders-empty'), !orders.length);
  const byId = new Map();
  for (const li of Array.from(list.children)) byId.set(li.dataset.orderId, li);
  orders.forEach((o, i) => {
    const li = byId.get(o.order_id) || orderItem(o);
    byId.delete(o.order_id);
    fillOrder(li, o);
    if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null);
  });
  for (const li of byId.values()) li.remove();
}

function orderItem(o) {
  const titleId = `order-${o.order_id}-title`;
  const li = h(
    'li',
    { class: 'card order', 'aria-labelledby': titleId },
    h('div', { class: 'order-head' },
      h('h2', { id: titleId, class: 'order-event' }, h('a', { href: `/e/${enc(o.event_id)}` }, 'Event')),
      h('span', { class: 'badge order-state' })),
    h('p', { class: 'order-when muted small' }),
    h('dl', { class: 'order-facts' },
      h('div', {}, h('dt', {}, 'Amount'), h('dd', { class: 'order-amount' })),
      h('div', {}, h('dt', {}, 'Seats'), h('dd', { class: 'order-seats' })),
      h('div', { class: 'order-refunded-fact', hidden: true }, h('dt', {}, 'Paid back'), h('dd', { class: 'order-refunded' }))),
    h('p', { class: 'order-note small' }),
    moneyBox(o.order_id),
    h('div', { class: 'order-tickets', hidden: true },
      h('h3', {}, 'Tickets'),
      h('ul', { class: 'tickets' }))
  );
  li.dataset.orderId = o.order_id;
  eventOf(o.event_id).then((ev) => {
    const a = li.querySelector('.order-event a');
    if (ev && ev.name) {
      setText(a, ev.name);
      li.dataset.starts = ev.starts_at || '';
      const now = orders.find((x) => x.order_id === o.order_id);
      if (now) fillOrder(li, now);
    } else {
      setText(a, `Event ${String(o.event_id).slice(0, 8)}`);
    }
  });
  return li;
}

function fillWhen(li, o) {
  const parts = [];
  if (li.dataset.starts) parts.push(`Show ${fmtDateTime(li.dataset.starts)}`);
  if (o.created_at) parts.push(`ordered ${fmtDateTime(o.created_at)}`);
  setText(li.querySelector('.order-when'), parts.join(' · '));
}

function fillOrder(li, o) {
  li.dataset.state = o.state;
  const badge = li.querySelector('.order-state');
  badge.dataset.kind = { paid: 'now', partially_refunded: 'paused', pending: 'paused', declined: 'ended', refunded: 'ended', cancelled: 'ended' }[o.state] || '';
  setText(badge, ORDER_STATE[o.state] || o.state);
  fillWhen(li, o);
  setText(li.querySelector('.order-amount'), o.amount_cents != null ? fmtMoney(o.amount_cents, o.currency) : '—');
  setText(li.querySelector('.order-seats'), (o.seats || []).map(fmtSeat).join('; ') || '—');
  show(li.querySelector('.order-refunded-fact'), o.refunded_cents > 0);
  setText(li.querySelector('.order-refunded'), o.refunded_cents > 0 ? fmtMoney(o.refunded_cents, o.currency) : '');
  const refundedTickets = (o.refunds || []).length > 0;
  let note = '';
  if (o.state === 'pending') note = 'Waiting for the bank’s answer; this page updates by itself.';
  else if (o.state === 'refunded' && refundedTickets) note = 'Every ticket of this order was refunded: none of them admits anyone.';
  else if (o.state === 'refunded' || o.state === 'declined' || o.state === 'cancelled') {
    note = o.reason ? `Not paid: ${REASON[o.reason] || o.reason.replace(/_/g, ' ')}.` : '';
    if (o.state === 'refunded') note = `${note} The money was paid back.`.trim();
  } else if (o.state === 'paid' && !ticketsOf(o).length) note = 'Your tickets are being issued; they appear here in a moment.';
  setText(li.querySelector('.order-note'), note);
  fillMoney(li.querySelector('.order-money'), o, known.get(o.event_id) || null, { onChange: refunded });
  const box = li.querySelector('.order-tickets');
  const issued = ['paid', 'partially_refunded', 'refunded'].includes(o.state) && ticketsOf(o).length > 0;
  show(box, issued);
  if (issued) renderTickets(box.querySelector('ul'), ticketsOf(o), { actions: (t) => ticketActions(o, t) });
}

/** After a refund (or a refusal that says things changed): the server's view, read again. */
function refunded() {
  return load();
}

/* ---------- reissuing ---------- */

function ticketActions(o, t) {
  if (t.state !== 'valid') return [];
  const b = h(
    'button',
    { type: 'button', class: 'button button-secondary', 'data-action': 'reissue', 'aria-label': `Reissue the ticket for ${fmtSeatSpoken(t.seat_id)}` },
    'Reissue'
  );
  b.addEventListener('click', () => reissue(o.order_id, t.ticket_id, b));
  return [b];
}

async function reissue(orderId, ticketId, button) {
  if (reissuing) return;
  const order = orders.find((o) => o.order_id === orderId);
  const t = order && ticketsOf(order).find((x) => x.ticket_id === ticketId);
  if (!t) return;
  const li = button.closest('li.ticket');
  const seat = fmtSeat(t.seat_id);
  const ok = await confirmStep(
    {
      title: 'Reissue this ticket?',
      text: `${seat} gets a new QR code. The code you have now stops working at every door, including scanners that are offline, as soon as they sync. Any screenshot, printout or forwarded copy of it will be refused.`,
      note: 'Do this if someone else may have a copy of your code. Use the new code at the door.',
      yes: 'Reissue the ticket',
    },
    button
  );
  if (!ok) {
    ticketMessage(li, 'Nothing changed: your code still works.', 'info');
    return;
  }
  reissuing = true;
  button.disabled = true;
  ticketMessage(li, 'Reissuing…', 'info');
  let r;
  try {
    for (let attempt = 0; attempt < 4; attempt++) {
      r = await api('POST', `/v1/tickets/${enc(ticketId)}/reissue`);
      if (r.ok || !retryable(r)) break;
      await sleep((r.retryAfter != null ? Math.max(1, r.retryAfter) : 1 + attempt) * 1000);
    }
  } finally {
    reissuing = false;
    button.disabled = false;
  }
  if (r.ok && r.data && r.data.ticket_id) {
    const fresh = r.data;
    const current = orders.find((o) => o.order_id === orderId);
    if (current) {
      const list = ticketsOf(current);
      const at = list.findIndex((x) => x.ticket_id === ticketId || x.seat_id === fresh.seat_id);
      current.tickets = at >= 0 ? [...list.slice(0, at), fresh, ...list.slice(at + 1)] : [...list, fresh];
    }
    render();
    const entry = document.querySelector(`li.ticket[data-ticket-id="${CSS.escape(fresh.ticket_id)}"]`);
    const text = `${seat} has a new QR code. The old one no longer admits anyone.`;
    ticketMessage(entry, text, 'ok');
    setText($('announcer'), text);
    const again = entry && entry.querySelector('[data-action="reissue"]');
    if (again) again.focus();
    return;
  }
  ticketMessage(li, message(r.error), 'error');
  if (r.status === 409 || r.status === 404) load(); // its state changed: show the server's
}

/* ---------- the page ---------- */

function enter() {
  account++;
  clearTimeout(timer);
  orders = [];
  events.clear(); // a cancelled show, a changed policy: read again
  known.clear();
  $('orders').replaceChildren();
  const signedIn = !!token();
  show($('orders-section'), signedIn);
  show($('orders-empty'), false);
  setText($('orders-status'), 'Loading your orders…');
  show($('orders-status'), true);
  if (signedIn) load();
}

accountBar($('account'));
fanSignIn($('auth'), 'Sign in to see your orders');
wireConfirm();
onAccountChange(enter);
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible' && token() && !reissuing) load();
});
enter();
