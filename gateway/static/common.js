/* onsale: what every page shares. The REST client, the signed-in account (kept in
 * sessionStorage), the sign-in box, ids, clocks and human formats.
 * Plain script, no build step: it defines one global, `Onsale`. */
(function () {
  'use strict';

  const AUTH_KEY = 'onsale.auth';
  /* Prices carry no currency on the event; orders say theirs (and win when known). */
  const DEFAULT_CURRENCY = 'EUR';
  const locale = undefined; // the browser's

  const numberFormat = new Intl.NumberFormat(locale);

  /* ---------- ids ---------- */

  /** A random UUID v4; crypto.randomUUID exists only in secure contexts. */
  function uuid() {
    if (window.crypto && typeof window.crypto.randomUUID === 'function') {
      return window.crypto.randomUUID();
    }
    const b = new Uint8Array(16);
    window.crypto.getRandomValues(b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  /* ---------- the server's clock ---------- */

  /* Countdowns run on the server's time: a fan whose clock is a minute off must not
   * see the sale open a minute early. The offset comes from the Date header (1 s
   * resolution), so it is only applied when it is clearly more than that. */
  let clockOffset = 0;
  function noteServerDate(header, sentAt, receivedAt) {
    const server = Date.parse(header || '');
    if (Number.isNaN(server)) return;
    const local = (sentAt + receivedAt) / 2;
    const offset = server + 500 - local; // the header truncates to the second
    clockOffset = Math.abs(offset) > 1500 ? offset : 0;
  }
  function now() {
    return Date.now() + clockOffset;
  }

  /* ---------- storage ---------- */

  function load(key) {
    try {
      const raw = window.sessionStorage.getItem(key);
      return raw == null ? null : JSON.parse(raw);
    } catch (_) {
      return null;
    }
  }
  function save(key, value) {
    try {
      if (value == null) window.sessionStorage.removeItem(key);
      else window.sessionStorage.setItem(key, JSON.stringify(value));
    } catch (_) {
      /* storage full or disabled: the page still works for this visit */
    }
  }

  /* ---------- the account ---------- */

  const listeners = new Set();
  let account = load(AUTH_KEY);
  if (account && (!account.token || (account.expiresAt && account.expiresAt <= Date.now()))) {
    account = null;
    save(AUTH_KEY, null);
  }

  function token() {
    if (account && account.expiresAt && account.expiresAt <= Date.now()) {
      signOut('expired');
    }
    return account ? account.token : null;
  }
  function email() {
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
  function signOut(why) {
    if (!account) return;
    setAccount(null, why || 'signed_out');
  }
  function onAccountChange(fn) {
    listeners.add(fn);
  }

  /* ---------- REST ---------- */

  /**
   * Calls the API. Never throws: answers `{ok, status, data, error, headers,
   * retryAfter}`; `error` is the `{code, message, request_id?}` body, or a
   * `network` error when the server could not be reached.
   */
  async function api(method, path, opts) {
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
  function retryable(r) {
    return r.status === 0 || r.status === 429 || r.status === 502 || r.status === 503 || r.status === 504;
  }

  async function signIn(mail, password) {
    const r = await api('POST', '/v1/auth/login', { body: { email: mail, password }, auth: false });
    if (!r.ok) return r;
    const ttl = Number(r.data.expires_in) || 3600;
    setAccount(
      { token: r.data.access_token, email: mail, expiresAt: Date.now() + ttl * 1000 - 30000 },
      'signed_in'
    );
    return r;
  }

  async function register(mail, password) {
    const r = await api('POST', '/v1/auth/register', { body: { email: mail, password }, auth: false });
    if (!r.ok) return r;
    return signIn(mail, password);
  }

  /* ---------- human words ---------- */

  const MESSAGES = {
    network: 'The server could not be reached. Check your connection and try again.',
    invalid_credentials: 'Wrong email or password.',
    email_taken: 'An account with this email already exists. Sign in instead.',
    unauthenticated: 'Please sign in first.',
    invalid_token: 'Your session has ended. Please sign in again.',
    forbidden: 'You are not allowed to do that.',
    already_in_line: 'You are already in line for this event; here is your place.',
    sold_out: 'Sorry, this event is sold out.',
    sale_closed: 'The sale is closed: no more requests are taken.',
    sale_not_found: 'The sale for this event is not set up yet.',
    over_limit: 'That is more tickets than one fan may buy for this event.',
    unknown_seat: 'One of those seats does not exist at this venue. Reload the seat map and pick again.',
    unknown_section: 'There is no such section at this venue.',
    unknown_price_tier: 'There is no such price tier at this venue.',
    seat_unavailable: 'One of your seats was taken by someone else.',
    no_adjacent_seats: 'There were not enough seats together for your request.',
    event_not_found: 'We could not find this event.',
    request_not_found: 'We could not find your request.',
    request_not_held: 'Your request does not hold seats right now.',
    hold_ended: 'Your hold has ended; the seats went back on sale.',
    already_paid: 'These seats are already paid for.',
    payment_in_flight: 'A payment for these seats is already in progress; waiting for its outcome.',
    invalid_card_number: 'That card number is not valid.',
    invalid_expiry: 'Enter the expiry date as MM/YY.',
    card_expired: 'That card has expired.',
    invalid_cvc: 'The security code is 3 or 4 digits.',
    card_declined: 'Your card was declined; try another card before the hold runs out.',
    rate_limited: 'Too many requests.',
    overloaded: 'The service is very busy right now.',
    service_unavailable: 'The service is briefly unavailable.',
    internal: 'Something went wrong on our side.',
    payload_too_large: 'That request is too large.',
    idempotency_key_reused: 'That attempt was already used for something else; please try again.',
    idempotency_key_in_flight: 'Your previous attempt is still being processed.',
    conflict: 'Your request conflicted with another one of yours.',
  };

  function message(error) {
    if (!error) return '';
    if (error.code === 'invalid_request' && error.message) return `Please check your input: ${error.message}`;
    return MESSAGES[error.code] || error.message || 'Something went wrong.';
  }

  function fmtNumber(n) {
    return numberFormat.format(n);
  }

  function fmtMoney(cents, currency) {
    try {
      return new Intl.NumberFormat(locale, { style: 'currency', currency: currency || DEFAULT_CURRENCY }).format(
        cents / 100
      );
    } catch (_) {
      return `${(cents / 100).toFixed(2)} ${currency || DEFAULT_CURRENCY}`;
    }
  }

  const dateTimeFormat = new Intl.DateTimeFormat(locale, {
    weekday: 'short',
    day: 'numeric',
    month: 'short',
    year: 'numeric',
    hour: '2-digit',
    minute: '2-digit',
  });
  function fmtDateTime(iso) {
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? '' : dateTimeFormat.format(d);
  }

  /** "1:05:09", "4:09", "0:07"; a day or more gets "2 d 03:04:05". */
  function fmtClock(ms) {
    let s = Math.max(0, Math.ceil(ms / 1000));
    const d = Math.floor(s / 86400);
    s -= d * 86400;
    const h = Math.floor(s / 3600);
    s -= h * 3600;
    const m = Math.floor(s / 60);
    s -= m * 60;
    const pad = (x) => String(x).padStart(2, '0');
    if (d > 0) return `${d} d ${pad(h)}:${pad(m)}:${pad(s)}`;
    if (h > 0) return `${h}:${pad(m)}:${pad(s)}`;
    return `${m}:${pad(s)}`;
  }

  /** "less than a minute", "about 2 min", "about 1 h 20 min". */
  function fmtWait(seconds) {
    if (seconds == null || !Number.isFinite(seconds)) return '';
    if (seconds < 60) return 'less than a minute';
    const minutes = Math.round(seconds / 60);
    if (minutes < 90) return `about ${minutes} min`;
    const h = Math.floor(minutes / 60);
    const m = minutes % 60;
    return m ? `about ${h} h ${m} min` : `about ${h} h`;
  }

  function plural(n, one, many) {
    return `${fmtNumber(n)} ${n === 1 ? one : many}`;
  }

  /* ---------- the sign-in box ---------- */

  /**
   * Wires the sign-in box and the account bar that both pages carry:
   * #auth (section), #auth-form, #auth-email, #auth-password, #sign-in, #register,
   * #auth-message; #account, #signed-in-as, #sign-out.
   */
  function wireAuth() {
    const form = document.getElementById('auth-form');
    const mail = document.getElementById('auth-email');
    const password = document.getElementById('auth-password');
    const msg = document.getElementById('auth-message');
    const registerButton = document.getElementById('register');
    const signInButton = document.getElementById('sign-in');
    const signOutButton = document.getElementById('sign-out');

    function say(text, kind) {
      if (!msg) return;
      msg.textContent = text || '';
      msg.dataset.kind = kind || '';
    }

    function validate() {
      const problems = [];
      mail.removeAttribute('aria-invalid');
      password.removeAttribute('aria-invalid');
      if (!mail.value.trim() || !mail.checkValidity()) {
        mail.setAttribute('aria-invalid', 'true');
        problems.push('Enter a valid email address.');
      }
      if (password.value.length < 10 || password.value.length > 128) {
        password.setAttribute('aria-invalid', 'true');
        problems.push('The password must be 10 to 128 characters.');
      }
      return problems;
    }

    async function submit(kind) {
      const problems = validate();
      if (problems.length) {
        say(problems.join(' '), 'error');
        (mail.getAttribute('aria-invalid') ? mail : password).focus();
        return;
      }
      registerButton.disabled = signInButton.disabled = true;
      say(kind === 'register' ? 'Creating your account…' : 'Signing in…', 'info');
      try {
        let r;
        for (let tries = 0; tries < 4; tries++) {
          r = kind === 'register'
            ? await register(mail.value.trim(), password.value)
            : await signIn(mail.value.trim(), password.value);
          /* register may have succeeded before a busy login: sign in, not register, again */
          if (!r.ok && kind === 'register' && r.error.code === 'email_taken' && tries > 0) kind = 'login';
          if (r.ok || !retryable(r)) break;
          const wait = r.retryAfter != null ? r.retryAfter : 1 + tries;
          say(`${message(r.error)} Retrying in ${wait} s…`, 'info');
          await sleep(wait * 1000);
        }
        if (r.ok) {
          say('', '');
          password.value = '';
        } else {
          say(message(r.error), 'error');
        }
      } finally {
        registerButton.disabled = signInButton.disabled = false;
      }
    }

    if (form) {
      form.addEventListener('submit', (e) => {
        e.preventDefault();
        submit('login');
      });
      registerButton.addEventListener('click', () => submit('register'));
    }
    if (signOutButton) signOutButton.addEventListener('click', () => signOut('signed_out'));

    function show() {
      const signedIn = !!token();
      const box = document.getElementById('auth');
      const bar = document.getElementById('account');
      if (box) box.hidden = signedIn;
      if (bar) bar.hidden = !signedIn;
      const who = document.getElementById('signed-in-as');
      if (who) who.textContent = signedIn ? email() : '';
    }
    onAccountChange((next, why) => {
      show();
      if (!next && why === 'expired') say('Your session has ended. Please sign in again.', 'error');
    });
    show();
  }

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  window.Onsale = {
    uuid,
    now,
    load,
    save,
    api,
    retryable,
    token,
    email,
    signIn,
    register,
    signOut,
    onAccountChange,
    wireAuth,
    message,
    fmtNumber,
    fmtMoney,
    fmtDateTime,
    fmtClock,
    fmtWait,
    plural,
    sleep,
  };
})();
