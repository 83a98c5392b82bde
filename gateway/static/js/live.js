/* onsale: the live socket's client (docs/REALTIME.md), for every page that follows
 * an event: connecting with a single-use socket ticket (never the account's token:
 * a URL ends up in access logs) and the request followed, if any,
 * reconnecting with capped, jittered backoff, and asking for a fresh seat snapshot
 * after every (re)connect. A page subclasses LiveSocket and answers its hooks. */

import { api, refreshSession, token } from './api.js';
import { $, setText, show } from './dom.js';
import { enc } from './util.js';

const BACKOFF_MAX_S = 15;
/* the server's close code for a socket whose session ended or whose role changed */
const SESSION_ENDED_CLOSE = 4401;

export class LiveSocket {
  constructor(eventId) {
    this.eventId = eventId;
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
    this.connectedOnce = false;
    /* the first `seats` message on a socket only names the version: a snapshot is fetched */
    this.awaitingSeatSnapshot = false;
  }

  /* ---------- hooks ---------- */

  /** Whether the page wants the socket at all. */
  active() {
    return true;
  }

  /** The request the socket follows, or null. */
  requestId() {
    return null;
  }

  /** One message from the server. */
  handle(_msg) {}

  /** The first message on a new socket arrived. */
  opened() {}

  /** This browser has no WebSocket. */
  unsupported() {}

  /** A socket closed and the next try is in `base` seconds (plus jitter); says so. */
  lost(_hadMessages, _base) {}

  setStatus(_state) {}

  /** Shows a status in #connection: `state` goes to data-state, `text` (if any) shows. */
  paintStatus(state, text) {
    const el = $('connection');
    if (!el) return;
    el.dataset.state = state;
    setText(el, text || '');
    show(el, !!text);
  }

  /* ---------- the socket ---------- */

  /** Closes the socket and cancels a planned reconnect. */
  close() {
    clearTimeout(this.timer);
    this.timer = null;
    this.generation = (this.generation || 0) + 1;
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(1000, 'bye');
      } catch (_) {
        /* already closed */
      }
    }
  }

  async connect() {
    clearTimeout(this.timer);
    this.timer = null;
    if (!token() || !this.active()) return;
    if (!('WebSocket' in window)) {
      this.unsupported();
      return;
    }
    if (this.connecting) return;
    this.connecting = true;
    const generation = this.generation;
    this.setStatus(this.connectedOnce ? 'reconnecting' : 'connecting');
    const r = await api('POST', `/v1/events/${enc(this.eventId)}/live/ticket`).finally(() => {
      this.connecting = false;
    });
    if (generation !== this.generation || this.ws || !token() || !this.active()) return;
    if (!r.ok) {
      /* signed out meanwhile (api saw to it), or the server is away: try again later */
      this.scheduleReconnect(false);
      return;
    }
    const proto = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
    const params = new URLSearchParams({ ticket: r.data.ticket });
    const rid = this.requestId();
    if (rid) params.set('request_id', rid);
    const url = `${proto}//${window.location.host}/v1/events/${enc(this.eventId)}/live?${params}`;
    this.setStatus(this.connectedOnce ? 'reconnecting' : 'connecting');
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (_) {
      this.scheduleReconnect(false);
      return;
    }
    ws.followed = rid;
    this.ws = ws;
    let gotMessage = false;
    this.awaitingSeatSnapshot = true;
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      if (!gotMessage) {
        gotMessage = true;
        this.attempt = 0;
        this.connectedOnce = true;
        this.opened();
        this.setStatus('live');
      }
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (_) {
        return;
      }
      /* the close that follows (4401) refreshes or signs out; the page's own
       * sign-in box says so, not an error banner */
      if (msg.type === 'error' && (msg.code === 'session_ended' || msg.code === 'token_outdated')) return;
      this.handle(msg);
    };
    ws.onclose = async (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (ev.code === SESSION_ENDED_CLOSE) {
        /* the role changed (a refresh carries the new one) or the session ended
         * (the refresh is refused and the page signs out) */
        await refreshSession();
      }
      this.scheduleReconnect(gotMessage);
    };
    ws.onerror = () => {
      /* onclose follows */
    };
  }

  scheduleReconnect(hadMessages) {
    if (!token() || !this.active()) {
      this.setStatus('off');
      return;
    }
    this.attempt++;
    const base = Math.min(BACKOFF_MAX_S, 2 ** (this.attempt - 1));
    const jitter = Math.random() * Math.min(1, base / 2) * 1000;
    this.lost(hadMessages, base);
    this.timer = setTimeout(() => this.connect(), base * 1000 + jitter);
  }

  /** Back online, or the tab is shown again: try at once instead of waiting. */
  reconnectNow() {
    if (!this.active() || !token() || this.ws) return;
    this.attempt = 0;
    this.connect();
  }
}
