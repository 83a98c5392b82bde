/* onsale: the REST client and the signed-in account (kept in sessionStorage):
 * calling the API with the account's token, signing in, registering and signing
 * out, and telling listeners when the account changes. */

import { noteServerDate } from './clock.js';
import { load, save } from './util.js';

const AUTH_KEY = 'onsale.auth';

/* ---------- the account ---------- */

const listeners = new Set();
let account = load(AUTH_KEY);
if (account && (!account.token || (account.expiresAt && account.expiresAt <= Date.now()))) {
  account = null;
  save(AUTH_KEY, null);
}

export function token() {
  if (account && account.expiresAt && account.expiresAt <= Date.now()) {
    signOut('expired');
  }
  return account ? account.token : null;
}

export function email() {
  return account ? account.email : null;
}

function setAccount(next, why) {
  account = next;
  save(AUTH_KEY, next);
  for (const fn of listeners) {
    try {
      fn(next, why);
    } catch (e) {
      console.error(e);
    }
  }
}

export function signOut(why) {
  if (!account) return;
  setAccount(null, why || 'signed_out');
}

/** Calls `fn(account, why)` after every change: `why` is signed_in, signed_out or expired. */
export function onAccountChange(fn) {
  listeners.add(fn);
}

/* ---------- REST ---------- */

/**
 * Calls the API. Never throws: answers `{ok, status, data, error, headers,
 * retryAfter}`; `error` is the `{code, message, request_id?}` body, or a
 * `network` error when the server could not be reached (or `opts.signal` aborted
 * the call). With `opts.blob`, a successful answer's `data` is its body as a Blob.
 */
export async function api(method, path, opts) {
  const o = opts || {};
  const headers = { Accept: 'application/json' };
  if (o.body !== undefined) headers['Content-Type'] = 'application/json';
  if (o.idempotencyKey) headers['Idempotency-Key'] = o.idempotencyKey;
  const t = o.auth === false ? null : token();
  if (t) headers.Authorization = `Bearer ${t}`;
  Object.assign(headers, o.headers || {});
  const sentAt = Date.now();
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: o.body === undefined ? undefined : JSON.stringify(o.body),
      cache: o.cache || 'no-store',
      credentials: 'same-origin',
      signal: o.signal,
    });
  } catch (e) {
    return {
      ok: false,
      status: 0,
      data: null,
      headers: new Headers(),
      retryAfter: null,
      error: { code: 'network', message: 'The server could not be reached.' },
    };
  }
  noteServerDate(res.headers.get('Date'), sentAt, Date.now());
  if (res.ok && o.blob) {
    /* an image or a file: the body as a Blob (shown through a blob: URL) */
    const blob = await res.blob().catch(() => null);
    if (blob) return { ok: true, status: res.status, data: blob, headers: res.headers, retryAfter: null, error: null };
    return {
      ok: false,
      status: 0,
      data: null,
      headers: res.headers,
      retryAfter: null,
      error: { code: 'network', message: 'The answer was cut short.' },
    };
  }
  let data = null;
  const text = await res.text().catch(() => '');
  if (text) {
    try {
      data = JSON.parse(text);
    } catch (_) {
      data = null;
    }
  }
  const retryAfter = parseRetryAfter(res.headers.get('Retry-After'));
  if (res.ok) {
    return { ok: true, status: res.status, data, headers: res.headers, retryAfter, error: null };
  }
  const error =
    data && typeof data.code === 'string'
      ? data
      : { code: `http_${res.status}`, message: `The server answered ${res.status}.` };
  if ((res.status === 401) && t && (error.code === 'invalid_token' || error.code === 'unauthenticated')) {
    signOut('expired');
  }
  return { ok: false, status: res.status, data, headers: res.headers, retryAfter, error };
}

function parseRetryAfter(value) {
  if (!value) return null;
  const secs = Number(value);
  if (Number.isFinite(secs)) return Math.max(0, Math.ceil(secs));
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

/** Whether an answer is worth retrying as is (same body, same key). */
export function retryable(r) {
  return r.status === 0 || r.status === 429 || r.status === 502 || r.status === 503 || r.status === 504;
}

export async function signIn(mail, password) {
  const r = await api('POST', '/v1/auth/login', { body: { email: mail, password }, auth: false });
  if (!r.ok) return r;
  const ttl = Number(r.data.expires_in) || 3600;
  setAccount(
    { token: r.data.access_token, email: mail, expiresAt: Date.now() + ttl * 1000 - 30000 },
    'signed_in'
  );
  return r;
}

export async function register(mail, password) {
  const r = await api('POST', '/v1/auth/register', { body: { email: mail, password }, auth: false });
  if (!r.ok) return r;
  return signIn(mail, password);
}
