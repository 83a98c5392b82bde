/* onsale: what the operators' pages know: the route (/ops or
 * /ops/events/{event_id}), who is signed in, and one sale's dashboard state, with
 * the timings every part of the dashboard shares.
 *
 * Sources, all read with the operator's token:
 *   GET /v1/ops/events/{id}/stats              every second
 *   GET /v1/ops/events/{id}/stats/history      the last 5 minutes once, then the
 *                                              newest seconds every 2 s
 *   GET /v1/ops/events/{id}/audit              every 2 s and after every lever
 *   GET /v1/ops/events/{id}/checkin            every 3 s (the door)
 *   GET /v1/events/{id}, GET /v1/events/{id}/seats, and the live socket
 *   /v1/events/{id}/live (sale state and seat deltas; docs/REALTIME.md).
 * Only figures the API gives are shown. The page keeps no state of its own beyond
 * the signed-in account (api.js). */

import { enc } from '../util.js';

export const STATS_MS = 1000;
export const HISTORY_MS = 2000;
export const AUDIT_MS = 2000;
export const SEATS_LIVE_MS = 15000; // a repair fetch while deltas arrive
export const SEATS_POLL_MS = 4000; // while the socket is down
export const STALE_MS = 5000;
export const WINDOW_MAX_S = 300;
export const WINDOW_MIN_S = 60;
export const RATE_SMOOTH_MS = 5000;
export const GAP_MS = 3500; // samples further apart than this are not joined by a line
export const RATE_MIN = 1;
export const RATE_MAX = 100000;
const BACKOFF_MAX_S = 15;

function parseRoute() {
  const path = window.location.pathname;
  const m = path.match(/\/ops\/events\/([^/]+)\/?$/);
  if (m) return { kind: 'event', eventId: decodeURIComponent(m[1]) };
  const q = new URLSearchParams(window.location.search).get('event');
  if (q) return { kind: 'event', eventId: q };
  return { kind: 'list' };
}

export const route = parseRoute();
export const eventId = route.kind === 'event' ? route.eventId : '';
export const opsPath = `/v1/ops/events/${enc(eventId)}`;

export const session = {
  me: null, // {user_id, email, role}
  active: false, // an operator's views are running
  checking: 0,
};

/* seatsVersion and seatsLoaded are added by sections.js, read from its seat feed */
export const dash = {
  event: null,
  venueName: '',
  /* the sale as last told: by a stats read, the socket or a lever's answer;
   * `stamp` orders them, so an older read never undoes a newer word */
  sale: { state: null, admission_per_second: null, onsale_at: null, stamp: 0 },
  noSale: false, // the sale is not set up yet (sale_not_found)
  stats: null,
  statsAt: 0, // Date.now() of the last good stats read
  statsFailures: 0,
  samples: [], // [{t, next, served, held, sold}] oldest first
  historyLoaded: false,
  audit: [],
  auditTop: '',
  auditNewest: 0,
  seats: new Map(), // seat_id -> {section, state}
  sections: new Map(), // name -> {tier, total, available, held, sold}
  door: null, // GET /v1/ops/events/{id}/checkin, every 3 s
  doorAt: 0,
  busy: false, // a lever is being pulled
  rateDirty: false, // the operator is typing a rate
  notFound: false,
};

export function saleState() {
  return dash.sale.state || (dash.noSale ? 'scheduled' : null);
}

export function onsaleMs() {
  const iso = dash.sale.onsale_at || (dash.event && dash.event.onsale_at);
  const t = iso ? Date.parse(iso) : NaN;
  return Number.isNaN(t) ? null : t;
}

export function backoff(attempt) {
  return Math.min(BACKOFF_MAX_S, 2 ** Math.min(attempt, 4)) * 1000;
}
