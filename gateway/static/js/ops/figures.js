/* onsale: the dashboard's words and figures: the sale's state and countdown, the
 * line now (queue, served, wait, rates, holds, seats), the farm (line lag, dead
 * letters, the workers), the payments and outbox, and how fresh the figures are. */

import { now } from '../clock.js';
import { $, setText, show } from '../dom.js';
import { fmtClock, fmtDateTime, plural } from '../format.js';
import { NONE, STATE_NAME, finite, fmtCents, fmtDuration, fmtTime, num, rate, setFigure } from './format.js';
import { STALE_MS, dash, onsaleMs, saleState } from './state.js';

/** What the sale's state means, in a sentence. */
export function saleDetail(s) {
  const per = dash.sale.admission_per_second;
  const perText = per != null ? `${plural(per, 'fan', 'fans')} per second` : 'the rate set';
  switch (s) {
    case 'scheduled': {
      const at = onsaleMs();
      if (at != null && at <= now()) return 'The on-sale time has come: the pre-queue is drawn any moment now.';
      return `Fans arriving now wait in the pre-queue; it is drawn at random when the sale opens${
        at != null ? ` (${fmtDateTime(new Date(at).toISOString())})` : ''
      }.`;
    }
    case 'drawing':
      return 'The pre-queue is being shuffled and numbered.';
    case 'open':
      return `Fans are admitted in queue order at ${perText}.`;
    case 'paused':
      return 'Nobody is admitted. Fans keep their place in line until you resume.';
    case 'sold_out':
      return 'Every seat is sold or held. Fans still in line are served if holds run out.';
    case 'closed':
      return 'No more fans can join and nobody else is admitted.';
    default:
      return '';
  }
}

export function renderSale() {
  const s = saleState();
  const el = $('ops-state');
  const shown = s || '';
  if (el.dataset.state !== shown) el.dataset.state = shown;
  setText($('ops-state-name'), s ? STATE_NAME[s] || s : 'Loading the sale…');
  let detail = saleDetail(s);
  if (dash.noSale && s === 'scheduled') detail += ' (The sale is set up by the first fan to join, the draw, or “Open now”.)';
  setText($('ops-state-detail'), detail);
  renderCountdown();
}

export function renderCountdown() {
  const el = $('ops-countdown');
  const at = onsaleMs();
  const s = saleState();
  const visible = s === 'scheduled' && at != null && at > now();
  show(el, visible);
  setText(el, visible ? `Opens in ${fmtClock(at - now())}` : '');
}

export function renderFigures() {
  const st = dash.stats;
  const s = saleState();
  const have = !!st && !dash.noSale;
  setFigure('stat-queue', have ? st.queue_length : null, have ? num(st.queue_length) : NONE);
  setFigure('stat-served', have ? st.served : null, have ? num(st.served) : NONE);
  setFigure('stat-arrivals', have ? st.arrivals_per_second : null, have ? rate(st.arrivals_per_second) : NONE);
  setFigure('stat-admitted', have ? st.admitted_per_second : null, have ? rate(st.admitted_per_second) : NONE);
  const per = dash.sale.admission_per_second != null ? dash.sale.admission_per_second : have ? st.admission_per_second : null;
  setFigure('stat-rate', per, num(per));
  setFigure('stat-holds', have ? st.holds_active : null, have ? num(st.holds_active) : NONE);
  setFigure('stat-held', have ? st.held : null, have ? num(st.held) : NONE);
  setFigure('stat-sold', have ? st.sold : null, have ? num(st.sold) : NONE);
  setFigure('stat-available', have ? st.available : null, have ? num(st.available) : NONE);

  const eta = have ? st.eta_seconds : null;
  let etaUnit = 'for the last in line';
  if (eta != null) {
    setFigure('stat-eta', eta, fmtClock(eta * 1000));
    etaUnit = eta >= 3600 ? 'h:mm:ss for the last in line' : 'min:s for the last in line';
  } else {
    setFigure('stat-eta', null, NONE);
    if (s === 'paused') etaUnit = 'none while paused';
    else if (s && s !== 'open') etaUnit = 'only while the sale is open';
  }
  setText($('stat-eta-unit'), etaUnit);

  let pace = '';
  if (have && s === 'open') {
    if (st.queue_length === 0) pace = 'The line is empty: every fan who joined has been served.';
    else if (per) {
      const pct = Math.round((st.admitted_per_second / per) * 100);
      pace = `Admitting ${rate(st.admitted_per_second)} fans per second against ${num(per)} set (${pct} %).`;
    }
  } else if (have && s === 'paused') {
    pace = `Paused with ${plural(st.queue_length, 'fan', 'fans')} in line.`;
  }
  setText($('stat-pace'), pace);
  renderFarm(have ? st : null);
  renderPayments(have ? st : null);
}

/* ---------- the farm and the payments ---------- */

/* Servers before these figures leave them out of the stats: they show NONE, and
 * `key in st` tells "not reported" from the null a server sends for "unknown". */
function reported(st, key) {
  return !!st && Object.prototype.hasOwnProperty.call(st, key);
}

