/* onsale: the dashboard's audit log (#audit): who pulled which lever, newest first,
 * with what changed in words; rows new since the last read are marked fresh. */

import { $, show } from '../dom.js';
import { fmtDateTime, plural } from '../format.js';
import { STATE_NAME, fmtTime, num } from './format.js';
import { dash } from './state.js';

const ACTION_NAME = {
  open: 'Opened',
  pause: 'Paused',
  resume: 'Resumed',
  close: 'Closed',
  admission: 'Admission rate',
  draw: 'Draw',
  sold_out: 'Sold out',
  reopened: 'Open again',
  restore: 'Restored',
  cancel: 'Show cancelled',
  refund: 'Refunded',
  rebuild: 'Seat map rebuilt',
  release: 'Request ended',
};

function plain(v) {
  if (v == null) return '';
  if (typeof v === 'number') return num(v);
  if (typeof v === 'string') return STATE_NAME[v] ? STATE_NAME[v].toLowerCase() : v;
  return JSON.stringify(v);
}

function changeText(a) {
  const d = a.detail && typeof a.detail === 'object' ? a.detail : {};
  const parts = [];
  if (a.from != null || a.to != null) {
    let t = `${plain(a.from) || '?'} → ${plain(a.to) || '?'}`;
    if (a.action === 'admission') t += ' per second';
    parts.push(t);
  }
  if (typeof d.cohort === 'number') parts.push(`pre-queue of ${plural(d.cohort, 'request', 'requests')} drawn`);
  if (typeof d.prequeue_ended === 'number') parts.push(`${plural(d.prequeue_ended, 'pre-queue request', 'pre-queue requests')} ended`);
  if (a.action === 'refund' && Array.isArray(d.seats)) {
    const amount = typeof d.amount_cents === 'number' ? ` (${(d.amount_cents / 100).toFixed(2)})` : '';
    parts.push(`${plural(d.seats.length, 'ticket', 'tickets')}${amount}: “${d.reason || ''}”`);
  }
  if (a.action === 'cancel' && d.reason) parts.push(`“${d.reason}”`);
  if (a.action === 'release' && d.request_id) {
    parts.push(`request ${String(d.request_id).slice(0, 8)} of a fan: ${plain(d.state)}`);
  }
  if (a.action === 'rebuild' && typeof d.available === 'number') {
    parts.push(`${num(d.available)} available, ${num(d.held)} held, ${num(d.sold)} sold`);
  }
  // A lever whose ledger step failed, finished by the next pull or the scheduler.
  if (d.finished_late) parts.push('recorded late, after a failure');
  if (!parts.length) {
    const rest = Object.entries(d).filter(([k]) => k !== 'from' && k !== 'to' && k !== 'per_second');
    if (rest.length) parts.push(rest.map(([k, v]) => `${k.replace(/_/g, ' ')}: ${plain(v)}`).join(', '));
  }
  return parts.join(' · ');
}

export function renderAudit() {
  const list = dash.audit;
  const top = list.length ? `${list.length}|${list[0].at}|${list[0].action}|${list[list.length - 1].at}` : '0';
  if (top === dash.auditTop) return;
  const previousTop = dash.auditTop ? dash.auditNewest : null;
  dash.auditTop = top;
  dash.auditNewest = list.length ? Date.parse(list[0].at) : 0;
  const body = $('audit').tBodies[0];
  const rows = list.map((a) => {
    const tr = document.createElement('tr');
    tr.dataset.action = a.action;
    if (a.actor_email) tr.dataset.actor = a.actor_email;
    const at = Date.parse(a.at);
    if (previousTop != null && at > previousTop) tr.className = 'fresh';

    const when = document.createElement('td');
    const time = document.createElement('time');
    time.dateTime = a.at;
    time.title = fmtDateTime(a.at);
    time.textContent = fmtTime(at);
    when.append(time);

    const who = document.createElement('td');
    who.className = 'audit-who';
    who.textContent = a.actor_email || (a.actor ? `user ${String(a.actor).slice(0, 8)}` : 'the system');

    const what = document.createElement('td');
    what.className = 'audit-action';
    what.textContent = ACTION_NAME[a.action] || a.action;

    const change = document.createElement('td');
    change.textContent = changeText(a);

    tr.append(when, who, what, change);
    return tr;
  });
  body.replaceChildren(...rows);
  show($('audit-empty'), !list.length);
}
