/* onsale: a fan's tickets, built here for every page that shows them (the event
 * page's "Your tickets" card, /orders): one entry per ticket with its QR code, its
 * seat and its state. The QR (GET /v1/tickets/{id}/qr.svg) needs the account's
 * token, so it is fetched by the API client and shown through a blob: URL; entries
 * are kept across renders and a QR is fetched once per ticket version. */

import { api, retryable } from './api.js';
import { h, setText, show } from './dom.js';
import { fmtSeat, fmtSeatSpoken, message } from './format.js';
import { enc, sleep } from './util.js';

export const TICKET_STATE = {
  valid: 'Valid',
  checked_in: 'Checked in',
  void: 'Void',
};

const STATE_NOTE = {
  valid: 'Show this code at the door. It admits once.',
  checked_in: 'Scanned in at the door.',
  void: 'This ticket no longer admits anyone.',
};

/* `${ticket_id}:${version}` -> Promise<{url} | {error}>; a failed fetch is forgotten */
const qrs = new Map();
/* ticket_id -> the key of the QR shown, so an older version's blob URL can go */
const current = new Map();

function fetchQr(t) {
  const key = `${t.ticket_id}:${t.version}`;
  let p = qrs.get(key);
  if (!p) {
    p = (async () => {
      let r;
      for (let attempt = 0; attempt < 4; attempt++) {
        r = await api('GET', `/v1/tickets/${enc(t.ticket_id)}/qr.svg`, { blob: true, headers: { Accept: 'image/svg+xml' } });
        if (r.ok && r.data) return { url: URL.createObjectURL(r.data) };
        if (!retryable(r)) break;
        await sleep((r.retryAfter != null ? Math.max(1, r.retryAfter) : 1 + attempt) * 1000);
      }
      qrs.delete(key);
      return { error: message(r.error) };
    })();
    qrs.set(key, p);
  }
  const before = current.get(t.ticket_id);
  if (before && before !== key) {
    const old = qrs.get(before);
    qrs.delete(before);
    if (old) old.then((q) => q.url && URL.revokeObjectURL(q.url));
  }
  current.set(t.ticket_id, key);
  return p;
}

/** Tickets in map order of their seats: section, row, then number. */
export function bySeat(a, b) {
  const pa = String(a.seat_id).split('-');
  const pb = String(b.seat_id).split('-');
  if (pa[0] !== pb[0]) return pa[0] < pb[0] ? -1 : 1;
  if (pa[1] !== pb[1]) return pa[1].length - pb[1].length || (pa[1] < pb[1] ? -1 : 1);
  return Number(pa[2]) - Number(pb[2]);
}

function ticketItem(t) {
  const img = h('img', { class: 'qr', width: 264, height: 264, alt: '', 'data-loaded': 'false', decoding: 'async' });
  const note = h('p', { class: 'qr-note small' });
  const retry = h('button', { type: 'button', class: 'button-link qr-retry', hidden: true }, 'Try again');
  const li = h(
    'li',
    { class: 'ticket' },
    h('div', { class: 'ticket-qr' }, img, note, retry),
    h(
      'div',
      { class: 'ticket-body' },
      h('p', { class: 'ticket-seat' }),
      h('p', { class: 'ticket-status' }, h('span', { class: 'ticket-state' }), ' ', h('span', { class: 'ticket-note muted small' })),
      h('div', { class: 'ticket-actions actions' }),
      h('p', { class: 'form-message ticket-message', 'aria-live': 'polite' })
    )
  );
  retry.addEventListener('click', () => {
    li.dataset.qrFor = '';
    showQr(li, JSON.parse(li.dataset.ticket));
  });
  return li;
}

function showQr(li, t) {
  const img = li.querySelector('img.qr');
  const note = li.querySelector('.qr-note');
  const retry = li.querySelector('.qr-retry');
  const key = `${t.ticket_id}:${t.version}`;
  if (t.state === 'void') {
    li.dataset.qrFor = '';
    show(img, false);
    show(retry, false);
    setText(note, 'No QR code: this ticket is void.');
    return;
  }
  if (li.dataset.qrFor === key) return;
  li.dataset.qrFor = key;
  img.dataset.loaded = 'false';
  show(retry, false);
  setText(note, 'Loading the QR code…');
  fetchQr(t).then((q) => {
    if (li.dataset.qrFor !== key) return; // a newer version took its place
    if (q.error) {
      li.dataset.qrFor = '';
      setText(note, `The QR code could not be loaded. ${q.error}`);
      show(retry, true);
      return;
    }
    img.onload = () => {
      if (li.dataset.qrFor !== key) return;
      img.dataset.loaded = 'true';
      img.dataset.version = String(t.version);
      setText(note, '');
    };
    img.onerror = () => {
      setText(note, 'The QR code could not be shown.');
      show(retry, true);
      li.dataset.qrFor = '';
    };
    img.dataset.loaded = 'false';
    img.src = q.url;
    show(img, true);
  });
}

function fill(li, t, actions) {
  li.dataset.ticketId = t.ticket_id;
  li.dataset.seatId = t.seat_id;
  li.dataset.version = String(t.version);
  li.dataset.state = t.state;
  li.dataset.ticket = JSON.stringify({ ticket_id: t.ticket_id, version: t.version, state: t.state });
  const img = li.querySelector('img.qr');
  const alt = `QR code of the ticket for ${fmtSeatSpoken(t.seat_id)}`;
  if (img.alt !== alt) img.alt = alt;
  setText(li.querySelector('.ticket-seat'), fmtSeat(t.seat_id));
  const state = li.querySelector('.ticket-state');
  state.dataset.state = t.state;
  setText(state, TICKET_STATE[t.state] || t.state);
  setText(li.querySelector('.ticket-note'), STATE_NOTE[t.state] || '');
  showQr(li, t);
  const box = li.querySelector('.ticket-actions');
  const nodes = actions ? actions(t, li) || [] : [];
  if (box.dataset.for !== `${t.ticket_id}:${t.version}:${t.state}`) {
    box.dataset.for = `${t.ticket_id}:${t.version}:${t.state}`;
    const focused = box.contains(document.activeElement) ? document.activeElement.dataset.action : null;
    box.replaceChildren(...nodes);
    if (focused) {
      const again = box.querySelector(`[data-action="${focused}"]`);
      if (again) again.focus();
    }
  }
  show(box, box.childElementCount > 0);
}

/**
 * Shows `tickets` in `list` (a <ul>), in seat order, keeping the entries already
 * there; `actions(ticket, li)` answers the buttons an entry gets (asked again when
 * the ticket's version or state changes).
 */
export function renderTickets(list, tickets, { actions } = {}) {
  const byId = new Map();
  for (const li of Array.from(list.children)) byId.set(li.dataset.ticketId, li);
  const items = [...tickets].sort(bySeat).map((t) => {
    const li = byId.get(t.ticket_id) || ticketItem(t);
    byId.delete(t.ticket_id);
    fill(li, t, actions);
    return li;
  });
  items.forEach((li, i) => {
    if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null);
  });
  for (const li of byId.values()) li.remove();
}

/** The message line of a ticket's entry. */
export function ticketMessage(li, text, kind) {
  const el = li && li.querySelector('.ticket-message');
  if (!el) return;
  el.textContent = text || '';
  el.dataset.kind = kind || '';
}
