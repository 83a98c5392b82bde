/* onsale: seats left per section on the dashboard: the seat map kept current (a
 * snapshot, then the socket's deltas), counted per section, drawn as a table with
 * a bar per row. */

import { $, setText } from '../dom.js';
import { SeatFeed } from '../seat-feed.js';
import { num } from './format.js';
import { live } from './live.js';
import { dash, eventId, session } from './state.js';

export const seatFeed = new SeatFeed(eventId, {
  attempts: 6,
  active: () => session.active,
  strict: true,
  reset(list) {
    dash.seats.clear();
    dash.sections.clear();
    for (const s of list) {
      let sec = dash.sections.get(s.section);
      if (!sec) {
        sec = { tiers: new Set(), total: 0, available: 0, held: 0, sold: 0 };
        dash.sections.set(s.section, sec);
      }
      sec.tiers.add(s.price_tier);
      sec.total++;
      if (sec[s.state] != null) sec[s.state]++;
      dash.seats.set(s.seat_id, { section: s.section, state: s.state });
    }
  },
  change(c) {
    const seat = dash.seats.get(c.seat_id);
    if (!seat || seat.state === c.state) return;
    const sec = dash.sections.get(seat.section);
    if (sec) {
      if (sec[seat.state] != null) sec[seat.state]--;
      if (sec[c.state] != null) sec[c.state]++;
    }
    seat.state = c.state;
  },
  changed: scheduleSections,
});

/* what window.onsaleOps shows of the feed */
Object.defineProperties(dash, {
  seatsVersion: { get: () => seatFeed.version, enumerable: true },
  seatsLoaded: { get: () => seatFeed.loaded, enumerable: true },
});

let sectionsFrame = 0;
export function scheduleSections() {
  if (sectionsFrame) return;
  sectionsFrame = requestAnimationFrame(() => {
    sectionsFrame = 0;
    renderSections();
  });
}

function renderSections() {
  const root = $('sections');
  if (!dash.seatsLoaded) return;
  root.setAttribute('aria-busy', 'false');
  if (!dash.sections.size) {
    root.replaceChildren(Object.assign(document.createElement('p'), { className: 'muted', textContent: 'This event has no seats.' }));
    return;
  }
  let table = root.querySelector('table');
  if (!table || table.rows.length - 2 !== dash.sections.size) {
    table = document.createElement('table');
    table.className = 'sections-table';
    table.innerHTML =
      '<caption class="visually-hidden">Seats per section: left, held and sold</caption>' +
      '<thead><tr><th scope="col">Section</th><th scope="col" class="num">Left</th>' +
      '<th scope="col" class="num">Held</th><th scope="col" class="num">Sold</th>' +
      '<th scope="col" class="num">Seats</th><th scope="col" class="bar-col"><span class="visually-hidden">Share left</span></th></tr></thead>' +
      '<tbody></tbody><tfoot></tfoot>';
    const body = table.tBodies[0];
    for (const name of dash.sections.keys()) body.append(sectionRow(name));
    table.tFoot.append(sectionRow(null));
    root.replaceChildren(table);
  }
  const totals = { total: 0, available: 0, held: 0, sold: 0, tiers: new Set() };
  for (const [name, sec] of dash.sections) {
    fillSectionRow(table.querySelector(`tr[data-section="${CSS.escape(name)}"]`), name, sec);
    totals.total += sec.total;
    totals.available += sec.available;
    totals.held += sec.held;
    totals.sold += sec.sold;
  }
  fillSectionRow(table.tFoot.rows[0], null, totals);
  setText($('sections-note'), live.isLive() ? 'Live from the seat map.' : 'From the seat map, refreshed every few seconds.');
}

function sectionRow(name) {
  const tr = document.createElement('tr');
  if (name != null) tr.dataset.section = name;
  else tr.className = 'total';
  const th = document.createElement('th');
  th.scope = 'row';
  tr.append(th);
  for (let i = 0; i < 4; i++) {
    const td = document.createElement('td');
    td.className = 'num';
    tr.append(td);
  }
  const bar = document.createElement('td');
  bar.className = 'bar-col';
  bar.innerHTML = '<span class="meter" aria-hidden="true"><span class="meter-sold"></span><span class="meter-held"></span></span>';
  tr.append(bar);
  return tr;
}

function fillSectionRow(tr, name, sec) {
  if (!tr) return;
  const cells = tr.cells;
  if (name != null) {
    const tiers = Array.from(sec.tiers || []).join(', ');
    const key = `${name}|${tiers}`;
    if (cells[0].dataset.name !== key) {
      cells[0].dataset.name = key;
      cells[0].textContent = name;
      if (tiers) {
        const t = document.createElement('span');
        t.className = 'tier';
        t.textContent = ` ${tiers}`;
        cells[0].append(t);
      }
    }
  } else {
    setText(cells[0], 'All sections');
  }
  tr.dataset.available = String(sec.available);
  tr.dataset.held = String(sec.held);
  tr.dataset.sold = String(sec.sold);
  tr.dataset.total = String(sec.total);
  setText(cells[1], num(sec.available));
  setText(cells[2], num(sec.held));
  setText(cells[3], num(sec.sold));
  setText(cells[4], num(sec.total));
  const total = sec.total || 1;
  const meter = cells[5].firstChild;
  meter.firstChild.style.width = `${(sec.sold / total) * 100}%`;
  meter.lastChild.style.width = `${(sec.held / total) * 100}%`;
  meter.title = `${Math.round((sec.available / total) * 100)} % left`;
}