function renderFarm(st) {
  const lag = st ? finite(st.line_lag) : null;
  setFigure('stat-line-lag', lag, num(lag));
  setText(
    $('stat-line-lag-unit'),
    reported(st, 'line_lag') && lag == null ? 'unknown right now' : 'entries no worker has taken yet'
  );
  const pending = st ? finite(st.line_pending) : null;
  setFigure('stat-line-pending', pending, num(pending));

  const dead = st ? finite(st.dead_letters) : null;
  setFigure('stat-dead-letters', dead, num(dead));
  const warn = dead != null && dead > 0;
  const fig = $('figure-dead-letters');
  if (fig.dataset.warn !== String(warn)) fig.dataset.warn = String(warn);
  const farm = $('farm');
  if (farm.dataset.warn !== String(warn)) farm.dataset.warn = String(warn);
  setText(
    $('stat-dead-letters-unit'),
    warn ? `${dead === 1 ? 'entry' : 'entries'} set aside after failing again and again: look into them` : 'entries set aside after failing'
  );

  renderWorkers(st);
}

function renderWorkers(st) {
  const body = $('stat-workers');
  let message = null;
  if (!st || !reported(st, 'workers') || !Array.isArray(st.workers)) message = NONE;
  else if (!st.workers.length) message = 'No booking worker is reading this line.';
  if (message != null) {
    const only = body.rows.length === 1 && body.rows[0].classList.contains('empty') ? body.rows[0] : null;
    if (only) setText(only.cells[0], message);
    else {
      const tr = document.createElement('tr');
      tr.className = 'empty';
      const td = document.createElement('td');
      td.colSpan = 3;
      td.textContent = message;
      tr.append(td);
      body.replaceChildren(tr);
    }
    return;
  }
  const workers = st.workers
    .filter((w) => w && w.name != null)
    .map((w) => ({ name: String(w.name), pending: finite(w.pending), idleMs: finite(w.idle_ms) }))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const existing = new Map();
  for (const tr of Array.from(body.rows)) {
    if (tr.dataset.worker != null) existing.set(tr.dataset.worker, tr);
    else tr.remove();
  }
  let at = 0;
  for (const w of workers) {
    let tr = existing.get(w.name);
    existing.delete(w.name);
    if (!tr) {
      tr = document.createElement('tr');
      tr.dataset.worker = w.name;
      const th = document.createElement('th');
      th.scope = 'row';
      th.textContent = w.name;
      const p = document.createElement('td');
      p.className = 'num';
      const i = document.createElement('td');
      i.className = 'num';
      tr.append(th, p, i);
    }
    if (body.rows[at] !== tr) body.insertBefore(tr, body.rows[at] || null);
    at++;
    const pending = w.pending == null ? '' : String(w.pending);
    const idle = w.idleMs == null ? '' : String(w.idleMs);
    if (tr.dataset.pending !== pending) tr.dataset.pending = pending;
    if (tr.dataset.idleMs !== idle) tr.dataset.idleMs = idle;
    setText(tr.cells[1], num(w.pending));
    setText(tr.cells[2], w.idleMs == null ? NONE : fmtDuration(w.idleMs / 1000));
  }
  for (const tr of existing.values()) tr.remove();
}

function renderPayments(st) {
  const orders = st && st.orders && typeof st.orders === 'object' ? st.orders : null;
  for (const [id, key] of [
    ['stat-paid', 'paid'],
    ['stat-declined', 'declined'],
    ['stat-pending-orders', 'pending'],
    ['stat-refunded', 'refunded'],
    ['stat-cancelled', 'cancelled'],
  ]) {
    const v = orders ? finite(orders[key]) : null;
    setFigure(id, v, num(v));
  }

  const cents = st ? finite(st.revenue_cents) : null;
  const currency = st && typeof st.currency === 'string' && st.currency ? st.currency : null;
  setFigure('stat-revenue', cents, fmtCents(cents, currency));
  let unit = 'from paid orders';
  if (cents != null && !currency) unit = reported(st, 'currency') ? 'from paid orders (no order yet, so no currency)' : 'from paid orders (currency not reported)';
  setText($('stat-revenue-unit'), unit);

  const unpublished = st ? finite(st.outbox_unpublished) : null;
  setFigure('stat-outbox', unpublished, num(unpublished));
  const lag = st ? finite(st.outbox_lag_seconds) : null;
  setFigure('stat-outbox-lag', lag, fmtDuration(lag));
  let lagUnit = 'since the oldest was written';
  if (lag == null && reported(st, 'outbox_lag_seconds')) lagUnit = unpublished === 0 ? 'nothing is waiting' : 'age unknown';
  setText($('stat-outbox-lag-unit'), lagUnit);
}

export function renderUpdated() {
  const el = $('stats-updated');
  if (!dash.statsAt) {
    setText(el, dash.noSale ? '' : 'Waiting for the first figures…');
    el.dataset.stale = 'false';
    return;
  }
  const age = Date.now() - dash.statsAt;
  const stale = age > STALE_MS;
  el.dataset.stale = String(stale);
  setText(
    el,
    stale
      ? `The figures are ${Math.round(age / 1000)} s old: the server has not answered since ${fmtTime(dash.statsAt)}. Retrying…`
      : `Figures updated ${fmtTime(dash.statsAt)}`
  );
}
