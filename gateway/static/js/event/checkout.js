/* onsale: paying for held seats: checking the card in the page, the checkout call
 * (one Idempotency-Key per attempt, so retries charge once), what each order state
 * means for the fan, waiting on a pending payment, and finding the order of a
 * request that was paid. */

import { api, retryable } from '../api.js';
import { $, say } from '../dom.js';
import { message } from '../format.js';
import { enc, load, save, sleep, uuid } from '../util.js';
import { countdownMessage } from './join.js';
import { renderConfirmation, renderHold } from './render.js';
import { adoptRequest, refreshRequest } from './request.js';
import { state } from './state.js';

function luhn(digits) {
  let sum = 0;
  let dbl = false;
  for (let i = digits.length - 1; i >= 0; i--) {
    let d = digits.charCodeAt(i) - 48;
    if (dbl) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    dbl = !dbl;
  }
  return sum % 10 === 0;
}

function fieldError(inputId, text) {
  const input = $(inputId);
  say(`${inputId}-error`, text || '', text ? 'error' : '');
  if (text) input.setAttribute('aria-invalid', 'true');
  else input.removeAttribute('aria-invalid');
}

function readCard() {
  const number = $('card-number').value.replace(/[\s-]/g, '');
  let expiry = $('card-expiry').value.replace(/\s/g, '');
  if (/^\d{4}$/.test(expiry)) expiry = `${expiry.slice(0, 2)}/${expiry.slice(2)}`;
  if (/^\d\/\d{2}$/.test(expiry)) expiry = `0${expiry}`;
  const cvc = $('card-cvc').value.trim();
  const errors = {};
  if (!/^\d{12,19}$/.test(number) || !luhn(number)) errors['card-number'] = 'Enter a valid card number (12 to 19 digits).';
  const m = expiry.match(/^(0[1-9]|1[0-2])\/(\d{2})$/);
  if (!m) errors['card-expiry'] = 'Enter the expiry as MM/YY, e.g. 12/30.';
  else {
    const end = new Date(2000 + Number(m[2]), Number(m[1]), 1); // first day after the expiry month
    if (end.getTime() <= Date.now()) errors['card-expiry'] = 'That card has expired.';
  }
  // American Express (34…, 37…) prints 4 digits on the front; the others 3 on the back.
  const amex = /^3[47]/.test(number);
  if (!(amex ? /^\d{4}$/ : /^\d{3}$/).test(cvc)) {
    errors['card-cvc'] = amex ? 'The security code is the 4 digits on the front of the card.'
      : 'The security code is the 3 digits on the back of the card.';
  }
  return { body: { card_number: number, expiry, cvc }, errors };
}

/** "12" typed into the expiry becomes "12/". */
export function formatExpiry(e) {
  const v = e.target.value;
  if (/^\d{2}$/.test(v) && e.inputType && e.inputType.startsWith('insert')) e.target.value = `${v}/`;
}

/** A checkout is being sent. */
export let paying = false;

