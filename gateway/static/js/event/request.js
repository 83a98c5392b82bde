/* onsale: the fan's request in this event and their place in line: taking the
 * server's word on it (REST or socket) and only moving forward, remembering it per
 * tab, announcing its changes, and reading it again. */

import { api, email } from '../api.js';
import { $, say, setText } from '../dom.js';
import { load, save, enc } from '../util.js';
import { live } from './live.js';
import { render, renderLine } from './render.js';
import { markMine } from './seatmap.js';
import { REQ_KEY, RANK, TERMINAL, isLive, state } from './state.js';

function remembered() {
  const r = load(REQ_KEY);
  if (!r || !r.request_id || r.email !== email()) return null;
  return r;
}

function remember(req, ask) {
  if (!req) {
    save(REQ_KEY, null);
    return;
  }
  const prev = remembered();
  save(REQ_KEY, {
    request_id: req.request_id,
    email: email(),
    ask: ask || (prev && prev.request_id === req.request_id ? prev.ask : null),
  });
}

/** Takes a request as the server tells it (REST or socket). */
export function adoptRequest(req, ask) {
  if (!req || !req.request_id) return;
  const prev = state.request;
  if (prev && prev.request_id !== req.request_id && isLive(prev) && !isLive(req)) {
    return; // an old request's news must not replace the live one
  }
  const changedId = !prev || prev.request_id !== req.request_id;
  const before = prev && !changedId ? prev.state : null;
  /* a request only moves forward (a declined payment aside: paying -> held); news
   * that arrives late, like a join's answer after the socket said "held", is old */
  if (before && RANK[req.state] < RANK[before] && !(before === 'paying' && req.state === 'held')) return;
  const next = Object.assign({}, req);
  delete next.type;
  /* messages are whole requests; only seats are kept from before if one leaves them out */
  if (!changedId && !next.seats && prev.seats && next.state !== 'prequeue' && next.state !== 'queued') next.seats = prev.seats;
  state.request = next;
  if (changedId) {
    state.position = null;
    state.ask = ask || null;
    state.ended = false;
  }
  if (ask) state.ask = ask;
  if (!state.ask) {
    const mem = remembered();
    if (mem && mem.request_id === req.request_id) state.ask = mem.ask;
  }
  if (req.position != null && (req.state === 'queued')) {
    notePosition({
      request_id: req.request_id,
      queue_number: req.queue_number,
      position: req.position,
      eta_seconds: state.position ? state.position.eta_seconds : null,
      seats_left: state.position ? state.position.seats_left : null,
    }, true);
  }
  remember(state.request, state.ask);
  if (TERMINAL.has(state.request.state)) state.ended = state.request.state !== 'confirmed';
  if (state.request.state !== before) announceTransition(before, state.request.state);
  if (changedId) live.follow();
  markMine();
  render();
}

export function forgetRequest() {
  state.request = null;
  state.position = null;
  state.ask = null;
  state.ended = false;
  state.order = null;
  remember(null);
  markMine();
  render();
}

function announceTransition(before, after) {
  const text = {
    queued: before === 'prequeue' ? 'Places have been drawn: you are in line.' : '',
    held: 'Your seats are held. Pay before the hold runs out.',
    paying: 'Waiting for your bank…',
    confirmed: 'You’re going! Your seats are paid for.',
    expired: 'Your hold ran out; the seats went back on sale.',
    released: 'You released your seats.',
    cancelled: 'Your request was cancelled.',
    rejected: 'Your request could not be served.',
  }[after];
  if (text) {
    document.title = `${titleFor(after)}${state.event ? ` · ${state.event.name}` : ''} · onsale`;
    setText($('announcer'), text);
  }
  if (after === 'confirmed') {
    const c = $('confirmation');
    setTimeout(() => c && !c.hidden && c.focus(), 0);
  } else if (after === 'held' && before !== 'paying') {
    /* moving focus would yank a fan away from whatever they are reading; the
     * hold's heading is announced by the status region instead */
    say('line-message', '', '');
  }
}

function titleFor(s) {
  return (
    {
      prequeue: 'In the pre-queue',
      queued: 'In line',
      held: 'Seats held: pay now',
      paying: 'Paying…',
      confirmed: 'You’re going!',
      expired: 'Hold ran out',
      released: 'Seats released',
      cancelled: 'Cancelled',
      rejected: 'Not served',
    }[s] || 'Waiting room'
  );
}

/** A place in line, from a position message, a snapshot or the request itself. */
export function notePosition(p, fromRequest) {
  const req = state.request;
  if (req && p.request_id && p.request_id !== req.request_id) return;
  if (p.position == null) return;
  /* the socket's position messages are the freshest; a request's own copy may lag */
  if (fromRequest && state.position && state.position.request_id === p.request_id && state.position.position < p.position) return;
  if (req && req.state === 'prequeue') {
    req.state = 'queued';
    announceTransition('prequeue', 'queued');
  }
  if (req && !fromRequest) {
    req.position = p.position;
    if (p.queue_number != null) req.queue_number = p.queue_number;
  }
  state.position = Object.assign({}, state.position, p);
  if (fromRequest && p.eta_seconds == null) delete state.position.eta_seconds;
  const key = req ? `onsale.first.${req.request_id}` : null;
  if (key) {
    const first = load(key);
    if (first == null || p.position > first) save(key, p.position);
  }
  renderLine();
}

/** Reads the request again; a request the server no longer knows is forgotten. */
export async function refreshRequest() {
  const req = state.request;
  if (!req) return;
  const r = await api('GET', `/v1/requests/${enc(req.request_id)}`);
  if (r.ok) adoptRequest(r.data);
  else if (r.status === 404) forgetRequest();
}

/** The request this tab remembers for the signed-in fan, read again. */
export async function restoreRequest() {
  const mem = remembered();
  if (!mem) return;
  const r = await api('GET', `/v1/requests/${enc(mem.request_id)}`);
  if (r.ok) {
    state.ask = mem.ask;
    adoptRequest(r.data, mem.ask);
  } else if (r.status === 404 || r.status === 403) {
    save(REQ_KEY, null);
  }
}
