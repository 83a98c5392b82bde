/* onsale: one event's seat states, kept current: a snapshot (GET
 * /v1/events/{id}/seats, whose Onsale-Seats-Version header names its version),
 * then the live socket's deltas in version order (docs/REALTIME.md). Deltas that
 * arrive while a snapshot loads wait for it; a version the socket announces that
 * the snapshot has not reached yet is fetched again. The page keeps the seats: it
 * answers `reset(list)` (a whole snapshot), `change({seat_id, state})` and
 * `changed()` (after each snapshot or delta). */

import { api } from './api.js';
import { enc, sleep } from './util.js';

const BACKOFF_MAX_S = 15;

export class SeatFeed {
  /**
   * `attempts`: snapshot reads before giving up until the next call; `active()`:
   * whether the page still wants the seats; `strict`: a snapshot older than the
   * deltas applied is dropped, and deltas before the first snapshot wait for it.
   */
  constructor(eventId, { attempts, active = () => true, strict = false, reset, change, changed }) {
    Object.assign(this, { eventId, attempts, active, strict, reset, change, changed });
    this.version = 0; // of the seats the page shows
    this.loaded = false; // a snapshot was applied
    this.loading = null; // the snapshot being read
    this.wanted = 0; // the least version the next snapshot must show
    this.pending = []; // deltas waiting for the snapshot
    this.saleState = null; // the sale's state the last snapshot came with
  }

  /** Fetches the whole map; deltas arriving meanwhile wait and are applied after it. */
  load(minVersion) {
    this.wanted = Math.max(this.wanted, minVersion || 0);
    if (this.loading) return this.loading;
    this.loading = (async () => {
      for (let attempt = 0; attempt < this.attempts && this.active(); attempt++) {
        const r = await api('GET', `/v1/events/${enc(this.eventId)}/seats`, { cache: 'no-cache' });
        if (!this.active()) return;
        if (!r.ok) {
          if (r.status === 404) return;
          await sleep(Math.min(BACKOFF_MAX_S, 2 ** attempt) * 1000);
          continue;
        }
        /* the sale's state rides on the map (a page not signed in has no socket) */
        this.saleState = r.headers.get('Onsale-Sale-State') || this.saleState;
        const header = r.headers.get('Onsale-Seats-Version');
        const version = header != null && header !== '' && Number.isFinite(Number(header)) ? Number(header) : this.wanted;
        this.snapshot(Array.isArray(r.data) ? r.data : [], version);
        /* the server's copy is at most a second old: a version behind the one the
         * socket announced means changes we will never get as deltas */
        if (version >= this.wanted) return;
        await sleep(400);
      }
    })().finally(() => {
      this.loading = null;
      const later = this.pending.sort((a, b) => a.version - b.version);
      this.pending = [];
      for (const m of later) this.delta(m);
    });
    return this.loading;
  }

  snapshot(list, version) {
    if (this.strict && this.loaded && version < this.version) return;
    this.reset(list);
    this.version = version;
    this.loaded = true;
    const later = this.pending.filter((m) => m.version > version).sort((a, b) => a.version - b.version);
    this.pending = [];
    for (const m of later) this.delta(m);
    this.changed();
  }

  delta(m) {
    if (!(m.version > this.version)) return;
    for (const c of m.changes || []) this.change(c);
    this.version = m.version;
    this.changed();
  }

  /** A `seats` message from `live` (a LiveSocket). */
  message(m, live) {
    const version = Number(m.version);
    if (live.awaitingSeatSnapshot || m.reset) {
      live.awaitingSeatSnapshot = false;
      if (m.reset || !this.loaded || version !== this.version) this.load(version);
      return;
    }
    const delta = { version, changes: m.changes || [] };
    if (this.loading || (this.strict && !this.loaded)) this.pending.push(delta);
    else this.delta(delta);
  }
}
