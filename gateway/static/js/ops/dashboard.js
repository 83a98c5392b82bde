/* onsale: /ops/events/{id}: one sale's dashboard: loading the event, the pollers
 * (figures every second, history, audit log, seats, the door, a cancellation's
 * progress), taking the sale's state from
 * whichever source read it last, and starting and stopping it all. */

import { api } from '../api.js';
import { now } from '../clock.js';
import { $, pageError, setText, show } from '../dom.js';
import { fmtDateTime, message, plural } from '../format.js';
import { enc, sleep } from '../util.js';
import { renderAudit } from './audit.js';
import { cancelPoller, resetCancel } from './cancel.js';
import { scheduleCharts } from './charts.js';
import { doorPoller } from './door.js';
import { renderCountdown, renderFigures, renderSale, renderUpdated, saleDetail } from './figures.js';
import { fmtSpan } from './format.js';
import { renderLevers } from './levers.js';
import { live } from './live.js';
import { poller } from './poller.js';
import { scheduleSections, seatFeed } from './sections.js';
import { forbidden } from './session.js';
import {
  AUDIT_MS, HISTORY_MS, SEATS_LIVE_MS, SEATS_POLL_MS, STATS_MS, WINDOW_MAX_S,
  backoff, dash, eventId, opsPath, saleState, session,
} from './state.js';

export const statsPoller = poller(pollStats);
const historyPoller = poller(pollHistory);
export const auditPoller = poller(pollAudit);
export const seatsPoller = poller(pollSeats);
let ticker = null;
let resizeObserver = null;

export async function startDashboard() {
  show($('dashboard'), true);
  $('crumb-events').removeAttribute('aria-current');
  if (!dash.event) {
    const ok = await loadEvent();
    if (!ok || !session.active) return;
  }
  renderAll();
  statsPoller.start();
  historyPoller.start();
  auditPoller.start();
  seatsPoller.start();
  doorPoller.start();
  cancelPoller.start();
  live.start();
  clearInterval(ticker);
  ticker = setInterval(tick, 1000);
  if (!resizeObserver && 'ResizeObserver' in window) {
    let last = 0;
    resizeObserver = new ResizeObserver(() => {
      const w = $('chart-queue').clientWidth;
      if (w !== last) {
        last = w;
        scheduleCharts();
      }
    });
    resizeObserver.observe($('chart-queue'));
  }
}

export function stopDashboard() {
  statsPoller.stop();
  historyPoller.stop();
  auditPoller.stop();
  seatsPoller.stop();
  doorPoller.stop();
  cancelPoller.stop();
  resetCancel();
  live.stop();
  clearInterval(ticker);
  ticker = null;
}

async function loadEvent() {
  for (let attempt = 0; session.active; attempt++) {
    const r = await api('GET', `/v1/events/${enc(eventId)}`);
    if (r.ok && r.data) {
      dash.event = r.data;
      break;
    }
    if (r.status === 404 || r.status === 400) {
      eventNotFound();
      return false;
    }
    pageError(`Could not load the event: ${message(r.error)} Retrying…`);
    await sleep(backoff(attempt));
  }
  if (!session.active) return false;
  pageError('');
  const ev = dash.event;
  if (dash.sale.onsale_at == null) dash.sale.onsale_at = ev.onsale_at;
  if (dash.sale.admission_per_second == null) dash.sale.admission_per_second = ev.admission_per_second;
  document.title = `${ev.name} · operations · onsale`;
  setText($('ops-title'), ev.name);
  renderMeta();
  api('GET', `/v1/venues/${enc(ev.venue_id)}`).then((v) => {
    if (v.ok && v.data && v.data.name) {
      dash.venueName = v.data.name;
      renderMeta();
    }
  });
  return true;
}

function eventNotFound() {
  dash.notFound = true;
  stopDashboard();
  show($('dashboard'), false);
  setText($('ops-title'), 'Event not found');
  setText($('ops-meta'), 'This event does not exist, or its link is wrong.');
  $('ops-title').dataset.state = 'not-found';
}

function renderMeta() {
  const ev = dash.event;
  if (!ev) return;
  const parts = [];
  if (dash.venueName) parts.push(dash.venueName);
  parts.push(`show ${fmtDateTime(ev.starts_at)}`);
  parts.push(`on sale ${fmtDateTime(dash.sale.onsale_at || ev.onsale_at)}`);
  parts.push(plural(ev.seat_count, 'seat', 'seats'));
  parts.push(`up to ${ev.max_per_fan} per fan`);
  parts.push(`holds last ${fmtSpan(ev.hold_seconds)}`);
  const meta = $('ops-meta');
  setText(meta, parts.join(' · '));
  let link = $('ops-fan-link');
  if (!link) {
    link = document.createElement('a');
    link.id = 'ops-fan-link';
    link.className = 'fan-link';
    link.textContent = 'Fans’ page';
    meta.after(link);
  }
  link.href = `/e/${enc(eventId)}`;
}

