/* onsale: how the operators' pages write figures: counts, rates, durations, money
 * in cents, times of day, a sale's state, and a figure's element with its raw
 * value in data-value. */

import { now } from '../clock.js';
import { $, setText } from '../dom.js';
import { fmtNumber } from '../format.js';

/** What a figure shows when the server gave none. */
export const NONE = '—';

export const STATE_NAME = {
  scheduled: 'Scheduled',
  drawing: 'Drawing',
  open: 'Open',
  paused: 'Paused',
  sold_out: 'Sold out',
  closed: 'Closed',
};

/** "12", "1,204"; "—" for nothing. */
export function num(n) {
  return n == null || !Number.isFinite(Number(n)) ? NONE : fmtNumber(Number(n));
}

/** One decimal: "1.9", "0", "1,250.5". */
const oneDecimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1, minimumFractionDigits: 0 });
export function rate(n) {
  return n == null || !Number.isFinite(Number(n)) ? NONE : oneDecimal.format(Math.round(Number(n) * 10) / 10);
}

export function setFigure(id, value, text) {
  const el = $(id);
  if (!el) return;
  const v = value == null ? '' : String(value);
  if (el.dataset.value !== v) el.dataset.value = v;
  setText(el, text);
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const dayFormat = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short' });
export function fmtTime(ms) {
  const d = new Date(ms);
  if (Number.isNaN(d.getTime())) return '';
  const today = new Date(now()).toDateString() === d.toDateString();
  return today ? timeFormat.format(d) : `${dayFormat.format(d)}, ${timeFormat.format(d)}`;
}

/** "45 s", "5 min"; spans of a minute and a half or more in whole minutes. */
export function fmtSpan(seconds) {
  const s = Math.round(seconds);
  if (s >= 60 && s % 60 === 0) return `${s / 60} min`;
  if (s >= 90) return `${Math.round(s / 60)} min`;
  return `${s} s`;
}

/** A finite number from the API, or null (absent, null, or not a number). */
export function finite(v) {
  return v == null || v === '' || !Number.isFinite(Number(v)) ? null : Number(v);
}

/** "0.4 s", "12 s", "2 min 5 s", "1 h 3 min"; NONE for nothing. */
export function fmtDuration(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return NONE;
  const s = Math.max(0, seconds);
  if (s < 10) return `${oneDecimal.format(Math.round(s * 10) / 10)} s`;
  if (s < 60) return `${Math.round(s)} s`;
  const whole = Math.round(s);
  if (whole < 3600) {
    const m = Math.floor(whole / 60);
    const r = whole % 60;
    return r ? `${m} min ${r} s` : `${m} min`;
  }
  const minutes = Math.round(whole / 60);
  const h = Math.floor(minutes / 60);
  const m = minutes % 60;
  return m ? `${h} h ${m} min` : `${h} h`;
}

const twoDecimals = new Intl.NumberFormat(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });

/** An amount in cents in its currency ("€1,140.00"); without one, a plain amount. */
const moneyFormats = new Map();
export function fmtCents(cents, currency) {
  if (cents == null) return NONE;
  if (currency) {
    let f = moneyFormats.get(currency);
    if (f === undefined) {
      try {
        f = new Intl.NumberFormat(undefined, { style: 'currency', currency });
      } catch (_) {
        f = null; // a code Intl does not know: shown beside the amount
      }
      moneyFormats.set(currency, f);
    }
    if (f) return f.format(cents / 100);
    return `${twoDecimals.format(cents / 100)} ${currency}`;
  }
  return cents === 0 ? num(0) : twoDecimals.format(cents / 100);
}
