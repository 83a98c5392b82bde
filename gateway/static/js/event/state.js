/* onsale: what the fan's waiting room (/e/{event_id}) believes, and the small
 * readings of it that every part of the page makes.
 *
 * Sources of truth, in order: the live socket (docs/REALTIME.md), its REST fallback
 * (GET /v1/events/{id}/live/snapshot), and plain REST reads on (re)load. The page
 * keeps no state the server does not have, except what it remembers per tab in
 * sessionStorage: the signed-in account, the fan's request in this event, the first
 * position seen (for the progress bar) and the order id of the last checkout. */

export const TERMINAL = new Set(['confirmed', 'expired', 'released', 'cancelled', 'rejected']);
export const JOINABLE = new Set(['scheduled', 'drawing', 'open', 'paused']);
export const RANK = { prequeue: 0, queued: 1, held: 2, paying: 3, confirmed: 4, expired: 4, released: 4, cancelled: 4, rejected: 4 };
export const POLL_MS = 5000;
export const ANON_POLL_MS = 10000;
export const BACKOFF_MAX_S = 15;

function parseEventId() {
  const m = window.location.pathname.match(/\/e\/([^/]+)\/?$/);
  if (m) return decodeURIComponent(m[1]);
  return new URLSearchParams(window.location.search).get('event') || '';
}

export const eventId = parseEventId();
export const REQ_KEY = `onsale.request.${eventId}`;

/* seatsVersion and seatsBuilt are added by seatmap.js, read from its seat feed */
export const state = {
  event: null,
  venueName: '',
  sale: null, // {state, onsale_at, admission_per_second}
  request: null, // as GET /v1/requests/{id}
  ask: null, // what the fan asked for, as sent
  position: null, // {request_id, queue_number, position, eta_seconds, seats_left}
  seats: new Map(), // seat_id -> {seat, el, r, c}
  rows: [], // [[entry, ...], ...] in map order, for arrow keys
  selected: new Set(),
  order: null, // the last checkout's order
  ended: false, // an ended request is being shown
};

export function saleState() {
  if (state.sale && state.sale.state) return state.sale.state;
  return null;
}

export function onsaleAt() {
  const iso = (state.sale && state.sale.onsale_at) || (state.event && state.event.onsale_at);
  const t = iso ? Date.parse(iso) : NaN;
  return Number.isNaN(t) ? null : t;
}

export function isLive(req) {
  return !!req && !TERMINAL.has(req.state);
}

export function seatLabel(id) {
  const entry = state.seats.get(id);
  if (entry) {
    const s = entry.seat;
    return `${s.section} · Row ${s.row} · Seat ${s.number}`;
  }
  return id;
}

export function priceOf(id) {
  const entry = state.seats.get(id);
  if (!entry || !state.event || !state.event.prices) return null;
  const p = state.event.prices[entry.seat.price_tier];
  return typeof p === 'number' ? p : null;
}

export function totalOf(ids) {
  let sum = 0;
  for (const id of ids) {
    const p = priceOf(id);
    if (p == null) return null;
    sum += p;
  }
  return sum;
}
