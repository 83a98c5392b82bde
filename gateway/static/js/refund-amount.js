/* onsale: what a refund of some of an order's tickets pays back, worked out before
 * asking as the server does: each ticket's price (tax included) less the event's
 * refund fee, rounded down to the cent per ticket. The prices are the event's
 * (GET /v1/events/{id}, and each seat's tier from GET /v1/events/{id}/seats when
 * the tiers' prices differ); when they no longer add up to what the order cost,
 * its amount is shared out in proportion and the figure is marked as "about". */

import { api } from './api.js';
import { fmtMoney } from './format.js';
import { enc } from './util.js';

const seatTiers = new Map(); // event_id -> Promise<Map(seat_id -> price tier) | null>

/** Each seat's tier, when the event's tiers differ in price (else none is needed). */
function tiersOf(ev) {
  if (new Set(Object.values(ev.prices || {})).size <= 1) return Promise.resolve(null);
  let p = seatTiers.get(ev.event_id);
  if (!p) {
    p = api('GET', `/v1/events/${enc(ev.event_id)}/seats`, { auth: false }).then((r) => {
      if (r.ok && Array.isArray(r.data)) return new Map(r.data.map((s) => [s.seat_id, s.price_tier]));
      seatTiers.delete(ev.event_id);
      return null;
    });
    seatTiers.set(ev.event_id, p);
  }
  return p;
}

/**
 * What each of the order's seats cost (seat_id -> cents, tax included), and
 * whether that is exact: the event's prices (with its tax added when the prices
 * hold none) must add up to what the order cost, or its amount is shared out.
 */
async function seatPrices(o, ev) {
  const n = o.seats.length || 1;
  const even = new Map(o.seats.map((s, i) => [s, Math.floor(o.amount_cents / n) + (i < o.amount_cents % n ? 1 : 0)]));
  const tiers = await tiersOf(ev);
  if (!tiers) return { cents: even, exact: new Set(Object.values(ev.prices || {})).size <= 1 };
  const tax = ev.tax || { rate_percent: 0, included: true };
  const bp = Math.round(Number(tax.rate_percent) * 100);
  const gross = o.seats.map((s) => {
    const c = ev.prices[tiers.get(s)];
    return c == null ? null : tax.included ? c : c + Math.floor((c * bp * 2 + 10000) / 20000);
  });
  if (gross.some((g) => g == null)) return { cents: even, exact: false };
  const sum = gross.reduce((a, b) => a + b, 0);
  if (sum === o.amount_cents) return { cents: new Map(o.seats.map((s, i) => [s, gross[i]])), exact: true };
  return { cents: new Map(o.seats.map((s, i) => [s, Math.round((o.amount_cents * gross[i]) / sum)])), exact: false };
}

/**
 * The refund of `tickets` (cents): {price, fee, back, percent, exact, each: seat_id
 * -> price}.
 */
export async function estimate(o, ev, tickets) {
  const prices = await seatPrices(o, ev);
  const percent = ev.refund_policy ? Number(ev.refund_policy.fee_percent) : 0;
  let price = 0;
  let fee = 0;
  for (const t of tickets) {
    const c = prices.cents.get(t.seat_id) || 0;
    price += c;
    fee += Math.floor((c * percent) / 100);
  }
  return { price, fee, back: price - fee, exact: prices.exact, percent, each: prices.cents };
}

/** The amount back in words: "€85.50 (€95.00 less the 10 % refund fee of €9.50)". */
export function amountText(e, currency) {
  const about = e.exact ? '' : 'about ';
  const fee = e.fee > 0 ? ` (${fmtMoney(e.price, currency)} less the ${e.percent} % refund fee of ${fmtMoney(e.fee, currency)})` : '';
  return `${about}${fmtMoney(e.back, currency)}${fee}`;
}
