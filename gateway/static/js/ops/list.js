/* onsale: /ops: the upcoming on-sales, each linking to its dashboard and its fans'
 * page. */

import { api } from '../api.js';
import { now } from '../clock.js';
import { $, setText, show } from '../dom.js';
import { fmtDateTime, message, plural } from '../format.js';
import { enc, sleep } from '../util.js';
import { backoff, session } from './state.js';

export async function startList() {
  setText($('ops-title'), 'On-sales');
  setText($('ops-meta'), 'Open an event’s dashboard to watch its line and pull its levers.');
  document.title = 'On-sales · operations · onsale';
  $('crumb-events').setAttribute('aria-current', 'page');
  show($('ops-list'), true);
  const status = $('ops-list-status');
  const list = $('ops-events');
  for (let attempt = 0; session.active; attempt++) {
    const r = await api('GET', '/v1/events?limit=200');
    if (!session.active) return;
    if (r.ok && Array.isArray(r.data)) {
      list.replaceChildren(...r.data.map(eventCard));
      status.textContent = r.data.length ? '' : 'No upcoming on-sales.';
      status.hidden = !!r.data.length;
      return;
    }
    const wait = backoff(attempt);
    status.hidden = false;
    status.textContent = `Could not load the events (${message(r.error)}) Retrying in ${wait / 1000} s…`;
    await sleep(wait);
  }
}

function eventCard(e) {
  const li = document.createElement('li');
  li.className = 'card event-card';
  li.dataset.eventId = e.event_id;
  const onsale = Date.parse(e.onsale_at);
  const badge = document.createElement('span');
  badge.className = 'badge';
  if (!Number.isNaN(onsale) && onsale <= now()) {
    badge.dataset.kind = 'now';
    badge.textContent = 'On sale';
  } else {
    badge.textContent = `On sale ${fmtDateTime(e.onsale_at)}`;
  }
  const h = document.createElement('h2');
  const a = document.createElement('a');
  a.href = `/ops/events/${enc(e.event_id)}`;
  a.textContent = e.name;
  h.append(a);
  const facts = document.createElement('p');
  facts.className = 'facts';
  facts.textContent = `Show ${fmtDateTime(e.starts_at)} · ${plural(e.seat_count, 'seat', 'seats')} · fans’ page: `;
  const fan = document.createElement('a');
  fan.href = `/e/${enc(e.event_id)}`;
  fan.textContent = 'waiting room';
  facts.append(fan);
  li.append(badge, h, facts);
  return li;
}
