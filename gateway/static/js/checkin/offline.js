/* onsale: the door's memory and its own judgement, for /checkin/{event_id}.
 *
 * What the phone keeps in localStorage, so a door keeps working through a reload
 * without the network (`onsale.door.<event_id>.<what>`):
 *   keys       the event's public keys, as GET /v1/events/{id}/checkin/keys gives them
 *   revoked    {version, max: {ticket_id: highest revoked version}}, merged from
 *              GET .../checkin/revoked?since=<version>: a code whose version is at
 *              most its ticket's highest revoked version admits nobody
 *   admitted   ticket_id -> {at, device, seat}: tickets this phone let in, or was told are in
 *   pending    scans this phone decided offline, waiting for POST .../scans
 *   conflicts  the double entries the uploads revealed, kept for the staff to see
 *   meta       the event's name and start, the last upload and the last refresh
 * and, for every event, `onsale.door.device` (the door's name), `onsale.door.direction`
 * and `onsale.door.camera`.
 *
 * Offline, a code is judged here: the JWS parsed, its event, its kid known, its
 * Ed25519 signature verified with WebCrypto, nbf/exp with 5 minutes' leeway, the
 * revocation list, then this phone's own admissions. */

import { now } from '../clock.js';

const LEEWAY_S = 300;

function parseEventId() {
  const m = window.location.pathname.match(/\/checkin\/([^/]+)\/?$/);
  if (m) return decodeURIComponent(m[1]);
  return new URLSearchParams(window.location.search).get('event') || '';
}

export const eventId = parseEventId();
const PREFIX = `onsale.door.${eventId}.`;

export function loadLocal(key, fallback) {
  try {
    const raw = window.localStorage.getItem(key);
    return raw == null ? fallback : JSON.parse(raw);
  } catch (_) {
    return fallback;
  }
}

export function saveLocal(key, value) {
  try {
    if (value == null) window.localStorage.removeItem(key);
    else window.localStorage.setItem(key, JSON.stringify(value));
  } catch (_) {
    /* storage full or disabled: this visit still works from memory */
  }
}

const load = (what, fallback) => loadLocal(PREFIX + what, fallback);
const store = (what) => saveLocal(PREFIX + what, door[what]);

/** Everything the door remembers for this event (see above). */
export const door = {
  keys: load('keys', []),
  revoked: load('revoked', { version: 0, max: {} }),
  admitted: load('admitted', {}),
  pending: load('pending', []),
  conflicts: load('conflicts', []),
  meta: load('meta', {}),
};

export function saveKeys(keys) {
  door.keys = keys.filter((k) => k && k.kid && k.public_key && (!k.alg || k.alg === 'EdDSA'));
  cryptoKeys.clear();
  store('keys');
}

/** Merges an answer of GET .../checkin/revoked?since=<version>. */
export function mergeRevoked(answer) {
  const max = door.revoked.max;
  for (const r of answer.revoked || []) {
    if (r && r.ticket_id && Number.isFinite(Number(r.version))) {
      max[r.ticket_id] = Math.max(max[r.ticket_id] || 0, Number(r.version));
    }
  }
  if (Number.isFinite(Number(answer.version))) door.revoked.version = Math.max(door.revoked.version, Number(answer.version));
  store('revoked');
}

export function setMeta(patch) {
  Object.assign(door.meta, patch);
  store('meta');
}

/** What a result (online or offline) tells about who is in. */
export function noteResult(scan, result) {
  const tid = result && result.ticket_id;
  if (!tid) return;
  if (result.result === 'admitted' && scan.direction === 'entry') {
    door.admitted[tid] = { at: scan.scanned_at, device: scan.device_id, seat: result.seat_id || '' };
  } else if (result.result === 'already_in' && result.first_admitted_at && !door.admitted[tid]) {
    door.admitted[tid] = { at: result.first_admitted_at, device: result.first_device_id || '', seat: result.seat_id || '' };
  } else if (result.result === 'exited' || result.result === 'not_in') {
    delete door.admitted[tid];
  } else {
    return;
  }
  store('admitted');
}

/** Keeps an offline scan for the upload; `scan` is exactly what POST .../scans takes. */
export function queueScan(scan, result) {
  door.pending.push({ scan, ticket_id: result.ticket_id || null, seat_id: result.seat_id || null });
  store('pending');
}

export function unqueue(scanIds) {
  const gone = new Set(scanIds);
  door.pending = door.pending.filter((p) => !gone.has(p.scan.scan_id));
  store('pending');
}