export async function pay(e) {
  e.preventDefault();
  const req = state.request;
  if (paying || !req || req.state !== 'held') return;
  const { body, errors } = readCard();
  for (const id of ['card-number', 'card-expiry', 'card-cvc']) fieldError(id, errors[id]);
  const invalid = Object.keys(errors);
  if (invalid.length) {
    say('checkout-message', 'Please correct the card details.', 'error');
    $(invalid[0]).focus();
    return;
  }
  paying = true;
  renderHold();
  const key = uuid(); // this attempt; retries of it reuse the key and charge once
  say('checkout-message', 'Paying…', 'info');
  try {
    for (let attempt = 0; attempt < 20; attempt++) {
      const r = await api('POST', `/v1/requests/${enc(req.request_id)}/checkout`, { body, idempotencyKey: key });
      if (r.ok) {
        onOrder(r.data);
        return;
      }
      if (retryable(r)) {
        const wait = r.retryAfter != null ? Math.max(1, r.retryAfter) : Math.min(5, 1 + attempt);
        const prefix = r.status === 429 ? 'Too many requests' : message(r.error).replace(/\.$/, '');
        await countdownMessage('checkout-message', prefix, wait);
        continue;
      }
      const code = r.error.code;
      if (code === 'invalid_card_number') fieldError('card-number', message(r.error));
      else if (code === 'invalid_expiry' || code === 'card_expired') fieldError('card-expiry', message(r.error));
      else if (code === 'invalid_cvc') fieldError('card-cvc', message(r.error));
      say('checkout-message', message(r.error), 'error');
      if (code === 'already_paid') {
        findOrder(req.request_id);
        adoptRequest(Object.assign({}, req, { state: 'confirmed' }));
      } else if (code === 'payment_in_flight') {
        adoptRequest(Object.assign({}, req, { state: 'paying' }));
      } else if (code === 'hold_ended' || code === 'request_not_held' || code === 'request_not_found') {
        refreshRequest();
      }
      return;
    }
    say('checkout-message', 'The payment service is busy; please try again.', 'error');
  } finally {
    paying = false;
    renderHold();
  }
}

function onOrder(order) {
  state.order = order;
  if (order.request_id) save(`onsale.order.${order.request_id}`, order.order_id);
  const req = state.request;
  switch (order.state) {
    case 'paid':
      say('checkout-message', '', '');
      if (req && req.request_id === order.request_id) adoptRequest(Object.assign({}, req, { state: 'confirmed' }));
      renderConfirmation();
      break;
    case 'declined':
      say('checkout-message', message({ code: 'card_declined' }), 'error');
      if (req && req.state === 'paying') adoptRequest(Object.assign({}, req, { state: 'held' }));
      setTimeout(() => {
        const n = $('card-number');
        n.focus();
        n.select();
      }, 0);
      break;
    case 'pending':
      say('checkout-message', 'Waiting for your bank…', 'info');
      if (req && req.state === 'held') adoptRequest(Object.assign({}, req, { state: 'paying' }));
      watchOrder(order.order_id);
      break;
    case 'refunded':
      say('checkout-message', 'The payment arrived after your hold had ended, so it was refunded.', 'error');
      refreshRequest();
      break;
    default:
      say('checkout-message', 'The payment did not go through.', 'error');
      refreshRequest();
  }
}

/* A pending payment's outcome comes as a `request` message; reading the order too
 * covers a socket that is down at that moment. */
let watching = null;
async function watchOrder(orderId) {
  if (watching === orderId) return;
  watching = orderId;
  const until = Date.now() + 5 * 60 * 1000;
  while (watching === orderId && Date.now() < until) {
    await sleep(2500);
    if (!state.request || !['held', 'paying'].includes(state.request.state)) break;
    const r = await api('GET', `/v1/orders/${enc(orderId)}`);
    if (r.ok && r.data.state !== 'pending') {
      onOrder(r.data);
      break;
    }
  }
  if (watching === orderId) watching = null;
}

/** The paid order of `requestId`: the one this tab remembers, or one from the fan's orders. */
export async function findOrder(requestId) {
  const known = load(`onsale.order.${requestId}`);
  if (known && (!state.order || state.order.order_id !== known)) {
    const r = await api('GET', `/v1/orders/${enc(known)}`);
    if (r.ok) {
      state.order = r.data;
      renderConfirmation();
      return;
    }
  }
  if (state.order && state.order.request_id === requestId && state.order.state === 'paid') return;
  const all = await api('GET', '/v1/orders');
  if (all.ok && all.data && Array.isArray(all.data.orders)) {
    const mine = all.data.orders.find((o) => o.request_id === requestId && o.state === 'paid');
    if (mine) {
      state.order = mine;
      save(`onsale.order.${requestId}`, mine.order_id);
      renderConfirmation();
    }
  }
}
