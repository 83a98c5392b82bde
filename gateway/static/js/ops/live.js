/* onsale: the dashboard's live socket: the sale's state and the seat deltas as
 * they happen; while it is down the figures keep polling and the seats are polled. */

import { api } from '../api.js';
import { pageError } from '../dom.js';
import { LiveSocket } from '../live.js';
import { adoptSale, seatsPoller } from './dashboard.js';
import { seatFeed } from './sections.js';
import { eventId, session } from './state.js';

class OpsLive extends LiveSocket {
  constructor() {
    super(eventId);
    this.state = 'off';
  }

  isLive() {
    return this.state === 'live';
  }

  active() {
    return session.active;
  }

  start() {
    this.stop();
    this.connect();
  }

  stop() {
    this.close();
    this.setStatus('off');
  }

  handle(msg) {
    switch (msg.type) {
      case 'sale':
        adoptSale(msg, performance.now());
        break;
      case 'seats':
        seatFeed.message(msg, this);
        break;
      case 'error':
        pageError(`Live updates: ${msg.message || msg.code}`);
        break;
      default:
        break; // a fan's messages, or newer ones: not for this page
    }
  }

  unsupported() {
    this.setStatus('unsupported');
  }

  lost(hadMessages, base) {
    if (!hadMessages) {
      /* never opened: an expired token signs the page out through the client */
      api('GET', '/v1/auth/me');
    }
    this.setStatus('reconnecting', base);
    seatsPoller.kick(); // seats come by polling meanwhile
  }

  setStatus(s, inSeconds) {
    this.state = s;
    this.paintStatus(s === 'unsupported' ? 'polling' : s, {
      off: '',
      connecting: 'Connecting to live updates…',
      live: 'Live',
      reconnecting: `Live updates lost — reconnecting${inSeconds ? ` in ${inSeconds} s` : ''}… The figures still refresh every second.`,
      unsupported: 'This browser cannot hold a live connection; the page refreshes every few seconds.',
    }[s]);
  }
}

export const live = new OpsLive();