/** Takes the sale's state from a source that read it at `stamp` (performance.now()). */
export function adoptSale(s, stamp) {
  if (!s) return;
  if (stamp < dash.sale.stamp) return;
  const before = dash.sale.state;
  const rateBefore = dash.sale.admission_per_second;
  dash.sale.stamp = stamp;
  if (s.state) dash.sale.state = s.state;
  if (s.admission_per_second != null) dash.sale.admission_per_second = Number(s.admission_per_second);
  if (s.onsale_at) dash.sale.onsale_at = s.onsale_at;
  if (s.state) dash.noSale = false;
  if (before !== dash.sale.state || rateBefore !== dash.sale.admission_per_second) {
    renderSale();
    renderLevers();
    renderFigures();
    if (rateBefore !== dash.sale.admission_per_second) scheduleCharts();
  }
}

/* ------------------------------------------------------------------ */
/* polling                                                             */
/* ------------------------------------------------------------------ */

async function pollStats() {
  const sentAt = performance.now();
  const r = await api('GET', `${opsPath}/stats`);
  if (!session.active) return null;
  if (r.ok && r.data) {
    dash.stats = r.data;
    dash.statsAt = Date.now();
    dash.statsFailures = 0;
    dash.noSale = false;
    adoptSale({ state: r.data.state, admission_per_second: r.data.admission_per_second }, sentAt);
    renderFigures();
    renderSale();
    renderLevers();
    renderUpdated();
    return STATS_MS;
  }
  return onReadError(r, 'the figures', () => {
    dash.statsFailures++;
    renderUpdated();
    return r.retryAfter != null ? Math.max(1000, r.retryAfter * 1000) : Math.min(5000, STATS_MS * (1 + dash.statsFailures));
  });
}

/** The answer every read shares for refusals; `other` decides the rest. */
function onReadError(r, what, other) {
  if (r.status === 401) return null; // signed out; onAccountChange takes over
  if (r.status === 403) {
    forbidden();
    return null;
  }
  if (r.status === 404 && r.error.code === 'event_not_found') {
    eventNotFound();
    return null;
  }
  if (r.status === 404 && r.error.code === 'sale_not_found') {
    if (!dash.noSale) {
      dash.noSale = true;
      renderSale();
      renderLevers();
      renderFigures();
    }
    return 2000;
  }
  if (what && r.status !== 0 && r.status !== 429) console.warn(`reading ${what}: ${r.status} ${r.error.code}`);
  return other();
}

async function pollHistory() {
  const seconds = dash.historyLoaded ? 15 : WINDOW_MAX_S;
  const r = await api('GET', `${opsPath}/stats/history?seconds=${seconds}`);
  if (!session.active) return null;
  if (r.ok && Array.isArray(r.data)) {
    mergeSamples(r.data);
    dash.historyLoaded = true;
    scheduleCharts();
    return HISTORY_MS;
  }
  return onReadError(r, 'the history', () => 5000);
}

function mergeSamples(list) {
  const last = dash.samples.length ? dash.samples[dash.samples.length - 1].t : -Infinity;
  for (const s of list) {
    const t = Date.parse(s.at);
    if (Number.isNaN(t) || t <= last) continue;
    dash.samples.push({ t, next: Number(s.next), served: Number(s.served), held: Number(s.held), sold: Number(s.sold) });
  }
  dash.samples.sort((a, b) => a.t - b.t);
  const keepFrom = now() - (WINDOW_MAX_S + 60) * 1000;
  let drop = 0;
  while (drop < dash.samples.length && dash.samples[drop].t < keepFrom) drop++;
  if (drop) dash.samples.splice(0, drop);
}

async function pollAudit() {
  const r = await api('GET', `${opsPath}/audit`);
  if (!session.active) return null;
  if (r.ok && Array.isArray(r.data)) {
    dash.audit = r.data;
    renderAudit();
    scheduleCharts(); // the rate set over time comes from the audit log
    return AUDIT_MS;
  }
  return onReadError(r, 'the audit log', () => 5000);
}

async function pollSeats() {
  await seatFeed.load(0);
  if (!session.active) return null;
  return live.isLive() ? SEATS_LIVE_MS : SEATS_POLL_MS;
}

/* ------------------------------------------------------------------ */

function renderAll() {
  renderSale();
  renderFigures();
  renderLevers();
  renderUpdated();
  scheduleCharts();
  scheduleSections();
}

function tick() {
  renderCountdown();
  renderUpdated();
  if (saleState() === 'scheduled') setText($('ops-state-detail'), saleDetail('scheduled'));
}
