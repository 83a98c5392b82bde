/* onsale: the fan's seat map: keeping the seats current (a snapshot, then the
 * socket's deltas), drawing the map by section and row, painting each seat's state,
 * the fan's own seats, picking seats by pointer or keyboard (one tab stop; the arrow
 * keys, Home and End move, Enter or Space picks), and the count of seats left. */

import { $, say, setText } from '../dom.js';
import { fmtMoney, fmtNumber, plural } from '../format.js';
import { SeatFeed } from '../seat-feed.js';
import { renderJoinMode } from './join.js';
import { eventId, isLive, seatLabel, state, totalOf } from './state.js';

export const seatFeed = new SeatFeed(eventId, {
  attempts: 8,
  reset(list) {
    const same = seatFeed.loaded && list.length === state.seats.size && list.every((s) => state.seats.has(s.seat_id));
    if (!same) buildMap(list);
    else for (const s of list) setSeatState(s.seat_id, s.state);
  },
  change: (c) => setSeatState(c.seat_id, c.state),
  changed: renderSeatSummary,
});

/* what window.onsaleState shows of the feed */
Object.defineProperties(state, {
  seatsVersion: { get: () => seatFeed.version, enumerable: true },
  seatsBuilt: { get: () => seatFeed.loaded, enumerable: true },
});

/** Fetches the whole map; deltas arriving meanwhile wait and are applied after it. */
export function loadSeats(minVersion) {
  return seatFeed.load(minVersion);
}

function buildMap(list) {
  const root = $('seat-map');
  const sections = new Map();
  for (const s of list) {
    if (!sections.has(s.section)) sections.set(s.section, { tier: s.price_tier, rows: new Map() });
    const sec = sections.get(s.section);
    if (!sec.rows.has(s.row)) sec.rows.set(s.row, []);
    sec.rows.get(s.row).push(s);
  }
  const focusedId = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.seatId : null;
  state.seats.clear();
  state.rows = [];
  const frag = document.createDocumentFragment();
  if (list.length) {
    const stage = document.createElement('div');
    stage.className = 'stage';
    stage.setAttribute('aria-hidden', 'true');
    stage.textContent = 'Stage';
    frag.append(stage);
  }
  let i = 0;
  for (const [name, sec] of sections) {
    i++;
    const el = document.createElement('section');
    el.className = 'map-section';
    el.dataset.section = name;
    el.setAttribute('aria-labelledby', `map-section-${i}`);
    const h = document.createElement('h3');
    h.id = `map-section-${i}`;
    const title = document.createElement('span');
    title.textContent = name;
    const tier = document.createElement('span');
    tier.className = 'tier';
    const tiers = new Set();
    for (const seats of sec.rows.values()) for (const s of seats) tiers.add(s.price_tier);
    tier.textContent = Array.from(tiers)
      .map((t) => {
        const p = state.event && state.event.prices ? state.event.prices[t] : undefined;
        return typeof p === 'number' ? `${t} · ${fmtMoney(p)}` : t;
      })
      .join(', ');
    const count = document.createElement('span');
    count.className = 'section-count';
    h.append(title, tier, count);
    el.append(h);
    const rowsEl = document.createElement('div');
    rowsEl.className = 'rows';
    for (const [rowLabel, seats] of sec.rows) {
      seats.sort((a, b) => a.number - b.number);
      const row = document.createElement('div');
      row.className = 'seat-row';
      row.setAttribute('role', 'group');
      row.setAttribute('aria-label', `${name}, row ${rowLabel}`);
      const label = document.createElement('span');
      label.className = 'row-label';
      label.setAttribute('aria-hidden', 'true');
      label.textContent = rowLabel;
      const seatsEl = document.createElement('div');
      seatsEl.className = 'row-seats';
      const entries = [];
      for (const s of seats) {
        const b = document.createElement('button');
        b.type = 'button';
        b.className = 'seat';
        b.textContent = String(s.number);
        b.dataset.seatId = s.seat_id;
        b.dataset.testid = 'seat';
        b.tabIndex = -1;
        const entry = { seat: Object.assign({}, s), el: b, r: state.rows.length, c: entries.length };
        entries.push(entry);
        state.seats.set(s.seat_id, entry);
        paintSeat(entry);
        seatsEl.append(b);
      }
      state.rows.push(entries);
      row.append(label, seatsEl);
      rowsEl.append(row);
    }
    el.append(rowsEl);
    const more = document.createElement('p');
    more.className = 'rows-more';
    more.hidden = true;
    more.textContent = 'More seats to the right: scroll sideways, or use the arrow keys →';
    el.append(more);
    frag.append(el);
  }
  root.replaceChildren(frag);
  markOverflowingRows();
  root.setAttribute('aria-busy', 'false');
  if (list.length === 0) {
    const p = document.createElement('p');
    p.className = 'muted';
    p.textContent = 'This event has no seats.';
    root.append(p);
  }
  /* picks that no longer exist are dropped */
  for (const id of Array.from(state.selected)) if (!state.seats.has(id)) state.selected.delete(id);
  for (const id of state.selected) paintSeat(state.seats.get(id));
  markMine();
  const keep = focusedId && state.seats.get(focusedId);
  setRoving(keep || firstSeat());
  if (keep) keep.el.focus();
  fillSections(sections);
}

