/* onsale: the door's link with the server: whether it is up, the event's keys
 * (GET /v1/events/{id}/checkin/keys) and revocation list (GET
 * .../checkin/revoked?since=<version>) read on load and every 30 s while online,
 * and the scans decided offline uploaded (POST .../scans, at most 100 a call) as
 * soon as the link is back (the browser's `online` event, or a retry with a
 * backoff), with the conflicts their results reveal. */

import { api, token } from '../api.js';
import { now } from '../clock.js';
import { enc } from '../util.js';
import { addConflicts, door, eventId, mergeRevoked, noteResult, saveKeys, setMeta, unqueue } from './offline.js';

const REFRESH_MS = 30000;
const BATCH = 100; // the most scans a call the API takes (tickets::door::MAX_SCANS)
const BATCH_BYTES = 48 * 1024; // and the gateway takes bodies up to 64 KiB (a scan is ~0.5 KB)
const BACKOFF_MAX_MS = 30000;
const NOT_STAFF_MS = 5000;

/** What the page shows of the link. */
export const link = {
  online: navigator.onLine !== false,
  notStaff: false,
  error: '', // the last refusal of an upload, in words
  failures: 0,
  running: false,
};

let hooks = { changed() {}, notStaff() {}, conflicts() {} };
let timer = null;
let busy = null; // the round in progress
let again = false; // another round was asked for meanwhile

/** `changed()` after any change of the link or the store; `notStaff()` on a 403; `conflicts(list)` when uploads reveal some. */
export function onSync(h) {
  hooks = { ...hooks, ...h };
}

/** A signal that aborts a call after `ms`. */
export function timeout(ms) {
  if (typeof AbortSignal !== 'undefined' && typeof AbortSignal.timeout === 'function') return AbortSignal.timeout(ms);
  const c = new AbortController();
  setTimeout(() => c.abort(), ms);
  return c.signal;
}

/** Whether an answer means "no link" (and the scan must be judged here). */
export function unreachable(r) {
  return r.status === 0 || r.status >= 500;
}

export function setOnline(up) {
  if (link.online === up) return;
  link.online = up;
  if (up) link.failures = 0;
  hooks.changed();
  if (up) syncNow();
  else if (!busy) schedule(); // probe again with the backoff
}

export function setNotStaff(refused) {
  link.notStaff = refused;
  if (refused) hooks.notStaff();
  hooks.changed();
}

export function startSync() {
  link.running = true;
  syncNow();
}

export function stopSync() {
  link.running = false;
  clearTimeout(timer);
  timer = null;
}

/** Refreshes and uploads now (or once more right after the round in progress). */
export function syncNow() {
  if (!link.running) return Promise.resolve();
  if (busy) {
    again = true;
    return busy;
  }
  clearTimeout(timer);
  busy = round().finally(() => {
    busy = null;
    if (again) {
      again = false;
      syncNow();
    } else {
      schedule();
    }
  });
  return busy;
}

function schedule() {
  clearTimeout(timer);
  if (!link.running) return;
  let wait = REFRESH_MS - (Date.now() - (door.meta.refreshedAt || 0));
  if (!link.online || link.failures) wait = Math.min(BACKOFF_MAX_MS, 2000 * 2 ** Math.min(link.failures, 4));
  else if (link.notStaff) wait = NOT_STAFF_MS; // an operator may add this account any moment
  else if (door.pending.length) wait = Math.min(wait, 2000);
  timer = setTimeout(syncNow, Math.max(500, wait));
}

async function round() {
  if (!token()) return;
  const fresh = await refresh();
  if (fresh && door.pending.length) await upload();
  hooks.changed();
}

/** Reads the keys and what was revoked since the last read; answers whether the link is up. */
async function refresh() {
  const keys = await api('GET', `/v1/events/${enc(eventId)}/checkin/keys`, { auth: false, signal: timeout(8000) });
  if (!keys.ok || !keys.data || !Array.isArray(keys.data.keys)) return failed(keys);
  saveKeys(keys.data.keys);
  const since = door.revoked.version || 0;
  const r = await api('GET', `/v1/events/${enc(eventId)}/checkin/revoked?since=${enc(since)}`, { signal: timeout(8000) });
  if (r.status === 403) {
    setNotStaff(true);
    return false;
  }
  if (!r.ok || !r.data) return failed(r);
  mergeRevoked(r.data);
  if (link.notStaff) setNotStaff(false);
  setMeta({ refreshedAt: Date.now() });
  link.failures = 0;
  setOnline(true);
  return true;
}

function failed(r) {
  if (r.status === 401) return false; // signed out: the page takes over
  link.failures++;
  if (unreachable(r)) setOnline(false);
  else link.error = `The server refused to sync (${r.status} ${r.error.code}).`;
  return false;
}

/** The oldest pending scans that fit in one call: at most `most`, and BATCH_BYTES of JSON. */
function nextBatch(most) {
  const batch = [];
  let bytes = 16;
  for (const p of door.pending) {
    const size = JSON.stringify(p.scan).length + 1;
    if (batch.length >= most || (batch.length && bytes + size > BATCH_BYTES)) break;
    batch.push(p);
    bytes += size;
  }
  return batch;
}

/** Uploads the scans decided offline, oldest first, and notes what the server made of them. */
async function upload() {
  let most = BATCH;
  while (door.pending.length && link.online && !link.notStaff) {
    const batch = nextBatch(most);
    const r = await api('POST', `/v1/events/${enc(eventId)}/scans`, {
      body: { scans: batch.map((p) => p.scan) },
      signal: timeout(20000),
    });
    if (r.status === 413 && batch.length > 1) {
      most = Math.max(1, Math.floor(batch.length / 2)); // smaller calls, at once
      continue;
    }
    if (r.status === 403) {
      setNotStaff(true);
      return;
    }
    if (!r.ok || !r.data || !Array.isArray(r.data.results)) {
      failed(r);
      if (!unreachable(r) && r.status !== 401 && r.status !== 429) link.error = `Uploading was refused: ${r.error.message || r.error.code}.`;
      return;
    }
    link.error = '';
    const results = new Map(r.data.results.map((x) => [x.scan_id, x]));
    const found = [];
    const done = [];
    for (const p of batch) {
      const res = results.get(p.scan.scan_id);
      if (!res) continue;
      done.push(p.scan.scan_id);
      noteResult(p.scan, res);
      if (res.conflict) {
        found.push({
          scan_id: p.scan.scan_id,
          ticket_id: res.ticket_id || p.ticket_id,
          seat_id: res.seat_id || p.seat_id || '',
          kind: res.result === 'void' ? 'void' : 'double_entry',
          here_at: p.scan.scanned_at,
          here_device: p.scan.device_id,
          first_at: res.first_admitted_at || null,
          first_device: res.first_device_id || null,
          reason: res.reason || null,
        });
      }
    }
    unqueue(done);
    if (found.length) {
      addConflicts(found);
      hooks.conflicts(found);
    }
    setMeta({ uploadedAt: new Date(now()).toISOString() });
    hooks.changed();
    if (!done.length) return; // the server answered for none of them: try later
  }
}
