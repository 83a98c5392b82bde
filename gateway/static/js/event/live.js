/* onsale: the waiting room's live updates: the live socket following the fan's
 * request, polling the snapshot (GET /v1/events/{id}/live/snapshot) while the socket
 * cannot be held, polling the sale and seats for a visitor who is not signed in, and
 * taking each message. */

import { api, token } from '../api.js';
import { pageError } from '../dom.js';
import { message } from '../format.js';
import { LiveSocket } from '../live.js';
import { enc } from '../util.js';
import { render, renderSale } from './render.js';
import { adoptRequest, forgetRequest, notePosition, refreshRequest } from './request.js';
import { loadSeats, seatFeed } from './seatmap.js';
import { ANON_POLL_MS, POLL_MS, eventId, isLive, saleState, state } from './state.js';

class FanLive extends LiveSocket {
  constructor() {
    super(eventId);
    this.pollTimer = null;
    this.anonTimer = null;
    this.started = false;
  }

  requestId() {
    return isLive(state.request) ? state.request.request_id : null;
  }

  start() {
    this.started = true;
    this.stop();
    if (!token()) {
      this.setStatus('off');
      this.startAnonymous();
      return;
    }
    this.stopAnonymous();
    this.connect();
  }

  stop() {
    this.stopPolling();
    this.close();
  }

  /** The request to follow changed: reconnect at once with its id. */
  follow() {
    if (!this.started || !token()) return;
    if (this.ws && this.ws.followed === this.requestId()) return;
    this.attempt = 0;
    this.start();
  }

  handle(msg) {
    handle(msg);
  }

  opened() {
    this.stopPolling();
  }

  unsupported() {
    this.startPolling();
  }

  lost(hadMessages) {
    /* the socket cannot be held: poll the same facts meanwhile */
    if (!hadMessages || this.attempt >= 2) this.startPolling();
    if (!hadMessages) diagnose();
    this.setStatus(this.pollTimer ? 'polling' : 'reconnecting');
  }

  startPolling() {
    if (this.pollTimer) return;
    const tick = async () => {
      await pollSnapshot();
      if (this.pollTimer) this.pollTimer = setTimeout(tick, POLL_MS);
    };
    this.pollTimer = setTimeout(tick, 0);
  }

  stopPolling() {
    clearTimeout(this.pollTimer);
    this.pollTimer = null;
  }

  startAnonymous() {
    if (this.anonTimer) return;
    const tick = async () => {
      /* the map (cached by the server for a second) says the sale's state too */
      await loadSeats(0);
      if (seatFeed.saleState) onSale({ state: seatFeed.saleState });
      if (this.anonTimer) this.anonTimer = setTimeout(tick, ANON_POLL_MS);
    };
    this.anonTimer = setTimeout(tick, 0);
  }

  stopAnonymous() {
    clearTimeout(this.anonTimer);
    this.anonTimer = null;
  }

  setStatus(s) {
    this.paintStatus(s, {
      off: '',
      connecting: 'Connecting to live updates…',
      live: 'Live',
      reconnecting: 'Connection lost — reconnecting…',
      polling: `Connection lost — reconnecting… Meanwhile the page checks for news every ${POLL_MS / 1000} s.`,
    }[s]);
  }
}

export const live = new FanLive();

/** A socket that never opened: an expired token, or a request that is not ours. */
async function diagnose() {
  const me = await api('GET', '/v1/auth/me');
  if (me.status === 401) return; // the api client signed the fan out
  if (state.request && isLive(state.request)) refreshRequest();
}

async function pollSnapshot() {
  const rid = live.requestId();
  const q = rid ? `?request_id=${enc(rid)}` : '';
  const r = await api('GET', `/v1/events/${enc(eventId)}/live/snapshot${q}`);
  if (r.ok && r.data) {
    const s = r.data;
    if (s.sale) onSale(s.sale);
    if (s.request) adoptRequest(s.request);
    if (s.position) notePosition(s.position);
    if (s.seats_version != null && s.seats_version !== seatFeed.version) loadSeats(s.seats_version);
    render();
    return;
  }
  if (r.status === 404 && r.error.code === 'request_not_found') {
    forgetRequest();
    return;
  }
  /* no snapshot to be had: read the same facts one by one */
  if (state.request) await refreshRequest();
  await loadSeats(0);
  if (seatFeed.saleState) onSale({ state: seatFeed.saleState });
}

function handle(msg) {
  switch (msg.type) {
    case 'sale':
      onSale(msg);
      break;
    case 'request':
      /* a socket opened without request_id follows the fan's live request */
      if (live.ws && live.ws.followed == null && isLive(msg)) live.ws.followed = msg.request_id;
      adoptRequest(msg);
      break;
    case 'position':
      notePosition(msg);
      break;
    case 'seats':
      seatFeed.message(msg, live);
      break;
    case 'error':
      pageError(msg.message || message(msg));
      break;
    default:
      break; // newer messages are ignored
  }
}

function onSale(s) {
  const before = saleState();
  state.sale = Object.assign({}, state.sale, s);
  delete state.sale.type;
  if (before !== state.sale.state) renderSale();
  render();
}
