/* onsale: what the door page shows: the answer to each scan, filling the screen
 * (green for in, red with the reason for a refusal, neutral for exits) and spoken
 * to screen readers (#say-status, or #say-alert for refusals); the offline banner;
 * the status line (link, scans waiting, last upload, keys and revocation list);
 * the conflicts found after the fact; the refusal for an account that is not
 * door staff. */

import { $, h, setText, show } from '../dom.js';
import { fmtDateTime, fmtSeat, fmtSeatSpoken, fmtTimeOfDay, plural } from '../format.js';
import { door } from './offline.js';
import { link } from './sync.js';

const VERDICT = {
  admitted: { tone: 'ok', mark: '✓', title: 'Admitted' },
  already_in: { tone: 'bad', mark: '✗', title: 'Already in' },
  void: { tone: 'bad', mark: '✗', title: 'Void ticket' },
  invalid: { tone: 'bad', mark: '✗', title: 'Not a valid ticket' },
  wrong_event: { tone: 'bad', mark: '✗', title: 'Wrong event' },
  exited: { tone: 'neutral', mark: '↩', title: 'Exit recorded' },
  not_in: { tone: 'neutral', mark: '•', title: 'Not inside' },
};

function sentence(text) {
  const t = String(text || '').trim();
  if (!t) return '';
  return t[0].toUpperCase() + t.slice(1) + (/[.!?]$/.test(t) ? '' : '.');
}

function detailOf(r) {
  switch (r.result) {
    case 'admitted':
      return '';
    case 'already_in': {
      const at = r.first_admitted_at ? ` at ${fmtTimeOfDay(r.first_admitted_at)}` : '';
      const through = r.first_device_id ? ` through ${r.first_device_id}` : '';
      return `Came in${at}${through}. Do not let this ticket in again.`;
    }
    case 'void':
      return sentence(r.reason || 'this ticket no longer admits: it was reissued or refunded');
    case 'invalid':
      if (r.unverifiable) return sentence(r.reason);
      return `${sentence(r.reason || 'this code was not issued by onsale')} Forged, altered or damaged codes admit nobody.`;
    case 'wrong_event':
      return sentence(r.reason || 'this ticket is for another event');
    case 'exited':
      return 'They can come back in with the same ticket.';
    case 'not_in':
      return 'This ticket was not inside: there is no entry to close.';
    default:
      return sentence(r.reason);
  }
}

let scans = 0;

function announce(text, urgent) {
  const on = $(urgent ? 'say-alert' : 'say-status');
  const off = $(urgent ? 'say-status' : 'say-alert');
  off.textContent = '';
  on.textContent = '';
  setTimeout(() => {
    on.textContent = text;
  }, 30);
}

function paint({ result, tone, mark, title, seat, detail, meta }) {
  const panel = $('result');
  panel.dataset.result = result;
  panel.dataset.tone = tone;
  panel.dataset.scan = String(scans);
  setText($('result-mark'), mark || '');
  setText($('result-title'), title);
  setText($('result-seat'), seat || '');
  show($('result-seat'), !!seat);
  setText($('result-detail'), detail || '');
  setText($('result-meta'), meta || '');
}

/** The answer to one scan (`offline`: this phone decided it). */
export function showResult(r, scan, offline) {
  scans++;
  const v = VERDICT[r.result] || { tone: 'bad', mark: '✗', title: 'Refused' };
  const seat = r.seat_id ? fmtSeat(r.seat_id) : '';
  const title = r.unverifiable ? 'Cannot check this code' : v.title;
  const detail = detailOf(r);
  const how = offline ? 'checked on this phone (offline)' : 'checked by the server';
  paint({
    result: r.result,
    tone: v.tone,
    mark: v.mark,
    title,
    seat,
    detail,
    meta: `${scan.direction === 'exit' ? 'Exit' : 'Entry'} · ${scan.device_id} · ${fmtTimeOfDay(scan.scanned_at)} · ${how}`,
  });
  $('result').dataset.offline = String(!!offline);
  announce([title, r.seat_id ? fmtSeatSpoken(r.seat_id) : '', detail].filter(Boolean).join('. '), v.tone === 'bad');
  if (navigator.vibrate) {
    try {
      navigator.vibrate(v.tone === 'bad' ? [180, 80, 180] : 60);
    } catch (_) {
      /* no vibration: fine */
    }
  }
}