function fillSections(sections) {
  const select = $('best-section');
  const current = select.value;
  select.replaceChildren(new Option('Any section', ''));
  for (const name of sections.keys()) select.append(new Option(name, name));
  if (Array.from(select.options).some((o) => o.value === current)) select.value = current;
}

function firstSeat() {
  for (const row of state.rows) for (const e of row) if (e.seat.state === 'available') return e;
  return state.rows.length && state.rows[0].length ? state.rows[0][0] : null;
}

export function paintSeat(entry) {
  if (!entry) return;
  const { seat, el } = entry;
  const selected = state.selected.has(seat.seat_id);
  el.dataset.state = seat.state;
  el.setAttribute('aria-pressed', selected ? 'true' : 'false');
  el.setAttribute('aria-disabled', seat.state === 'available' || selected ? 'false' : 'true');
  const mine = el.dataset.mine === 'true' ? ', yours' : '';
  el.setAttribute(
    'aria-label',
    `Seat ${seat.section} ${seat.row} ${seat.number}, ${seat.state}${mine}, tier ${seat.price_tier}`
  );
}

function setSeatState(id, next) {
  const entry = state.seats.get(id);
  if (!entry || entry.seat.state === next) return;
  entry.seat.state = next;
  if (next !== 'available' && state.selected.has(id)) {
    state.selected.delete(id);
    say('join-message', `Seat ${seatLabel(id)} was just taken; pick another.`, 'error');
    renderPicked();
  }
  paintSeat(entry);
}

/** Marks the seats the fan's request holds, pays for or bought. */
export function markMine() {
  const mine = new Set(state.request && state.request.seats && ['held', 'paying', 'confirmed'].includes(state.request.state) ? state.request.seats : []);
  for (const entry of state.seats.values()) {
    const is = mine.has(entry.seat.seat_id);
    if ((entry.el.dataset.mine === 'true') !== is) {
      if (is) entry.el.dataset.mine = 'true';
      else delete entry.el.dataset.mine;
      paintSeat(entry);
    }
  }
}

function renderSeatSummary() {
  let available = 0;
  const perSection = new Map();
  for (const { seat } of state.seats.values()) {
    const c = perSection.get(seat.section) || { a: 0, n: 0 };
    c.n++;
    if (seat.state === 'available') {
      available++;
      c.a++;
    }
    perSection.set(seat.section, c);
  }
  setText($('seat-summary'), state.seats.size ? `${fmtNumber(available)} of ${fmtNumber(state.seats.size)} seats available` : '');
  for (const el of document.querySelectorAll('.map-section')) {
    const c = perSection.get(el.dataset.section);
    if (c) setText(el.querySelector('.section-count'), `${fmtNumber(c.a)} available`);
  }
}

