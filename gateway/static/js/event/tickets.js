/* onsale: the fan's tickets for this event, on the waiting room (#tickets): shown
 * once one of the fan's orders for this event is paid. The order comes from the
 * checkout's answer (through the confirmation), or, after a reload or in a new
 * tab, from the fan's orders (GET /v1/orders): every paid order of this event
 * counts. A paid order whose tickets are not issued yet is read again until they
 * are. */

import { api, token } from '../api.js';
import { $, say, show } from '../dom.js';
import { plural } from '../format.js';
import { renderTickets } from '../tickets.js';
import { enc, sleep } from '../util.js';
import { eventId } from './state.js';

const orders = new Map(); // order_id -> a paid order of this event
const waiting = new Set(); // order ids being read until their tickets show
let account = 0; // bumped on every change of account: older answers are dropped

function ticketsOf(order) {
  return Array.isArray(order.tickets) ? order.tickets : [];
}

function sameTickets(a, b) {
  const key = (o) => ticketsOf(o).map((t) => `${t.ticket_id}:${t.version}:${t.state}`).join(',');
  return key(a) === key(b);
}

/** Takes an order the page read (a checkout's answer, the confirmation's order). */
export function noteOrder(order) {
  if (!order || order.state !== 'paid' || order.event_id !== eventId || !token()) return;
  const before = orders.get(order.order_id);
  if (before && sameTickets(before, order)) return;
  /* an answer without tickets must not hide the ones already shown */
  if (before && ticketsOf(before).length && !ticketsOf(order).length) return;
  orders.set(order.order_id, order);
  renderTicketsCard();
  if (!ticketsOf(order).length) waitForTickets(order.order_id);
}

/** Reads the fan's orders and shows this event's paid ones; `fresh` forgets the last account's. */
export async function loadTickets(fresh) {
  const mine = fresh ? ++account : account;
  if (fresh) {
    orders.clear();
    renderTicketsCard();
  }
  if (!token() || !eventId) return;
  for (let attempt = 0; attempt < 5; attempt++) {
    const r = await api('GET', '/v1/orders');
    if (mine !== account) return;
    if (r.ok && r.data && Array.isArray(r.data.orders)) {
      for (const o of r.data.orders) noteOrder(o);
      return;
    }
    if (r.status === 401 || r.status === 403) return;
    await sleep(Math.min(15, 2 ** attempt) * 1000);
  }
}

async function waitForTickets(orderId) {
  if (waiting.has(orderId)) return;
  waiting.add(orderId);
  const mine = account;
  try {
    for (let attempt = 0; attempt < 40 && mine === account; attempt++) {
      await sleep(Math.min(10, 1 + attempt) * 1000);
      if (mine !== account) return;
      const r = await api('GET', `/v1/orders/${enc(orderId)}`);
      if (mine !== account) return;
      if (r.ok && r.data && ticketsOf(r.data).length) {
        noteOrder(r.data);
        return;
      }
      if (r.status === 401 || r.status === 403 || r.status === 404) return;
    }
  } finally {
    waiting.delete(orderId);
  }
}

function renderTicketsCard() {
  const card = $('tickets');
  if (!card) return;
  const paid = Array.from(orders.values());
  show(card, paid.length > 0);
  if (!paid.length) {
    $('ticket-list').replaceChildren();
    return;
  }
  const all = paid.flatMap(ticketsOf);
  renderTickets($('ticket-list'), all);
  card.dataset.tickets = String(all.length);
  const issuing = paid.some((o) => !ticketsOf(o).length);
  const valid = all.filter((t) => t.state === 'valid').length;
  let text = issuing ? 'Your tickets are being issued; they appear here in a moment.' : '';
  if (!issuing) {
    if (valid === 1) text = 'Your ticket admits one person: show its code at the door, on this screen or printed.';
    else if (valid > 1) text = `Each of your ${plural(valid, 'ticket', 'tickets')} admits one person: show the codes at the door, on this screen or printed.`;
    else text = 'None of your tickets admits anyone now.';
  }
  say('tickets-message', text, issuing ? 'info' : '');
}