export function addConflicts(list) {
  const known = new Set(door.conflicts.map((c) => c.scan_id));
  for (const c of list) if (!known.has(c.scan_id)) door.conflicts.unshift(c);
  store('conflicts');
}

/* ---------- the code ---------- */

function bytes(b64url) {
  if (!/^[A-Za-z0-9_-]*$/.test(b64url)) throw new Error('not base64url');
  const b64 = b64url.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((b64url.length + 3) % 4);
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}

function json(b64url) {
  return JSON.parse(new TextDecoder().decode(bytes(b64url)));
}

/** A code's claims, unverified (`null` when it is not a JWS with a payload). */
export function peek(code) {
  try {
    const parts = String(code).trim().split('.');
    return parts.length === 3 ? json(parts[1]) : null;
  } catch (_) {
    return null;
  }
}

const cryptoKeys = new Map(); // kid -> Promise<CryptoKey>

function keyOf(k) {
  let p = cryptoKeys.get(k.kid);
  if (!p) {
    p = crypto.subtle.importKey('raw', bytes(k.public_key), { name: 'Ed25519' }, false, ['verify']);
    cryptoKeys.set(k.kid, p);
    p.catch(() => cryptoKeys.delete(k.kid));
  }
  return p;
}

/* RFC 8032, test 1: a valid Ed25519 public key, to learn whether WebCrypto has Ed25519 */
const PROBE = '11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo';
let support = null;

/** Whether this browser verifies Ed25519 signatures (WebCrypto, secure pages only). */
export function ed25519Supported() {
  if (!support) {
    support = (async () => {
      if (!window.crypto || !crypto.subtle) return false;
      try {
        await crypto.subtle.importKey('raw', bytes(PROBE), { name: 'Ed25519' }, false, ['verify']);
        return true;
      } catch (_) {
        return false;
      }
    })();
  }
  return support;
}

function refuse(result, reason, extra) {
  return Object.assign({ result, reason }, extra || {});
}

/**
 * Judges `scan` (its code, direction, time and device) on this phone alone, as
 * the server would: answers a result shaped like the server's, plus `verified`
 * (the code is genuine and for this event) and `unverifiable` (this phone could
 * not check it at all).
 */
export async function judge(scan) {
  const parts = String(scan.code).trim().split('.');
  let header;
  let claims;
  let sig;
  try {
    if (parts.length !== 3) throw new Error('not a JWS');
    header = json(parts[0]);
    claims = json(parts[1]);
    sig = bytes(parts[2]);
    if (!claims || typeof claims.tid !== 'string' || sig.length !== 64) throw new Error('not a ticket');
  } catch (_) {
    return refuse('invalid', 'not a ticket code: it cannot be read');
  }
  /* the claims are the code's word until its signature verifies: refusals before
   * that name no seat */
  const seat = { ticket_id: claims.tid, seat_id: typeof claims.seat === 'string' ? claims.seat : null };
  if (claims.ev !== eventId) return refuse('wrong_event', 'this ticket is for another event');
  if (!door.keys.length) {
    return refuse('invalid', 'this phone has no keys for this event yet: connect to the network once to get them', { unverifiable: true });
  }
  if (!(await ed25519Supported())) {
    return refuse('invalid', 'this browser cannot check signatures offline', { unverifiable: true });
  }
  const key = door.keys.find((k) => k.kid === header.kid);
  if (!key || header.alg !== 'EdDSA') return refuse('invalid', 'signed with a key this event does not use');
  let ok = false;
  try {
    const data = new TextEncoder().encode(`${parts[0]}.${parts[1]}`);
    ok = await crypto.subtle.verify({ name: 'Ed25519' }, await keyOf(key), sig, data);
  } catch (_) {
    ok = false;
  }
  if (!ok) return refuse('invalid', 'signature does not verify');
  const t = now() / 1000;
  if (Number.isFinite(claims.nbf) && t < claims.nbf - LEEWAY_S) return refuse('invalid', 'not valid yet', seat);
  if (Number.isFinite(claims.exp) && t > claims.exp + LEEWAY_S) return refuse('invalid', 'expired', seat);
  const revoked = door.revoked.max[claims.tid];
  if (revoked != null && Number(claims.v) <= revoked) {
    return refuse('void', 'reissued or refunded: this copy of the ticket no longer admits', { ...seat, verified: true });
  }
  const inside = door.admitted[claims.tid];
  const base = { ...seat, verified: true };
  if (scan.direction === 'exit') return { result: inside ? 'exited' : 'not_in', ...base };
  if (inside) return { result: 'already_in', first_admitted_at: inside.at, first_device_id: inside.device, ...base };
  return { result: 'admitted', ...base };
}
