/* onsale: /orders: an order's money. Its invoice (GET /v1/orders/{id}/invoice:
 * number, total, tax, and the PDF), the event's refund policy, asking for a refund
 * (the valid tickets as check boxes, all chosen to begin with; the amount back shown
 * before and in the confirmation step; POST /v1/orders/{id}/refunds with an
 * Idempotency-Key kept across retries), and the order's refunds with their state and
 * credit notes. The server judges every refund: a refusal is shown as it words it.
 * The amount shown beforehand comes from refund-amount.js. */

import { api, retryable } from './api.js';
import { confirmStep } from './confirm.js';
import { pdfLink } from './documents.js';
import { amountText, estimate } from './refund-amount.js';
import { h, setText, show } from './dom.js';
import { fmtDateTime, fmtMoney, fmtSeat, message, plural } from './format.js';
import { bySeat } from './tickets.js';
import { enc, sleep, uuid } from './util.js';

const REFUND_STATE = { pending: 'On its way', succeeded: 'Paid back', failed: 'Failed' };
const REFUND_BADGE = { pending: 'paused', succeeded: 'now', failed: 'bad' };
const REFUSALS = ['refunds_not_offered', 'refund_window_closed', 'ticket_checked_in', 'ticket_not_refundable', 'event_cancelled'];

const state = new WeakMap(); // the order's money box -> {o, ev, onChange}
const invoices = new Map(); // order_id -> Promise<invoice | null>
let asking = false;

const valid = (o) => (Array.isArray(o.tickets) ? o.tickets : []).filter((t) => t.state === 'valid').sort(bySeat);

/** Whether the order has refunds whose money is still on its way. */
export function refundsPending(o) {
  return (o.refunds || []).some((r) => r.state === 'pending');
}

function sayIn(box) {
  const el = box.querySelector('.order-message');
  return (text, kind) => {
    setText(el, text || '');
    el.dataset.kind = kind || '';
  };
}

/* ---------- reading ---------- */

function invoiceOf(o) {
  let p = invoices.get(o.order_id);
  if (!p) {
    p = api('GET', `/v1/orders/${enc(o.order_id)}/invoice`).then((r) => {
      if (r.ok && r.data && r.data.invoice_number) return r.data;
      if (r.status !== 404) invoices.delete(o.order_id); // asked again at the next render
      return null;
    });
    invoices.set(o.order_id, p);
  }
  return p;
}

/* ---------- drawing ---------- */

/** The money part of an order's entry, filled by `fillMoney`. */
export function moneyBox(orderId) {
  const formId = `refund-form-${orderId}`;
  const toggle = h('button', { type: 'button', class: 'button button-secondary refund-toggle', 'data-action': 'refund', 'aria-expanded': 'false', 'aria-controls': formId }, 'Refund tickets…');
  const form = h('form', { id: formId, class: 'refund-form', hidden: true, novalidate: true, 'aria-label': 'Refund tickets' },
    h('fieldset', { class: 'refund-choice' },
      h('legend', {}, 'Which tickets?'),
      h('div', { class: 'refund-tickets' })),
    h('p', { class: 'refund-amount', 'aria-live': 'polite' }),
    h('div', { class: 'actions' },
      h('button', { type: 'submit', class: 'button button-danger refund-submit' }, 'Refund…'),
      h('button', { type: 'button', class: 'button button-secondary refund-close' }, 'Keep my tickets')));
  const box = h('div', { class: 'order-money' },
    h('p', { class: 'order-invoice', hidden: true }),
    h('p', { class: 'order-policy small', hidden: true }),
    h('div', { class: 'order-refund', hidden: true }, toggle, form),
    h('p', { class: 'form-message order-message', role: 'status', 'aria-live': 'polite', tabindex: '-1' }),
    h('div', { class: 'order-refunds', hidden: true }, h('h3', {}, 'Refunds'), h('ul', { class: 'refunds' })));
  toggle.addEventListener('click', () => (form.hidden ? openForm(box) : closeForm(box, true)));
  form.querySelector('.refund-close').addEventListener('click', () => closeForm(box, true));
  form.addEventListener('change', () => showAmount(box));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    ask(box);
  });
  return box;
}

