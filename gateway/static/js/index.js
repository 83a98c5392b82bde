/* onsale: the list of upcoming on-sales, at /: the page's entry module. */

import { api, onAccountChange, token } from './api.js';
import { now } from './clock.js';
import { $ } from './dom.js';
import { fmtDateTime, message, plural } from './format.js';
import { accountBar, fanSignIn } from './signin.js';
import { sleep } from './util.js';

/**
 * The event's badge from its sale's own state: only an open sale is "on sale
 * now". Before the server knows a sale (no `sale_state`), the on-sale time decides
 * between "on sale <when>" and "opening".
 */
function badgeOf(e) {
  const at = `On sale ${fmtDateTime(e.onsale_at)}`;
  switch (e.sale_state) {
    case 'open':
      return ['now', 'On sale now'];
    case 'paused':
      return ['paused', 'Paused'];
    case 'drawing':
      return ['now', 'Opening now'];
    case 'sold_out':
      return ['ended', 'Sold out'];
    case 'closed':
      return ['ended', 'Sale closed'];
    case 'scheduled':
      return ['', at];
    default: {
      const onsale = Date.parse(e.onsale_at);
      return !Number.isNaN(onsale) && onsale <= now() ? ['', 'Opening soon'] : ['', at];
    }
  }
}

function card(e) {
  const li = document.createElement('li');
  li.className = 'card event-card';
  li.dataset.eventId = e.event_id;
  const href = `/e/${encodeURIComponent(e.event_id)}`;

  const badge = document.createElement('span');
  badge.className = 'badge';
  const [kind, text] = badgeOf(e);
  if (kind) badge.dataset.kind = kind;
  badge.textContent = text;

  const h = document.createElement('h2');
  const a = document.createElement('a');
  a.href = href;
  a.textContent = e.name;
  h.append(a);

  const facts = document.createElement('p');
  facts.className = 'facts';
  facts.textContent = `Show ${fmtDateTime(e.starts_at)} · ${plural(e.seat_count, 'seat', 'seats')}`;

  const actions = document.createElement('div');
  actions.className = 'actions';
  const go = document.createElement('a');
  go.className = 'button button-primary';
  go.href = href;
  go.textContent = 'Enter the waiting room';
  go.setAttribute('aria-label', `Enter the waiting room for ${e.name}`);
  actions.append(go);

  li.append(badge, h, facts, actions);
  return li;
}

async function load() {
  const status = $('events-status');
  const list = $('events');
  for (let attempt = 0; ; attempt++) {
    const r = await api('GET', '/v1/events?limit=200', { auth: false });
    if (r.ok && Array.isArray(r.data)) {
      list.replaceChildren(...r.data.map(card));
      status.textContent = r.data.length ? '' : 'No upcoming on-sales right now. Check back soon.';
      status.hidden = !!r.data.length;
      return;
    }
    const wait = r.retryAfter != null ? Math.max(1, r.retryAfter) : Math.min(15, 2 ** attempt);
    status.hidden = false;
    status.textContent = `Could not load the events (${message(r.error)}) Retrying in ${wait} s…`;
    await sleep(wait * 1000);
  }
}

function showAccount() {
  $('signed-in').hidden = !token();
}

accountBar($('account'));
fanSignIn($('auth'), 'Sign in');
onAccountChange(showAccount);
showAccount();
load();