/** A scan on its way to the server. */
export function showChecking() {
  paint({ result: 'checking', tone: 'idle', mark: '…', title: 'Checking…', seat: '', detail: '', meta: '' });
}

/** Something other than a verdict: a problem with this phone, or the server's refusal. */
export function showProblem(title, detail) {
  scans++;
  paint({ result: 'problem', tone: 'bad', mark: '!', title, seat: '', detail, meta: '' });
  announce(`${title}. ${detail}`, true);
}

/** The banner and the status line. */
export function renderStatus() {
  const n = door.pending.length;
  const banner = $('door-banner');
  let text = '';
  let kind = '';
  if (!link.online) {
    kind = 'offline';
    text = door.keys.length
      ? `Offline — ${plural(n, 'scan', 'scans')} waiting to upload; signatures checked on this phone`
      : 'Offline, and this phone has no keys for this event yet: codes cannot be checked until it connects once';
  } else if (link.error) {
    kind = 'error';
    text = `${link.error} ${plural(n, 'scan', 'scans')} waiting to upload; retrying.`;
  } else if (n) {
    kind = 'uploading';
    text = `Uploading ${plural(n, 'scan', 'scans')} made offline…`;
  }
  banner.dataset.kind = kind;
  setText(banner, text);
  show(banner, !!text);

  const parts = [link.online ? 'Online' : 'Offline', `${plural(n, 'scan', 'scans')} waiting`];
  parts.push(door.meta.uploadedAt ? `last upload ${fmtTimeOfDay(door.meta.uploadedAt)}` : 'nothing uploaded yet');
  parts.push(door.keys.length ? plural(door.keys.length, 'key', 'keys') : 'no keys yet');
  parts.push(`revocation list v${door.revoked.version || 0}`);
  if (door.meta.refreshedAt) parts.push(`checked ${fmtTimeOfDay(new Date(door.meta.refreshedAt).toISOString())}`);
  const line = $('door-status');
  line.dataset.online = String(link.online);
  line.dataset.pending = String(n);
  line.dataset.keys = String(door.keys.length);
  line.dataset.revokedVersion = String(door.revoked.version || 0);
  setText(line, parts.join(' · '));
}

function conflictText(c) {
  const here = `here${c.here_device ? ` (${c.here_device})` : ''} at ${fmtTimeOfDay(c.here_at)} offline`;
  if (c.kind === 'void') {
    return `Ticket ${c.seat_id} was admitted ${here}, but it was void${c.reason ? ` (${c.reason})` : ''}.`;
  }
  const first = c.first_device ? `at ${c.first_device}` : 'at another door';
  const when = c.first_at ? ` at ${fmtTimeOfDay(c.first_at)}` : '';
  return `Ticket ${c.seat_id} was admitted twice: ${here}, and ${first}${when}.`;
}

/** The conflicts found so far, newest first. */
export function renderConflicts() {
  const list = $('conflicts');
  show($('conflicts-card'), door.conflicts.length > 0);
  const key = door.conflicts.map((c) => c.scan_id).join(',');
  if (list.dataset.key === key) return;
  list.dataset.key = key;
  list.replaceChildren(
    ...door.conflicts.map((c) =>
      h('li', { 'data-ticket-id': c.ticket_id || '', 'data-seat-id': c.seat_id, 'data-kind': c.kind }, conflictText(c))
    )
  );
}

/** Says that uploads revealed `found` conflicts. */
export function announceConflicts(found) {
  renderConflicts();
  announce(`${plural(found.length, 'conflict', 'conflicts')} found while uploading: ${found.map(conflictText).join(' ')}`, true);
}

/** The event's name and start, in the page's head. */
export function renderHead(meta) {
  if (!meta.name) return;
  setText($('door-title'), `Door · ${meta.name}`);
  setText($('door-meta'), meta.starts_at ? `Show ${fmtDateTime(meta.starts_at)}` : '');
  document.title = `Door · ${meta.name} · onsale`;
}
