/* onsale: the dashboard's Door card (#door-card): tickets inside now against
 * tickets sold, in total and per section, and the conflicts the door's uploads
 * revealed (GET /v1/ops/events/{id}/checkin, every 3 s); making a user door staff
 * of the event (PUT /v1/events/{id}/staff/{user_id}, DELETE to take it back); the
 * link to the door page. */

import { api } from '../api.js';
import { $, h, say, setText, show } from '../dom.js';
import { fmtSeat, message } from '../format.js';
import { enc } from '../util.js';
import { NONE, fmtTime, num, setFigure } from './format.js';
import { poller } from './poller.js';
import { forbidden } from './session.js';
import { dash, eventId, opsPath, session } from './state.js';

const DOOR_MS = 3000;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const KIND = { double_entry: 'Double entry', void: 'Void ticket admitted' };

export const doorPoller = poller(pollDoor);

async function pollDoor() {
  $('door-link').href = `/checkin/${enc(eventId)}`;
  const r = await api('GET', `${opsPath}/checkin`);
  if (!session.active) return null;
  if (r.ok && r.data) {
    dash.door = r.data;
    dash.doorAt = Date.now();
    renderDoor();
    return DOOR_MS;
  }
  if (r.status === 401) return null;
  if (r.status === 403) {
    forbidden();
    return null;
  }
  setText($('door-updated'), `The door’s figures could not be read (${message(r.error)}). Retrying…`);
  return r.retryAfter != null ? Math.max(1000, r.retryAfter * 1000) : 5000;
}

function when(device, at) {
  const t = at ? Date.parse(at) : NaN;
  return [device || '', Number.isNaN(t) ? '' : fmtTime(t)].filter(Boolean).join(' · ') || NONE;
}

function renderDoor() {
  const d = dash.door;
  setFigure('door-inside', d.checked_in, num(d.checked_in));
  setFigure('door-sold', d.sold, num(d.sold));
  const share = d.sold ? Math.round((d.checked_in / d.sold) * 100) : null;
  setText($('door-inside-unit'), share != null ? `inside now, ${share} % of the tickets sold` : 'inside now');
  const conflicts = Array.isArray(d.conflicts) ? d.conflicts : [];
  setFigure('door-conflict-count', conflicts.length, num(conflicts.length));
  $('figure-door-conflicts').dataset.warn = String(conflicts.length > 0);

  const sections = Array.isArray(d.sections) ? d.sections : [];
  const body = $('door-sections');
  body.replaceChildren(
    ...(sections.length
      ? sections.map((s) => {
        const pct = s.sold ? (s.checked_in / s.sold) * 100 : 0;
        const bar = h('span', { class: 'meter-in' });
        bar.style.width = `${pct}%`;
        const meter = h('span', { class: 'meter meter-door', 'aria-hidden': 'true', title: `${Math.round(pct)} % inside` }, bar);
        return h('tr', { 'data-section': s.section, 'data-checked-in': s.checked_in, 'data-sold': s.sold },
          h('th', { scope: 'row' }, s.section),
          h('td', { class: 'num' }, num(s.checked_in)),
          h('td', { class: 'num' }, num(s.sold)),
          h('td', { class: 'bar-col' }, meter));
      })
      : [h('tr', { class: 'empty' }, h('td', { colspan: 4 }, 'No tickets sold yet.'))])
  );

  const list = $('door-conflicts');
  const key = conflicts.map((c) => c.scan_id).join(',');
  if (list.dataset.key !== key) {
    list.dataset.key = key;
    list.replaceChildren(...conflicts.map((c) => h('tr', { 'data-ticket-id': c.ticket_id, 'data-kind': c.kind, 'data-seat-id': c.seat_id },
      h('td', {}, h('strong', {}, fmtSeat(c.seat_id)), h('br'), h('code', { class: 'small', title: c.ticket_id }, String(c.ticket_id).slice(0, 8))),
      h('td', {}, KIND[c.kind] || c.kind),
      h('td', {}, `${when(c.device_id, c.scanned_at)} (offline)`),
      h('td', {}, c.kind === 'void' ? NONE : when(c.first_device_id, c.first_admitted_at)))));
  }
  show($('door-conflicts-wrap'), conflicts.length > 0);
  show($('door-conflicts-empty'), !conflicts.length);
  setText($('door-updated'), `Updated ${fmtTime(dash.doorAt)}`);
}

/* ---------- door staff ---------- */

function staffError(text) {
  const input = $('staff-user');
  setText($('staff-error'), text || '');
  if (text) input.setAttribute('aria-invalid', 'true');
  else input.removeAttribute('aria-invalid');
}

async function staff(method) {
  const input = $('staff-user');
  const id = input.value.trim();
  if (!UUID.test(id)) {
    staffError('Enter the user’s id: 36 characters like 0b6c1a2e-3f4d-4e5f-8a9b-0c1d2e3f4a5b. The door page shows it to them.');
    input.focus();
    return;
  }
  staffError('');
  const buttons = [$('staff-add'), $('staff-remove')];
  for (const b of buttons) b.disabled = true;
  say('staff-message', method === 'PUT' ? 'Adding…' : 'Removing…', 'info');
  let r;
  try {
    r = await api(method, `/v1/events/${enc(eventId)}/staff/${enc(id)}`);
  } finally {
    for (const b of buttons) b.disabled = false;
  }
  if (r.ok) {
    say('staff-message', method === 'PUT'
      ? `User ${id} is door staff of this event: they can scan tickets on the door page once signed in.`
      : `User ${id} is no longer door staff of this event.`, 'ok');
    if (method === 'PUT') input.value = '';
  } else {
    say('staff-message', `Refused (${r.status || 'no answer'} ${r.error.code}): ${message(r.error)}`, 'error');
    if (r.status === 404 || r.status === 400 || r.status === 422) staffError(message(r.error));
  }
}

export function wireDoor() {
  $('door-link').href = `/checkin/${enc(eventId)}`;
  $('staff-form').addEventListener('submit', (e) => {
    e.preventDefault();
    staff('PUT');
  });
  $('staff-remove').addEventListener('click', () => staff('DELETE'));
}
