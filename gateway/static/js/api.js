/* onsale: the REST client and the signed-in account (kept in sessionStorage):
 * calling the API with the account's token (refreshed silently), signing in,
 * registering and signing out, and telling listeners when the account changes. */

import { noteServerDate } from './clock.js';
import { load, save } from './util.js';

const AUTH_KEY = 'onsale.auth';

/* ---------- the account ---------- */

/* The account: {token, expiresAt, refreshToken, refreshExpiresAt, email}. The access
 * token is short (minutes); before it runs out, or when the server says it is
 * outdated, the refresh token buys the next pair, once, however many calls wait for
 * it. The account ends when the session does (signed out here or elsewhere, or the
 * refresh token used twice). */
const listeners = new Set();
let account = load(AUTH_KEY);
if (account && (!account.token || !account.refreshToken || account.refreshExpiresAt <= Date.now())) {
  account = null;
  save(AUTH_KEY, null);
}
let refreshing = null;

/** The access token while signed in (it may need a refresh: `api` sees to that). */
export function token() {
  if (account && account.refreshExpiresAt <= Date.now()) {
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
  /* a refresh is the same account going on: nobody needs to start again */
  if (why === 'refreshed') return;
  for (const fn of listeners) {
    try {
      fn(next, why);
    } catch (e) {
      console.error(e);
    }
  }
}

/** The account from a login or refresh answer. */
function accountOf(data, mail) {
  const ttl = Number(data.expires_in) || 900;
  const refreshTtl = Number(data.refresh_expires_in) || ttl;
  return {
    token: data.access_token,
    expiresAt: Date.now() + ttl * 1000,
    refreshToken: data.refresh_token,
    refreshExpiresAt: Date.now() + refreshTtl * 1000,
    email: mail,
  };
}

/**
 * Ends the account here. `signed_out` (the fan's own choice) also ends the session
 * on the server, so its tokens stop working everywhere; `expired` is the server
 * having ended it already.
 */
export function signOut(why) {
  if (!account) return;
  const ending = account;
  setAccount(null, why || 'signed_out');
  if ((why || 'signed_out') === 'signed_out') {
    fetch('/v1/auth/logout', {
      method: 'POST',
      headers: { Authorization: `Bearer ${ending.token}` },
      credentials: 'same-origin',
      keepalive: true,
    }).catch(() => {
      /* the access token runs out by itself within minutes */
    });
  }
}

/** Calls `fn(account, why)` when the account comes or goes: `why` is signed_in, signed_out or expired. */
export function onAccountChange(fn) {
  listeners.add(fn);
}

/**
 * Trades the refresh token for a new pair; one trade at a time, whoever asks.
 * Answers whether the account now has a fresh token. A refusal ends the account;
 * a network failure leaves it as it was (the old token may still serve).
 */
export function refreshSession() {
  if (!account) return Promise.resolve(false);
  if (refreshing) return refreshing;
  const spent = account;
  refreshing = (async () => {
    let res;
    try {
      res = await fetch('/v1/auth/refresh', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify({ refresh_token: spent.refreshToken }),
        cache: 'no-store',
        credentials: 'same-origin',
      });
    } catch (_) {
      return false;
    }
    const data = await res.json().catch(() => null);
    if (account !== spent) return !!account;
    if (res.ok && data && data.access_token) {
      setAccount(accountOf(data, spent.email), 'refreshed');
      return true;
    }
    if (res.status === 401) signOut('expired');
    return false;
  })().finally(() => {
    refreshing = null;
  });
  return refreshing;
}

/** The access token, refreshed first when it is about to run out. */
export async function freshToken() {
  if (!account) return null;
  if (account.expiresAt - Date.now() < 60000) await refreshSession();
  return account ? account.token : null;
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
  const t = o.auth === false ? null : await freshToken();
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
  if (res.status === 401 && t) {
    /* An outdated or expired token: one refresh, then the same call again. An
     * ended session: signed out. */
    const stale = error.code === 'token_outdated' || error.code === 'invalid_token';
    if (stale && !o.refreshed && (await refreshSession())) {
      return api(method, path, Object.assign({}, o, { refreshed: true }));
    }
    if (error.code === 'session_ended' || error.code === 'unauthenticated' || stale) {
      signOut('expired');
    }
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
  setAccount(accountOf(r.data, mail), 'signed_in');
  return r;
}

export async function register(mail, password) {
  const r = await api('POST', '/v1/auth/register', { body: { email: mail, password }, auth: false });
  if (!r.ok) return r;
  return signIn(mail, password);
}