/**
 * A section whose rows are wider than the card scrolls sideways; on a phone the
 * scrollbar is hidden until touched, so the section says so in words.
 */
function markOverflowingRows() {
  for (const rows of document.querySelectorAll('.map-section .rows')) {
    const more = rows.parentElement.querySelector('.rows-more');
    if (more) more.hidden = rows.scrollWidth <= rows.clientWidth + 1;
  }
}
window.addEventListener('resize', markOverflowingRows);

/* ----- picking seats ----- */

function canPick() {
  return !isLive(state.request) && !(state.request && state.request.state === 'confirmed');
}

function toggleSeat(entry) {
  const id = entry.seat.seat_id;
  const max = state.event ? state.event.max_per_fan : 4;
  if (!canPick()) {
    say('seatmap-message', 'You already have a request in this event; seats are picked before joining.', 'error');
    return;
  }
  if (state.selected.has(id)) {
    state.selected.delete(id);
  } else {
    if (entry.seat.state !== 'available') {
      announcePick(`Seat ${seatLabel(id)} is ${entry.seat.state}.`);
      return;
    }
    if (state.selected.size >= max) {
      announcePick(`You can pick up to ${max} seats. Unpick one first.`);
      return;
    }
    state.selected.add(id);
  }
  paintSeat(entry);
  say('seatmap-message', '', '');
  $('mode-pick').checked = true;
  renderJoinMode();
  renderPicked();
}

function announcePick(text) {
  say('seatmap-message', text, 'error');
}

/** The seats picked, with their total, in #picked-summary. */
export function renderPicked() {
  const ids = Array.from(state.selected);
  const max = state.event ? state.event.max_per_fan : 4;
  if (!ids.length) {
    say('picked-summary', `No seats picked yet. Pick up to ${max} on the seat map.`, '');
    return;
  }
  const total = totalOf(ids);
  say(
    'picked-summary',
    `${plural(ids.length, 'seat', 'seats')} picked: ${ids.map(seatLabel).join('; ')}` +
      (total != null ? ` (${fmtMoney(total)})` : ''),
    ''
  );
}

function setRoving(entry) {
  const current = $('seat-map').querySelector('.seat[tabindex="0"]');
  if (current && (!entry || current !== entry.el)) current.tabIndex = -1;
  if (entry) entry.el.tabIndex = 0;
}

export function wireSeatMap() {
  const root = $('seat-map');
  root.addEventListener('click', (e) => {
    const b = e.target.closest('.seat');
    if (!b) return;
    const entry = state.seats.get(b.dataset.seatId);
    if (!entry) return;
    setRoving(entry);
    toggleSeat(entry);
  });
  root.addEventListener('focusin', (e) => {
    const b = e.target.closest('.seat');
    if (b && state.seats.has(b.dataset.seatId)) setRoving(state.seats.get(b.dataset.seatId));
  });
  root.addEventListener('keydown', (e) => {
    const b = e.target.closest('.seat');
    if (!b) return;
    const entry = state.seats.get(b.dataset.seatId);
    if (!entry) return;
    let next = null;
    const row = state.rows[entry.r];
    switch (e.key) {
      case 'ArrowRight':
        next = row[entry.c + 1];
        break;
      case 'ArrowLeft':
        next = row[entry.c - 1];
        break;
      case 'ArrowDown': {
        const r = state.rows[entry.r + 1];
        next = r && r[Math.min(entry.c, r.length - 1)];
        break;
      }
      case 'ArrowUp': {
        const r = state.rows[entry.r - 1];
        next = r && r[Math.min(entry.c, r.length - 1)];
        break;
      }
      case 'Home':
        next = row[0];
        break;
      case 'End':
        next = row[row.length - 1];
        break;
      default:
        return;
    }
    e.preventDefault();
    if (next) {
      setRoving(next);
      next.el.focus();
    }
  });
}