/** Fills the money part for order `o` of event `ev` (null until it is known). */
export function fillMoney(box, o, ev, { onChange }) {
  state.set(box, { o, ev, onChange });
  const say = sayIn(box);
  const invoiced = o.state === 'paid' || o.state === 'partially_refunded' || (o.state === 'refunded' && (o.refunds || []).length > 0);
  const line = box.querySelector('.order-invoice');
  if (!invoiced) show(line, false);
  else if (line.dataset.for !== o.order_id) {
    invoiceOf(o).then((inv) => {
      if (!inv || line.dataset.for === o.order_id) return;
      line.dataset.for = o.order_id;
      line.dataset.number = inv.invoice_number;
      const tax = inv.tax_cents > 0 ? `, of which ${fmtMoney(inv.tax_cents, inv.currency)} tax` : '';
      line.replaceChildren('Invoice ', pdfLink(`/v1/orders/${enc(o.order_id)}/invoice.pdf`, inv.invoice_number, inv.invoice_number, say),
        h('span', { class: 'muted small' }, ` · ${fmtMoney(inv.total_cents, inv.currency)}${tax} · issued ${fmtDateTime(inv.issued_at)}`));
      show(line, true);
    });
  }

  const policy = ev && ev.refund_policy;
  const open = !!policy && Date.parse(policy.until) > Date.now();
  const live = o.state === 'paid' || o.state === 'partially_refunded';
  let note = '';
  if (ev && ev.cancelled) note = 'This show is cancelled: every order is refunded in full. You need not do anything.';
  else if (policy && live) {
    const fee = Number(policy.fee_percent) > 0 ? `, less a fee of ${policy.fee_percent} % of each ticket’s price` : ' in full';
    note = open
      ? `Refunds: you can ask for your money back until ${fmtDateTime(policy.until)}${fee}.`
      : `Refunds could be asked for until ${fmtDateTime(policy.until)}.`;
  }
  setText(box.querySelector('.order-policy'), note);
  show(box.querySelector('.order-policy'), !!note);

  const offer = live && open && !(ev && ev.cancelled) && valid(o).length > 0;
  show(box.querySelector('.order-refund'), offer);
  if (!offer) closeForm(box, false);
  else if (!box.querySelector('.refund-form').hidden) fillChoice(box);

  renderRefunds(box, o, say);
}

function refundReason(reason) {
  if (!reason || reason === 'requested') return 'Asked for by you';
  const m = /^event cancelled: (.*)$/.exec(reason);
  return m ? `The show is cancelled: “${m[1]}”` : `Refunded by the box office: “${reason}”`;
}

function renderRefunds(box, o, say) {
  const refunds = [...(o.refunds || [])].reverse(); // newest first
  const wrap = box.querySelector('.order-refunds');
  show(wrap, refunds.length > 0);
  const list = wrap.querySelector('ul');
  const key = refunds.map((r) => `${r.refund_id}:${r.state}:${r.credit_note_number || ''}`).join(',');
  if (list.dataset.key === key) return;
  list.dataset.key = key;
  /* a refund's state moved: the entries are built again, and the keyboard stays where it was */
  const active = list.contains(document.activeElement) ? document.activeElement : null;
  const had = active && { id: active.closest('li.refund').dataset.refundId, link: active.matches('a') };
  list.replaceChildren(...refunds.map((r) => {
    const seats = (r.seats || []).map(fmtSeat).join('; ');
    const fee = r.fee_cents > 0 ? ` · ${fmtMoney(r.fee_cents, r.currency)} fee kept` : '';
    const li = h('li', { class: 'refund', 'data-refund-id': r.refund_id, 'data-state': r.state, tabindex: '-1' },
      h('p', { class: 'refund-head' },
        h('strong', { class: 'refund-amount-back' }, `${fmtMoney(r.amount_cents, r.currency)} back`), ' ',
        h('span', { class: 'badge refund-state', 'data-kind': REFUND_BADGE[r.state] || '' }, REFUND_STATE[r.state] || r.state)),
      h('p', { class: 'small' }, `${plural((r.ticket_ids || []).length, 'ticket', 'tickets')}: ${seats}${fee}`),
      h('p', { class: 'small muted' }, `${refundReason(r.reason)} · ${fmtDateTime(r.created_at)}`));
    if (r.state === 'pending') li.append(h('p', { class: 'small' }, `On its way to the card ending ${o.card_last4}.`));
    if (r.state === 'failed') li.append(h('p', { class: 'small refund-failure' }, `The card’s bank refused this refund${r.failure ? ` (${r.failure.replace(/_/g, ' ')})` : ''}.`));
    if (r.credit_note_number) {
      li.append(h('p', { class: 'refund-note' },
        pdfLink(`/v1/refunds/${enc(r.refund_id)}/credit-note.pdf`, `Credit note ${r.credit_note_number}`, r.credit_note_number, say)));
    }
    return li;
  }));
  const again = had && list.querySelector(`li.refund[data-refund-id="${CSS.escape(had.id)}"]`);
  if (again) ((had.link && again.querySelector('a.doc-link')) || again).focus();
}

/* ---------- asking for a refund ---------- */

function fillChoice(box) {
  const { o } = state.get(box);
  const tickets = valid(o);
  const holder = box.querySelector('.refund-tickets');
  const key = tickets.map((t) => t.ticket_id).join(',');
  if (holder.dataset.key === key) return;
  /* new, or the tickets changed meanwhile: every valid one is chosen again */
  holder.dataset.key = key;
  holder.replaceChildren(...tickets.map((t) => {
    const id = `refund-${t.ticket_id}`;
    return h('div', { class: 'check' },
      h('input', { type: 'checkbox', id, name: 'ticket', value: t.ticket_id, checked: true, 'data-seat-id': t.seat_id }),
      h('label', { for: id }, fmtSeat(t.seat_id), ' ', h('span', { class: 'refund-price muted' })));
  }));
  showAmount(box);
}

function chosen(box) {
  const { o } = state.get(box);
  const ids = new Set(Array.from(box.querySelectorAll('.refund-tickets input:checked'), (i) => i.value));
  return valid(o).filter((t) => ids.has(t.ticket_id));
}

async function showAmount(box) {
  const { o, ev } = state.get(box);
  const picked = chosen(box);
  const line = box.querySelector('.refund-amount');
  const submit = box.querySelector('.refund-submit');
  setText(submit, picked.length ? `Refund ${plural(picked.length, 'ticket', 'tickets')}…` : 'Refund…');
  const e = await estimate(o, ev, picked);
  for (const input of box.querySelectorAll('.refund-tickets input')) {
    const c = e.each.get(input.dataset.seatId);
    setText(input.parentElement.querySelector('.refund-price'), c != null ? fmtMoney(c, o.currency) : '');
  }
  if (chosen(box).length !== picked.length) return; // changed meanwhile: its own call says it
  setText(line, picked.length ? `You get back ${amountText(e, o.currency)}.` : 'Choose at least one ticket to refund.');
}

function openForm(box) {
  const form = box.querySelector('.refund-form');
  show(form, true);
  box.querySelector('.refund-toggle').setAttribute('aria-expanded', 'true');
  fillChoice(box);
  const first = form.querySelector('input');
  if (first) first.focus();
}

function closeForm(box, focus) {
  const form = box.querySelector('.refund-form');
  if (form.hidden) return;
  show(form, false);
  const toggle = box.querySelector('.refund-toggle');
  toggle.setAttribute('aria-expanded', 'false');
  if (focus) toggle.focus();
}

async function ask(box) {
  if (asking) return;
  const { o, ev, onChange } = state.get(box);
  const say = sayIn(box);
  const submit = box.querySelector('.refund-submit');
  const picked = chosen(box);
  if (!picked.length) {
    say('Choose at least one ticket to refund.', 'error');
    box.querySelector('.refund-tickets input').focus();
    return;
  }
  const e = await estimate(o, ev, picked);
  const seats = picked.map((t) => fmtSeat(t.seat_id)).join('; ');
  const what = plural(picked.length, 'ticket', 'tickets');
  const one = picked.length === 1;
  const ok = await confirmStep({
    title: `Refund ${what}?`,
    text: `${one ? 'The ticket for' : 'The tickets for'} ${seats} ${one ? 'stops' : 'stop'} admitting anyone at once, and ${one ? 'its seat goes' : 'their seats go'} back on sale. You get back ${amountText(e, o.currency)} on the card ending ${o.card_last4}.`,
    note: 'This cannot be undone.',
    yes: `Refund ${what}`,
    no: 'Keep my tickets',
    danger: true,
  }, submit);
  if (!ok) {
    say('Nothing was refunded.', 'info');
    return;
  }
  asking = true;
  submit.disabled = true;
  say('Asking for the refund…', 'info');
  const key = uuid();
  let r;
  try {
    for (let attempt = 0; attempt < 4; attempt++) {
      r = await api('POST', `/v1/orders/${enc(o.order_id)}/refunds`, { body: { ticket_ids: picked.map((t) => t.ticket_id) }, idempotencyKey: key });
      if (r.ok || !retryable(r)) break;
      await sleep((r.retryAfter != null ? Math.max(1, r.retryAfter) : 1 + attempt) * 1000);
    }
  } finally {
    asking = false;
    submit.disabled = false;
  }
  if (r.ok && r.data && r.data.refund_id) {
    const refund = r.data;
    closeForm(box, false);
    say(`Refund asked for: ${fmtMoney(refund.amount_cents, refund.currency)} goes back to the card ending ${o.card_last4}. ${(refund.seats || []).map(fmtSeat).join('; ')} no longer ${refund.seats && refund.seats.length === 1 ? 'admits' : 'admit'} anyone.`, 'ok');
    await onChange(refund);
    const entry = box.querySelector(`li.refund[data-refund-id="${CSS.escape(refund.refund_id)}"]`);
    (entry || box.querySelector('.order-message')).focus();
    return;
  }
  const words = REFUSALS.includes(r.error.code) && r.error.message ? ownWords(r.error.message, o) : message(r.error);
  say(`Not refunded: ${words.charAt(0).toUpperCase()}${words.slice(1)}${/[.!?]$/.test(words) ? '' : '.'}`, 'error');
  if (r.status === 409 || r.status === 404) {
    /* things changed since the page last looked: show the server's view */
    closeForm(box, false);
    onChange(null);
  }
  box.querySelector('.order-message').focus();
}

/** The server's refusal, with the ids it names put as the fan knows them: seats, "this order". */
function ownWords(text, o) {
  const seatOf = new Map((o.tickets || []).map((t) => [t.ticket_id, t.seat_id]));
  return text
    .replace(/ticket ([0-9a-f-]{36})/gi, (all, id) => (seatOf.has(id) ? `the ticket for ${fmtSeat(seatOf.get(id))}` : all))
    .replace(new RegExp(`order ${o.order_id}`, 'g'), 'this order');
}
