/* onsale: the operators' pages.
 *
 *   /ops                     the upcoming on-sales, each linking to its dashboard;
 *   /ops/events/{event_id}   one sale: its figures, the booking workers reading its
 *                            line (the farm), its orders and the outbox (payments),
 *                            charts, seats left per section, the levers (open, pause,
 *                            resume, close, admission rate) and the audit log.
 *
 * Sources, all read with the operator's token:
 *   GET /v1/ops/events/{id}/stats              every second
 *   GET /v1/ops/events/{id}/stats/history      the last 5 minutes once, then the
 *                                              newest seconds every 2 s
 *   GET /v1/ops/events/{id}/audit              every 2 s and after every lever
 *   GET /v1/events/{id}, GET /v1/events/{id}/seats, and the live socket
 *   /v1/events/{id}/live (sale state and seat deltas; docs/REALTIME.md).
 * Only figures the API gives are shown. The page keeps no state of its own beyond
 * the signed-in account (common.js). */
(function () {
  'use strict';

  const O = window.Onsale;
  const $ = (id) => document.getElementById(id);
  const enc = encodeURIComponent;

  const STATS_MS = 1000;
  const HISTORY_MS = 2000;
  const AUDIT_MS = 2000;
  const SEATS_LIVE_MS = 15000; // a repair fetch while deltas arrive
  const SEATS_POLL_MS = 4000; // while the socket is down
  const STALE_MS = 5000;
  const WINDOW_MAX_S = 300;
  const WINDOW_MIN_S = 60;
  const RATE_SMOOTH_MS = 5000;
  const GAP_MS = 3500; // samples further apart than this are not joined by a line
  const BACKOFF_MAX_S = 15;
  const RATE_MIN = 1;
  const RATE_MAX = 100000;

  const route = parseRoute();

  /* ------------------------------------------------------------------ */
  /* utilities                                                           */
  /* ------------------------------------------------------------------ */

  function parseRoute() {
    const path = window.location.pathname;
    const m = path.match(/\/ops\/events\/([^/]+)\/?$/);
    if (m) return { kind: 'event', eventId: decodeURIComponent(m[1]) };
    const q = new URLSearchParams(window.location.search).get('event');
    if (q) return { kind: 'event', eventId: q };
    return { kind: 'list' };
  }

  function setText(el, text) {
    if (el && el.textContent !== text) el.textContent = text;
  }

  function show(el, visible) {
    if (el && el.hidden === !!visible) el.hidden = !visible;
  }

  function say(id, text, kind) {
    const el = $(id);
    if (!el) return;
    setText(el, text || '');
    el.dataset.kind = kind || '';
  }

  let pageErrorTimer = null;
  function pageError(text, sticky) {
    const el = $('page-error');
    setText(el, text || '');
    show(el, !!text);
    clearTimeout(pageErrorTimer);
    if (text && !sticky) pageErrorTimer = setTimeout(() => show(el, false), 15000);
  }

  /** What a figure shows when the server gave none. */
  const NONE = '—';

  /** "12", "1,204"; "—" for nothing. */
  function num(n) {
    return n == null || !Number.isFinite(Number(n)) ? NONE : O.fmtNumber(Number(n));
  }

  /** One decimal: "1.9", "0", "1,250.5". */
  const oneDecimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1, minimumFractionDigits: 0 });
  function rate(n) {
    return n == null || !Number.isFinite(Number(n)) ? NONE : oneDecimal.format(Math.round(Number(n) * 10) / 10);
  }

  function setFigure(id, value, text) {
    const el = $(id);
    if (!el) return;
    const v = value == null ? '' : String(value);
    if (el.dataset.value !== v) el.dataset.value = v;
    setText(el, text);
  }

  const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  const dayFormat = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short' });
  function fmtTime(ms) {
    const d = new Date(ms);
    if (Number.isNaN(d.getTime())) return '';
    const today = new Date(O.now()).toDateString() === d.toDateString();
    return today ? timeFormat.format(d) : `${dayFormat.format(d)}, ${timeFormat.format(d)}`;
  }

  /** "45 s", "5 min"; spans of a minute and a half or more in whole minutes. */
  function fmtSpan(seconds) {
    const s = Math.round(seconds);
    if (s >= 60 && s % 60 === 0) return `${s / 60} min`;
    if (s >= 90) return `${Math.round(s / 60)} min`;
    return `${s} s`;
  }

  /** A finite number from the API, or null (absent, null, or not a number). */
  function finite(v) {
    return v == null || v === '' || !Number.isFinite(Number(v)) ? null : Number(v);
  }

  /** "0.4 s", "12 s", "2 min 5 s", "1 h 3 min"; NONE for nothing. */
  function fmtDuration(seconds) {
    if (seconds == null || !Number.isFinite(seconds)) return NONE;
    const s = Math.max(0, seconds);
    if (s < 10) return `${oneDecimal.format(Math.round(s * 10) / 10)} s`;
    if (s < 60) return `${Math.round(s)} s`;
    const whole = Math.round(s);
    if (whole < 3600) {
      const m = Math.floor(whole / 60);
      const r = whole % 60;
      return r ? `${m} min ${r} s` : `${m} min`;
    }
    const minutes = Math.round(whole / 60);
    const h = Math.floor(minutes / 60);
    const m = minutes % 60;
    return m ? `${h} h ${m} min` : `${h} h`;
  }

  const twoDecimals = new Intl.NumberFormat(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });

  /** An amount in cents in its currency ("€1,140.00"); without one, a plain amount. */
  const moneyFormats = new Map();
  function fmtCents(cents, currency) {
    if (cents == null) return NONE;
    if (currency) {
      let f = moneyFormats.get(currency);
      if (f === undefined) {
        try {
          f = new Intl.NumberFormat(undefined, { style: 'currency', currency });
        } catch (_) {
          f = null; // a code Intl does not know: shown beside the amount
        }
        moneyFormats.set(currency, f);
      }
      if (f) return f.format(cents / 100);
      return `${twoDecimals.format(cents / 100)} ${currency}`;
    }
    return cents === 0 ? num(0) : twoDecimals.format(cents / 100);
  }

  /** Runs `fn` again after the delay it answers (ms), or stops when it answers null. */
  function poller(fn) {
    let timer = null;
    let running = false;
    let stopped = true;
    let again = false;
    const p = {
      start() {
        stopped = false;
        p.kick();
      },
      stop() {
        stopped = true;
        clearTimeout(timer);
        timer = null;
      },
      kick() {
        if (stopped) return;
        if (running) {
          again = true;
          return;
        }
        clearTimeout(timer);
        timer = null;
        run();
      },
    };
    async function run() {
      running = true;
      let next;
      try {
        next = await fn();
      } catch (e) {
        console.error(e);
        next = 5000;
      }
      running = false;
      if (stopped) return;
      if (again) {
        again = false;
        next = 0;
      }
      if (next == null) {
        p.stop();
        return;
      }
      timer = setTimeout(run, next);
    }
    return p;
  }

  function backoff(attempt) {
    return Math.min(BACKOFF_MAX_S, 2 ** Math.min(attempt, 4)) * 1000;
  }

  /* ------------------------------------------------------------------ */
  /* who is signed in                                                    */
  /* ------------------------------------------------------------------ */

  const session = {
    me: null, // {user_id, email, role}
    active: false, // an operator's views are running
    checking: 0,
  };

  function isOperator(me) {
    return !!me && (me.role === 'operator' || me.role === 'admin');
  }

  /** Decides what the page shows for whoever is signed in (or nobody). */
  async function enter() {
    const ticket = ++session.checking;
    leave();
    show($('ops-forbidden'), false);
    if (!O.token()) {
      session.me = null;
      showSignIn(true);
      return;
    }
    showSignIn(false);
    for (let attempt = 0; ; attempt++) {
      const r = await O.api('GET', '/v1/auth/me');
      if (ticket !== session.checking) return;
      if (r.ok && r.data) {
        session.me = r.data;
        break;
      }
      if (r.status === 401) {
        /* the client signed out; onAccountChange comes back here */
        showSignIn(true);
        return;
      }
      pageError(`Could not check your account: ${O.message(r.error)} Retrying…`);
      await O.sleep(backoff(attempt));
      if (ticket !== session.checking) return;
    }
    pageError('');
    setText($('signed-in-role'), session.me.role ? ` (${session.me.role})` : '');
    if (!isOperator(session.me)) {
      forbidden();
      return;
    }
    session.active = true;
    if (route.kind === 'event') startDashboard();
    else startList();
  }

  function leave() {
    session.active = false;
    stopDashboard();
    show($('ops-list'), false);
    show($('dashboard'), false);
    setText($('signed-in-role'), '');
  }

  function showSignIn(visible) {
    show($('ops-auth'), visible);
    if (visible) {
      show($('dashboard'), false);
      show($('ops-list'), false);
      setText($('ops-title'), route.kind === 'event' ? 'Sale dashboard' : 'Operations');
      setText($('ops-meta'), 'Sign in with an operator’s or admin’s account.');
    }
  }

  function forbidden() {
    leave();
    session.active = false;
    show($('ops-auth'), false);
    setText($('ops-forbidden-who'), (session.me && session.me.email) || O.email() || '');
    setText($('ops-forbidden-role'), (session.me && session.me.role) || 'fan');
    setText($('ops-title'), 'Operations');
    setText($('ops-meta'), '');
    const box = $('ops-forbidden');
    show(box, true);
    box.focus();
  }

  function wireSignIn() {
    const form = $('ops-signin');
    const mail = $('ops-email');
    const password = $('ops-password');
    const button = $('ops-signin-button');

    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      mail.removeAttribute('aria-invalid');
      password.removeAttribute('aria-invalid');
      const problems = [];
      if (!mail.value.trim() || !mail.checkValidity()) {
        mail.setAttribute('aria-invalid', 'true');
        problems.push('Enter a valid email address.');
      }
      if (!password.value) {
        password.setAttribute('aria-invalid', 'true');
        problems.push('Enter your password.');
      }
      if (problems.length) {
        say('ops-signin-message', problems.join(' '), 'error');
        (mail.getAttribute('aria-invalid') ? mail : password).focus();
        return;
      }
      button.disabled = true;
      say('ops-signin-message', 'Signing in…', 'info');
      try {
        let r;
        for (let tries = 0; tries < 4; tries++) {
          r = await O.signIn(mail.value.trim(), password.value);
          if (r.ok || !O.retryable(r)) break;
          const wait = r.retryAfter != null ? r.retryAfter : 1 + tries;
          say('ops-signin-message', `${O.message(r.error)} Retrying in ${wait} s…`, 'info');
          await O.sleep(wait * 1000);
        }
        if (r.ok) {
          say('ops-signin-message', '', '');
          password.value = '';
          $('main').focus();
        } else {
          say('ops-signin-message', O.message(r.error), 'error');
          password.focus();
        }
      } finally {
        button.disabled = false;
      }
    });

    $('ops-forbidden-signout').addEventListener('click', () => {
      O.signOut('signed_out');
      $('ops-email').focus();
    });
  }

  /* ------------------------------------------------------------------ */
  /* /ops: the events                                                    */
  /* ------------------------------------------------------------------ */

  async function startList() {
    setText($('ops-title'), 'On-sales');
    setText($('ops-meta'), 'Open an event’s dashboard to watch its line and pull its levers.');
    document.title = 'On-sales · operations · onsale';
    $('crumb-events').setAttribute('aria-current', 'page');
    show($('ops-list'), true);
    const status = $('ops-list-status');
    const list = $('ops-events');
    for (let attempt = 0; session.active; attempt++) {
      const r = await O.api('GET', '/v1/events?limit=200');
      if (!session.active) return;
      if (r.ok && Array.isArray(r.data)) {
        list.replaceChildren(...r.data.map(eventCard));
        status.textContent = r.data.length ? '' : 'No upcoming on-sales.';
        status.hidden = !!r.data.length;
        return;
      }
      const wait = backoff(attempt);
      status.hidden = false;
      status.textContent = `Could not load the events (${O.message(r.error)}) Retrying in ${wait / 1000} s…`;
      await O.sleep(wait);
    }
  }

  function eventCard(e) {
    const li = document.createElement('li');
    li.className = 'card event-card';
    li.dataset.eventId = e.event_id;
    const onsale = Date.parse(e.onsale_at);
    const badge = document.createElement('span');
    badge.className = 'badge';
    if (!Number.isNaN(onsale) && onsale <= O.now()) {
      badge.dataset.kind = 'now';
      badge.textContent = 'On sale';
    } else {
      badge.textContent = `On sale ${O.fmtDateTime(e.onsale_at)}`;
    }
    const h = document.createElement('h2');
    const a = document.createElement('a');
    a.href = `/ops/events/${enc(e.event_id)}`;
    a.textContent = e.name;
    h.append(a);
    const facts = document.createElement('p');
    facts.className = 'facts';
    facts.textContent = `Show ${O.fmtDateTime(e.starts_at)} · ${O.plural(e.seat_count, 'seat', 'seats')} · fans’ page: `;
    const fan = document.createElement('a');
    fan.href = `/e/${enc(e.event_id)}`;
    fan.textContent = 'waiting room';
    facts.append(fan);
    li.append(badge, h, facts);
    return li;
  }

  /* ------------------------------------------------------------------ */
  /* /ops/events/{id}: the dashboard's state                             */
  /* ------------------------------------------------------------------ */

  const eventId = route.kind === 'event' ? route.eventId : '';
  const opsPath = `/v1/ops/events/${enc(eventId)}`;

  const dash = {
    event: null,
    venueName: '',
    /* the sale as last told: by a stats read, the socket or a lever's answer;
     * `stamp` orders them, so an older read never undoes a newer word */
    sale: { state: null, admission_per_second: null, onsale_at: null, stamp: 0 },
    noSale: false, // the sale is not set up yet (sale_not_found)
    stats: null,
    statsAt: 0, // Date.now() of the last good stats read
    statsFailures: 0,
    samples: [], // [{t, next, served, held, sold}] oldest first
    historyLoaded: false,
    audit: [],
    auditTop: '',
    auditNewest: 0,
    seats: new Map(), // seat_id -> {section, state}
    sections: new Map(), // name -> {tier, total, available, held, sold}
    seatsVersion: 0,
    seatsLoaded: false,
    busy: false, // a lever is being pulled
    rateDirty: false, // the operator is typing a rate
    notFound: false,
  };

  const statsPoller = poller(pollStats);
  const historyPoller = poller(pollHistory);
  const auditPoller = poller(pollAudit);
  const seatsPoller = poller(pollSeats);
  let ticker = null;
  let resizeObserver = null;

  async function startDashboard() {
    show($('dashboard'), true);
    $('crumb-events').removeAttribute('aria-current');
    if (!dash.event) {
      const ok = await loadEvent();
      if (!ok || !session.active) return;
    }
    renderAll();
    statsPoller.start();
    historyPoller.start();
    auditPoller.start();
    seatsPoller.start();
    live.start();
    clearInterval(ticker);
    ticker = setInterval(tick, 1000);
    if (!resizeObserver && 'ResizeObserver' in window) {
      let last = 0;
      resizeObserver = new ResizeObserver(() => {
        const w = $('chart-queue').clientWidth;
        if (w !== last) {
          last = w;
          scheduleCharts();
        }
      });
      resizeObserver.observe($('chart-queue'));
    }
  }

  function stopDashboard() {
    statsPoller.stop();
    historyPoller.stop();
    auditPoller.stop();
    seatsPoller.stop();
    live.stop();
    clearInterval(ticker);
    ticker = null;
  }

  async function loadEvent() {
    for (let attempt = 0; session.active; attempt++) {
      const r = await O.api('GET', `/v1/events/${enc(eventId)}`);
      if (r.ok && r.data) {
        dash.event = r.data;
        break;
      }
      if (r.status === 404 || r.status === 400) {
        eventNotFound();
        return false;
      }
      pageError(`Could not load the event: ${O.message(r.error)} Retrying…`);
      await O.sleep(backoff(attempt));
    }
    if (!session.active) return false;
    pageError('');
    const ev = dash.event;
    if (dash.sale.onsale_at == null) dash.sale.onsale_at = ev.onsale_at;
    if (dash.sale.admission_per_second == null) dash.sale.admission_per_second = ev.admission_per_second;
    document.title = `${ev.name} · operations · onsale`;
    setText($('ops-title'), ev.name);
    renderMeta();
    O.api('GET', `/v1/venues/${enc(ev.venue_id)}`).then((v) => {
      if (v.ok && v.data && v.data.name) {
        dash.venueName = v.data.name;
        renderMeta();
      }
    });
    return true;
  }

  function eventNotFound() {
    dash.notFound = true;
    stopDashboard();
    show($('dashboard'), false);
    setText($('ops-title'), 'Event not found');
    setText($('ops-meta'), 'This event does not exist, or its link is wrong.');
    $('ops-title').dataset.state = 'not-found';
  }

  function renderMeta() {
    const ev = dash.event;
    if (!ev) return;
    const parts = [];
    if (dash.venueName) parts.push(dash.venueName);
    parts.push(`show ${O.fmtDateTime(ev.starts_at)}`);
    parts.push(`on sale ${O.fmtDateTime(dash.sale.onsale_at || ev.onsale_at)}`);
    parts.push(O.plural(ev.seat_count, 'seat', 'seats'));
    parts.push(`up to ${ev.max_per_fan} per fan`);
    parts.push(`holds last ${fmtSpan(ev.hold_seconds)}`);
    const meta = $('ops-meta');
    setText(meta, parts.join(' · '));
    let link = $('ops-fan-link');
    if (!link) {
      link = document.createElement('a');
      link.id = 'ops-fan-link';
      link.className = 'fan-link';
      link.textContent = 'Fans’ page';
      meta.after(link);
    }
    link.href = `/e/${enc(eventId)}`;
  }

  /** Takes the sale's state from a source that read it at `stamp` (performance.now()). */
  function adoptSale(s, stamp) {
    if (!s) return;
    if (stamp < dash.sale.stamp) return;
    const before = dash.sale.state;
    const rateBefore = dash.sale.admission_per_second;
    dash.sale.stamp = stamp;
    if (s.state) dash.sale.state = s.state;
    if (s.admission_per_second != null) dash.sale.admission_per_second = Number(s.admission_per_second);
    if (s.onsale_at) dash.sale.onsale_at = s.onsale_at;
    if (s.state) dash.noSale = false;
    if (before !== dash.sale.state || rateBefore !== dash.sale.admission_per_second) {
      renderSale();
      renderLevers();
      renderFigures();
      if (rateBefore !== dash.sale.admission_per_second) scheduleCharts();
    }
  }

  /* ------------------------------------------------------------------ */
  /* polling                                                             */
  /* ------------------------------------------------------------------ */

  async function pollStats() {
    const sentAt = performance.now();
    const r = await O.api('GET', `${opsPath}/stats`);
    if (!session.active) return null;
    if (r.ok && r.data) {
      dash.stats = r.data;
      dash.statsAt = Date.now();
      dash.statsFailures = 0;
      dash.noSale = false;
      adoptSale({ state: r.data.state, admission_per_second: r.data.admission_per_second }, sentAt);
      renderFigures();
      renderSale();
      renderLevers();
      renderUpdated();
      return STATS_MS;
    }
    return onReadError(r, 'the figures', () => {
      dash.statsFailures++;
      renderUpdated();
      return r.retryAfter != null ? Math.max(1000, r.retryAfter * 1000) : Math.min(5000, STATS_MS * (1 + dash.statsFailures));
    });
  }

  /** The answer every read shares for refusals; `other` decides the rest. */
  function onReadError(r, what, other) {
    if (r.status === 401) return null; // signed out; onAccountChange takes over
    if (r.status === 403) {
      forbidden();
      return null;
    }
    if (r.status === 404 && r.error.code === 'event_not_found') {
      eventNotFound();
      return null;
    }
    if (r.status === 404 && r.error.code === 'sale_not_found') {
      if (!dash.noSale) {
        dash.noSale = true;
        renderSale();
        renderLevers();
        renderFigures();
      }
      return 2000;
    }
    if (what && r.status !== 0 && r.status !== 429) console.warn(`reading ${what}: ${r.status} ${r.error.code}`);
    return other();
  }

  async function pollHistory() {
    const seconds = dash.historyLoaded ? 15 : WINDOW_MAX_S;
    const r = await O.api('GET', `${opsPath}/stats/history?seconds=${seconds}`);
    if (!session.active) return null;
    if (r.ok && Array.isArray(r.data)) {
      mergeSamples(r.data);
      dash.historyLoaded = true;
      scheduleCharts();
      return HISTORY_MS;
    }
    return onReadError(r, 'the history', () => 5000);
  }

  function mergeSamples(list) {
    const last = dash.samples.length ? dash.samples[dash.samples.length - 1].t : -Infinity;
    for (const s of list) {
      const t = Date.parse(s.at);
      if (Number.isNaN(t) || t <= last) continue;
      dash.samples.push({ t, next: Number(s.next), served: Number(s.served), held: Number(s.held), sold: Number(s.sold) });
    }
    dash.samples.sort((a, b) => a.t - b.t);
    const keepFrom = O.now() - (WINDOW_MAX_S + 60) * 1000;
    let drop = 0;
    while (drop < dash.samples.length && dash.samples[drop].t < keepFrom) drop++;
    if (drop) dash.samples.splice(0, drop);
  }

  async function pollAudit() {
    const r = await O.api('GET', `${opsPath}/audit`);
    if (!session.active) return null;
    if (r.ok && Array.isArray(r.data)) {
      dash.audit = r.data;
      renderAudit();
      scheduleCharts(); // the rate set over time comes from the audit log
      return AUDIT_MS;
    }
    return onReadError(r, 'the audit log', () => 5000);
  }

  async function pollSeats() {
    await loadSeats(0);
    if (!session.active) return null;
    return live.isLive() ? SEATS_LIVE_MS : SEATS_POLL_MS;
  }

  /* ------------------------------------------------------------------ */
  /* seats left per section: a snapshot, then the socket's deltas         */
  /* ------------------------------------------------------------------ */

  let seatsLoading = null;
  let seatsWanted = 0;
  let pendingDeltas = [];

  function loadSeats(minVersion) {
    seatsWanted = Math.max(seatsWanted, minVersion || 0);
    if (seatsLoading) return seatsLoading;
    seatsLoading = (async () => {
      for (let attempt = 0; attempt < 6 && session.active; attempt++) {
        const r = await O.api('GET', `/v1/events/${enc(eventId)}/seats`, { cache: 'no-cache' });
        if (!session.active) return;
        if (!r.ok) {
          if (r.status === 404) return;
          await O.sleep(backoff(attempt));
          continue;
        }
        const header = r.headers.get('Onsale-Seats-Version');
        const version = header != null && header !== '' && Number.isFinite(Number(header)) ? Number(header) : seatsWanted;
        applySeatSnapshot(Array.isArray(r.data) ? r.data : [], version);
        if (version >= seatsWanted) return;
        await O.sleep(400);
      }
    })().finally(() => {
      seatsLoading = null;
      const later = pendingDeltas.sort((a, b) => a.version - b.version);
      pendingDeltas = [];
      for (const m of later) applySeatDelta(m);
    });
    return seatsLoading;
  }

  function applySeatSnapshot(list, version) {
    /* a snapshot older than the deltas already applied would undo them */
    if (dash.seatsLoaded && version < dash.seatsVersion) return;
    dash.seats.clear();
    dash.sections.clear();
    for (const s of list) {
      let sec = dash.sections.get(s.section);
      if (!sec) {
        sec = { tiers: new Set(), total: 0, available: 0, held: 0, sold: 0 };
        dash.sections.set(s.section, sec);
      }
      sec.tiers.add(s.price_tier);
      sec.total++;
      if (sec[s.state] != null) sec[s.state]++;
      dash.seats.set(s.seat_id, { section: s.section, state: s.state });
    }
    dash.seatsVersion = version;
    dash.seatsLoaded = true;
    const later = pendingDeltas.filter((m) => m.version > version).sort((a, b) => a.version - b.version);
    pendingDeltas = [];
    for (const m of later) applySeatDelta(m);
    scheduleSections();
  }

  function applySeatDelta(m) {
    if (!(m.version > dash.seatsVersion)) return;
    for (const c of m.changes || []) {
      const seat = dash.seats.get(c.seat_id);
      if (!seat || seat.state === c.state) continue;
      const sec = dash.sections.get(seat.section);
      if (sec) {
        if (sec[seat.state] != null) sec[seat.state]--;
        if (sec[c.state] != null) sec[c.state]++;
      }
      seat.state = c.state;
    }
    dash.seatsVersion = m.version;
    scheduleSections();
  }

  function onSeatsMessage(m) {
    const version = Number(m.version);
    if (live.awaitingSeatSnapshot || m.reset) {
      live.awaitingSeatSnapshot = false;
      if (m.reset || !dash.seatsLoaded || version !== dash.seatsVersion) loadSeats(version);
      return;
    }
    const delta = { version, changes: m.changes || [] };
    if (seatsLoading || !dash.seatsLoaded) pendingDeltas.push(delta);
    else applySeatDelta(delta);
  }

  /* ------------------------------------------------------------------ */
  /* the live socket: sale state and seat deltas                         */
  /* ------------------------------------------------------------------ */

  const live = {
    ws: null,
    attempt: 0,
    timer: null,
    connectedOnce: false,
    awaitingSeatSnapshot: false,
    state: 'off',

    isLive() {
      return this.state === 'live';
    },

    start() {
      this.stop();
      this.connect();
    },

    stop() {
      clearTimeout(this.timer);
      this.timer = null;
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
      this.setStatus('off');
    },

    connect() {
      clearTimeout(this.timer);
      this.timer = null;
      const token = O.token();
      if (!token || !session.active) return;
      if (!('WebSocket' in window)) {
        this.setStatus('unsupported');
        return;
      }
      const proto = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
      const params = new URLSearchParams({ access_token: token });
      const url = `${proto}//${window.location.host}/v1/events/${enc(eventId)}/live?${params}`;
      this.setStatus(this.connectedOnce ? 'reconnecting' : 'connecting');
      let ws;
      try {
        ws = new WebSocket(url);
      } catch (_) {
        this.scheduleReconnect(false);
        return;
      }
      this.ws = ws;
      this.awaitingSeatSnapshot = true;
      let gotMessage = false;
      ws.onmessage = (ev) => {
        if (this.ws !== ws) return;
        if (!gotMessage) {
          gotMessage = true;
          this.attempt = 0;
          this.connectedOnce = true;
          this.setStatus('live');
        }
        let msg;
        try {
          msg = JSON.parse(ev.data);
        } catch (_) {
          return;
        }
        handleMessage(msg);
      };
      ws.onclose = () => {
        if (this.ws !== ws) return;
        this.ws = null;
        this.scheduleReconnect(gotMessage);
      };
      ws.onerror = () => {
        /* onclose follows */
      };
    },

    scheduleReconnect(hadMessages) {
      if (!O.token() || !session.active) {
        this.setStatus('off');
        return;
      }
      this.attempt++;
      if (!hadMessages) {
        /* never opened: an expired token signs the page out through the client */
        O.api('GET', '/v1/auth/me');
      }
      const base = Math.min(BACKOFF_MAX_S, 2 ** (this.attempt - 1));
      const jitter = Math.random() * Math.min(1, base / 2) * 1000;
      this.setStatus('reconnecting', base);
      this.timer = setTimeout(() => this.connect(), base * 1000 + jitter);
      seatsPoller.kick(); // seats come by polling meanwhile
    },

    reconnectNow() {
      if (!session.active || this.ws || !O.token()) return;
      this.attempt = 0;
      this.connect();
    },

    setStatus(s, inSeconds) {
      this.state = s;
      const el = $('connection');
      if (!el) return;
      el.dataset.state = s === 'unsupported' ? 'polling' : s;
      const text = {
        off: '',
        connecting: 'Connecting to live updates…',
        live: 'Live',
        reconnecting: `Live updates lost — reconnecting${inSeconds ? ` in ${inSeconds} s` : ''}… The figures still refresh every second.`,
        unsupported: 'This browser cannot hold a live connection; the page refreshes every few seconds.',
      }[s];
      setText(el, text || '');
      show(el, !!text);
    },
  };

  function handleMessage(msg) {
    switch (msg.type) {
      case 'sale':
        adoptSale(msg, performance.now());
        break;
      case 'seats':
        onSeatsMessage(msg);
        break;
      case 'error':
        pageError(`Live updates: ${msg.message || msg.code}`);
        break;
      default:
        break; // a fan's messages, or newer ones: not for this page
    }
  }

  window.addEventListener('online', () => live.reconnectNow());
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && session.active && route.kind === 'event') {
      live.reconnectNow();
      statsPoller.kick();
    }
  });

  /* ------------------------------------------------------------------ */
  /* rendering: the sale, the figures                                    */
  /* ------------------------------------------------------------------ */

  const STATE_NAME = {
    scheduled: 'Scheduled',
    drawing: 'Drawing',
    open: 'Open',
    paused: 'Paused',
    sold_out: 'Sold out',
    closed: 'Closed',
  };

  function saleState() {
    return dash.sale.state || (dash.noSale ? 'scheduled' : null);
  }

  function onsaleMs() {
    const iso = dash.sale.onsale_at || (dash.event && dash.event.onsale_at);
    const t = iso ? Date.parse(iso) : NaN;
    return Number.isNaN(t) ? null : t;
  }

  function saleDetail(s) {
    const per = dash.sale.admission_per_second;
    const perText = per != null ? `${O.plural(per, 'fan', 'fans')} per second` : 'the rate set';
    switch (s) {
      case 'scheduled': {
        const at = onsaleMs();
        if (at != null && at <= O.now()) return 'The on-sale time has come: the pre-queue is drawn any moment now.';
        return `Fans arriving now wait in the pre-queue; it is drawn at random when the sale opens${
          at != null ? ` (${O.fmtDateTime(new Date(at).toISOString())})` : ''
        }.`;
      }
      case 'drawing':
        return 'The pre-queue is being shuffled and numbered.';
      case 'open':
        return `Fans are admitted in queue order at ${perText}.`;
      case 'paused':
        return 'Nobody is admitted. Fans keep their place in line until you resume.';
      case 'sold_out':
        return 'Every seat is sold or held. Fans still in line are served if holds run out.';
      case 'closed':
        return 'No more fans can join and nobody else is admitted.';
      default:
        return '';
    }
  }

  function renderSale() {
    const s = saleState();
    const el = $('ops-state');
    const shown = s || '';
    if (el.dataset.state !== shown) el.dataset.state = shown;
    setText($('ops-state-name'), s ? STATE_NAME[s] || s : 'Loading the sale…');
    let detail = saleDetail(s);
    if (dash.noSale && s === 'scheduled') detail += ' (The sale is set up by the first fan to join, the draw, or “Open now”.)';
    setText($('ops-state-detail'), detail);
    renderCountdown();
  }

  function renderCountdown() {
    const el = $('ops-countdown');
    const at = onsaleMs();
    const s = saleState();
    const visible = s === 'scheduled' && at != null && at > O.now();
    show(el, visible);
    setText(el, visible ? `Opens in ${O.fmtClock(at - O.now())}` : '');
  }

  function renderFigures() {
    const st = dash.stats;
    const s = saleState();
    const have = !!st && !dash.noSale;
    setFigure('stat-queue', have ? st.queue_length : null, have ? num(st.queue_length) : NONE);
    setFigure('stat-served', have ? st.served : null, have ? num(st.served) : NONE);
    setFigure('stat-arrivals', have ? st.arrivals_per_second : null, have ? rate(st.arrivals_per_second) : NONE);
    setFigure('stat-admitted', have ? st.admitted_per_second : null, have ? rate(st.admitted_per_second) : NONE);
    const per = dash.sale.admission_per_second != null ? dash.sale.admission_per_second : have ? st.admission_per_second : null;
    setFigure('stat-rate', per, num(per));
    setFigure('stat-holds', have ? st.holds_active : null, have ? num(st.holds_active) : NONE);
    setFigure('stat-held', have ? st.held : null, have ? num(st.held) : NONE);
    setFigure('stat-sold', have ? st.sold : null, have ? num(st.sold) : NONE);
    setFigure('stat-available', have ? st.available : null, have ? num(st.available) : NONE);

    const eta = have ? st.eta_seconds : null;
    let etaUnit = 'for the last in line';
    if (eta != null) {
      setFigure('stat-eta', eta, O.fmtClock(eta * 1000));
      etaUnit = eta >= 3600 ? 'h:mm:ss for the last in line' : 'min:s for the last in line';
    } else {
      setFigure('stat-eta', null, NONE);
      if (s === 'paused') etaUnit = 'none while paused';
      else if (s && s !== 'open') etaUnit = 'only while the sale is open';
    }
    setText($('stat-eta-unit'), etaUnit);

    let pace = '';
    if (have && s === 'open') {
      if (st.queue_length === 0) pace = 'The line is empty: every fan who joined has been served.';
      else if (per) {
        const pct = Math.round((st.admitted_per_second / per) * 100);
        pace = `Admitting ${rate(st.admitted_per_second)} fans per second against ${num(per)} set (${pct} %).`;
      }
    } else if (have && s === 'paused') {
      pace = `Paused with ${O.plural(st.queue_length, 'fan', 'fans')} in line.`;
    }
    setText($('stat-pace'), pace);
    renderFarm(have ? st : null);
    renderPayments(have ? st : null);
  }

  /* ------------------------------------------------------------------ */
  /* rendering: the farm and the payments                                */
  /* ------------------------------------------------------------------ */

  /* Servers before these figures leave them out of the stats: they show NONE, and
   * `key in st` tells "not reported" from the null a server sends for "unknown". */
  function reported(st, key) {
    return !!st && Object.prototype.hasOwnProperty.call(st, key);
  }

  function renderFarm(st) {
    const lag = st ? finite(st.line_lag) : null;
    setFigure('stat-line-lag', lag, num(lag));
    setText(
      $('stat-line-lag-unit'),
      reported(st, 'line_lag') && lag == null ? 'unknown right now' : 'entries no worker has taken yet'
    );
    const pending = st ? finite(st.line_pending) : null;
    setFigure('stat-line-pending', pending, num(pending));

    const dead = st ? finite(st.dead_letters) : null;
    setFigure('stat-dead-letters', dead, num(dead));
    const warn = dead != null && dead > 0;
    const fig = $('figure-dead-letters');
    if (fig.dataset.warn !== String(warn)) fig.dataset.warn = String(warn);
    const farm = $('farm');
    if (farm.dataset.warn !== String(warn)) farm.dataset.warn = String(warn);
    setText(
      $('stat-dead-letters-unit'),
      warn ? `${dead === 1 ? 'entry' : 'entries'} set aside after failing again and again: look into them` : 'entries set aside after failing'
    );

    renderWorkers(st);
  }

  function renderWorkers(st) {
    const body = $('stat-workers');
    let message = null;
    if (!st || !reported(st, 'workers') || !Array.isArray(st.workers)) message = NONE;
    else if (!st.workers.length) message = 'No booking worker is reading this line.';
    if (message != null) {
      const only = body.rows.length === 1 && body.rows[0].classList.contains('empty') ? body.rows[0] : null;
      if (only) setText(only.cells[0], message);
      else {
        const tr = document.createElement('tr');
        tr.className = 'empty';
        const td = document.createElement('td');
        td.colSpan = 3;
        td.textContent = message;
        tr.append(td);
        body.replaceChildren(tr);
      }
      return;
    }
    const workers = st.workers
      .filter((w) => w && w.name != null)
      .map((w) => ({ name: String(w.name), pending: finite(w.pending), idleMs: finite(w.idle_ms) }))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const existing = new Map();
    for (const tr of Array.from(body.rows)) {
      if (tr.dataset.worker != null) existing.set(tr.dataset.worker, tr);
      else tr.remove();
    }
    let at = 0;
    for (const w of workers) {
      let tr = existing.get(w.name);
      existing.delete(w.name);
      if (!tr) {
        tr = document.createElement('tr');
        tr.dataset.worker = w.name;
        const th = document.createElement('th');
        th.scope = 'row';
        th.textContent = w.name;
        const p = document.createElement('td');
        p.className = 'num';
        const i = document.createElement('td');
        i.className = 'num';
        tr.append(th, p, i);
      }
      if (body.rows[at] !== tr) body.insertBefore(tr, body.rows[at] || null);
      at++;
      const pending = w.pending == null ? '' : String(w.pending);
      const idle = w.idleMs == null ? '' : String(w.idleMs);
      if (tr.dataset.pending !== pending) tr.dataset.pending = pending;
      if (tr.dataset.idleMs !== idle) tr.dataset.idleMs = idle;
      setText(tr.cells[1], num(w.pending));
      setText(tr.cells[2], w.idleMs == null ? NONE : fmtDuration(w.idleMs / 1000));
    }
    for (const tr of existing.values()) tr.remove();
  }

  function renderPayments(st) {
    const orders = st && st.orders && typeof st.orders === 'object' ? st.orders : null;
    for (const [id, key] of [
      ['stat-paid', 'paid'],
      ['stat-declined', 'declined'],
      ['stat-pending-orders', 'pending'],
      ['stat-refunded', 'refunded'],
      ['stat-cancelled', 'cancelled'],
    ]) {
      const v = orders ? finite(orders[key]) : null;
      setFigure(id, v, num(v));
    }

    const cents = st ? finite(st.revenue_cents) : null;
    const currency = st && typeof st.currency === 'string' && st.currency ? st.currency : null;
    setFigure('stat-revenue', cents, fmtCents(cents, currency));
    let unit = 'from paid orders';
    if (cents != null && !currency) unit = reported(st, 'currency') ? 'from paid orders (no order yet, so no currency)' : 'from paid orders (currency not reported)';
    setText($('stat-revenue-unit'), unit);

    const unpublished = st ? finite(st.outbox_unpublished) : null;
    setFigure('stat-outbox', unpublished, num(unpublished));
    const lag = st ? finite(st.outbox_lag_seconds) : null;
    setFigure('stat-outbox-lag', lag, fmtDuration(lag));
    let lagUnit = 'since the oldest was written';
    if (lag == null && reported(st, 'outbox_lag_seconds')) lagUnit = unpublished === 0 ? 'nothing is waiting' : 'age unknown';
    setText($('stat-outbox-lag-unit'), lagUnit);
  }

  function renderUpdated() {
    const el = $('stats-updated');
    if (!dash.statsAt) {
      setText(el, dash.noSale ? '' : 'Waiting for the first figures…');
      el.dataset.stale = 'false';
      return;
    }
    const age = Date.now() - dash.statsAt;
    const stale = age > STALE_MS;
    el.dataset.stale = String(stale);
    setText(
      el,
      stale
        ? `The figures are ${Math.round(age / 1000)} s old: the server has not answered since ${fmtTime(dash.statsAt)}. Retrying…`
        : `Figures updated ${fmtTime(dash.statsAt)}`
    );
  }

  function tick() {
    renderCountdown();
    renderUpdated();
    if (saleState() === 'scheduled') setText($('ops-state-detail'), saleDetail('scheduled'));
  }

  /* ------------------------------------------------------------------ */
  /* the levers                                                          */
  /* ------------------------------------------------------------------ */

  /** Where each lever applies; the API stays the judge. */
  const LEVERS = {
    open: ['scheduled', 'drawing'],
    pause: ['open'],
    resume: ['paused'],
    close: ['scheduled', 'open', 'paused', 'sold_out'],
  };

  const LEVER_HELP = {
    scheduled: 'Before the on-sale you can open the sale early (the pre-queue is drawn at once) or close it.',
    drawing: 'The draw is running. If it seems stuck, “Open now” finishes it.',
    open: 'You can pause the sale or close it.',
    paused: 'You can resume the sale or close it.',
    sold_out: 'Sold out: you can close the sale.',
    closed: 'The sale is closed: no lever applies any more.',
  };

  function renderLevers() {
    const s = saleState();
    for (const lever of Object.keys(LEVERS)) {
      const b = $(`lever-${lever}`);
      const allowed = !!s && LEVERS[lever].includes(s);
      b.disabled = dash.busy || !allowed;
    }
    const rateOk = !!s && s !== 'closed';
    $('rate-button').disabled = dash.busy || !rateOk;
    $('rate-input').disabled = !rateOk;
    setText($('lever-help'), s ? LEVER_HELP[s] || '' : 'Levers unlock once the sale’s state is known.');
    const input = $('rate-input');
    const per = dash.sale.admission_per_second;
    if (!dash.rateDirty && document.activeElement !== input && per != null && input.value !== String(per)) {
      input.value = String(per);
    }
    setText($('rate-hint'), `A whole number from 1 to 100,000${per != null ? `; now ${num(per)}` : ''}. It sets how many fans per second the booking workers take from the line.`);
  }

  function leverCopy(lever) {
    const per = dash.sale.admission_per_second;
    const perText = per != null ? O.plural(per, 'fan', 'fans') + ' per second' : 'the rate set';
    const queue = dash.stats && !dash.noSale ? dash.stats.queue_length : null;
    const inLine = queue != null ? O.plural(queue, 'fan is', 'fans are') : '';
    switch (lever) {
      case 'open':
        return {
          title: 'Open the sale now?',
          text: `The pre-queue is drawn at once, before the scheduled on-sale time, and fans are admitted at ${perText}.`,
          note: 'The draw cannot be undone.',
          yes: 'Open the sale',
          done: 'The sale is open: the pre-queue has been drawn.',
        };
      case 'pause':
        return {
          title: 'Pause the sale?',
          text: 'Fans keep their place; nobody is admitted until you resume.',
          note: queue != null ? `${inLine} in line now. Holds already made keep running.` : 'Holds already made keep running.',
          yes: 'Pause the sale',
          done: 'The sale is paused. Fans keep their place; nobody is admitted.',
        };
      case 'resume':
        return {
          title: 'Resume the sale?',
          text: `Fans are admitted again, in queue order, at ${perText}.`,
          note: queue != null ? `${inLine} waiting.` : '',
          yes: 'Resume the sale',
          done: 'The sale is open again: fans are being admitted.',
        };
      case 'close':
        return {
          title: 'Close the sale?',
          text:
            saleState() === 'scheduled'
              ? 'The sale will never open: every fan in the pre-queue is turned away, and nobody can join.'
              : 'Nobody else is admitted and no more fans can join. Fans still in line are told the sale is closed.',
          note: 'This cannot be undone. Holds already made can still be paid for until they run out.',
          yes: 'Close the sale',
          danger: true,
          done: 'The sale is closed.',
        };
      default:
        return null;
    }
  }

  /* ---------- the confirmation dialog ---------- */

  let confirming = null;

  /** Asks; resolves true only when the operator confirms. */
  function confirmStep({ title, text, note, yes, danger }, opener) {
    const dialog = $('confirm-dialog');
    setText($('confirm-title'), title);
    setText($('confirm-text'), text);
    setText($('confirm-note'), note || '');
    show($('confirm-note'), !!note);
    const yesButton = $('confirm-yes');
    setText(yesButton, yes);
    yesButton.className = `button ${danger ? 'button-danger-solid' : 'button-primary'}`;
    dialog.returnValue = '';
    return new Promise((resolve) => {
      confirming = resolve;
      const done = () => {
        dialog.removeEventListener('close', done);
        confirming = null;
        const yesChosen = dialog.returnValue === 'yes';
        if (!yesChosen && opener && !opener.disabled) opener.focus();
        resolve(yesChosen);
      };
      dialog.addEventListener('close', done);
      if (typeof dialog.showModal === 'function') {
        dialog.showModal();
        $('confirm-no').focus();
      } else {
        /* no <dialog> support: the browser's own confirmation */
        dialog.returnValue = window.confirm(`${title}\n\n${text}`) ? 'yes' : '';
        done();
      }
    });
  }

  /** Sends one confirmed action with its own Idempotency-Key; retries keep the key. */
  async function send(method, path, body) {
    const key = O.uuid();
    let r;
    for (let tries = 0; tries < 4; tries++) {
      r = await O.api(method, path, { body, idempotencyKey: key });
      if (r.ok || !O.retryable(r)) break;
      const wait = r.retryAfter != null ? r.retryAfter : 1 + tries;
      say('lever-message', `${O.message(r.error)} Trying again in ${wait} s…`, 'info');
      await O.sleep(wait * 1000);
    }
    return r;
  }

  function refusal(r) {
    const e = r.error || {};
    const status = r.status ? `${r.status} ` : '';
    return `Refused (${status}${e.code || 'error'}): ${e.message || O.message(e)}`;
  }

  async function pull(lever, button) {
    if (dash.busy) return;
    const copy = leverCopy(lever);
    if (!copy) return;
    const ok = await confirmStep(copy, button);
    if (!ok) {
      say('lever-message', 'Cancelled: nothing changed.', 'info');
      return;
    }
    dash.busy = true;
    renderLevers();
    say('lever-message', `${copy.yes}…`, 'info');
    let r;
    try {
      r = await send('POST', `${opsPath}/${lever}`);
    } finally {
      dash.busy = false;
    }
    if (!session.active) return;
    if (r.ok && r.data) {
      /* stamped on arrival: a stats read sent before this answer may predate the change */
      adoptSale(r.data, performance.now());
      say('lever-message', copy.done, 'ok');
    } else {
      say('lever-message', refusal(r), 'error');
    }
    renderLevers();
    focusAfter(lever, r.ok);
    auditPoller.kick();
    statsPoller.kick();
  }

  /** Keeps the keyboard where the next move is. */
  function focusAfter(lever, ok) {
    const next = ok ? { pause: 'lever-resume', resume: 'lever-pause', open: 'lever-pause' }[lever] : `lever-${lever}`;
    const el = next && $(next);
    if (el && !el.disabled) el.focus();
    else $('lever-message').focus();
  }

  /* ---------- the admission rate ---------- */

  function validateRate(input) {
    const raw = input.value.trim();
    if (input.validity && input.validity.badInput) return { error: 'That is not a number. Enter the admission rate as a whole number from 1 to 100,000.' };
    if (!raw) return { error: 'Enter the admission rate: a whole number of fans per second, from 1 to 100,000.' };
    if (!/^[+-]?\d+$/.test(raw)) return { error: 'The admission rate must be a whole number of fans per second, from 1 to 100,000.' };
    const n = Number(raw);
    if (n < RATE_MIN) return { error: 'The admission rate must be at least 1 fan per second. To stop admitting fans, pause the sale instead.' };
    if (n > RATE_MAX) return { error: 'The admission rate can be at most 100,000 fans per second.' };
    return { value: n };
  }

  function rateError(text) {
    const input = $('rate-input');
    setText($('rate-error'), text || '');
    if (text) input.setAttribute('aria-invalid', 'true');
    else input.removeAttribute('aria-invalid');
  }

  async function submitRate() {
    if (dash.busy) return;
    const input = $('rate-input');
    const button = $('rate-button');
    const v = validateRate(input);
    if (v.error) {
      rateError(v.error);
      input.focus();
      return;
    }
    const per = v.value;
    const current = dash.sale.admission_per_second;
    if (per === current) {
      rateError(`The rate is already ${O.plural(per, 'fan', 'fans')} per second: nothing to change.`);
      input.focus();
      return;
    }
    rateError('');
    const queue = dash.stats && !dash.noSale ? dash.stats.queue_length : null;
    const s = saleState();
    let note = '';
    if (queue != null && queue > 0) note = `At this rate the ${O.plural(queue, 'fan', 'fans')} in line now would all be admitted in about ${O.fmtClock(Math.ceil(queue / per) * 1000)}.`;
    if (s === 'paused') note = `${note ? `${note} ` : ''}The sale is paused: the new rate applies when you resume.`;
    const ok = await confirmStep(
      {
        title: 'Change the admission rate?',
        text: `From ${current != null ? num(current) : '?'} to ${num(per)} fans per second. The booking workers take fans from the line at the new rate straight away.`,
        note,
        yes: `Set ${num(per)} per second`,
      },
      button
    );
    if (!ok) {
      say('lever-message', 'Cancelled: the admission rate is unchanged.', 'info');
      return;
    }
    dash.busy = true;
    renderLevers();
    say('lever-message', `Setting the admission rate to ${num(per)} per second…`, 'info');
    let r;
    try {
      r = await send('PUT', `${opsPath}/admission`, { per_second: per });
    } finally {
      dash.busy = false;
    }
    if (!session.active) return;
    if (r.ok && r.data) {
      dash.rateDirty = false;
      adoptSale(r.data, performance.now());
      input.value = String(dash.sale.admission_per_second);
      say('lever-message', `The admission rate is now ${O.plural(dash.sale.admission_per_second, 'fan', 'fans')} per second.`, 'ok');
    } else {
      say('lever-message', refusal(r), 'error');
      if (r.status === 422) rateError(refusal(r));
    }
    renderLevers();
    renderFigures();
    button.focus();
    auditPoller.kick();
    statsPoller.kick();
  }

  function wireLevers() {
    for (const lever of Object.keys(LEVERS)) {
      const b = $(`lever-${lever}`);
      b.addEventListener('click', () => pull(lever, b));
    }
    const form = $('rate-form');
    const input = $('rate-input');
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      submitRate();
    });
    input.addEventListener('input', () => {
      dash.rateDirty = true;
      if (input.getAttribute('aria-invalid')) rateError('');
    });
    input.addEventListener('blur', () => {
      if (input.value.trim() === String(dash.sale.admission_per_second)) dash.rateDirty = false;
    });
  }

  /* ------------------------------------------------------------------ */
  /* the audit log                                                       */
  /* ------------------------------------------------------------------ */

  const ACTION_NAME = {
    open: 'Opened',
    pause: 'Paused',
    resume: 'Resumed',
    close: 'Closed',
    admission: 'Admission rate',
    draw: 'Draw',
    sold_out: 'Sold out',
    restore: 'Restored',
  };

  function plain(v) {
    if (v == null) return '';
    if (typeof v === 'number') return num(v);
    if (typeof v === 'string') return STATE_NAME[v] ? STATE_NAME[v].toLowerCase() : v;
    return JSON.stringify(v);
  }

  function changeText(a) {
    const d = a.detail && typeof a.detail === 'object' ? a.detail : {};
    const parts = [];
    if (a.from != null || a.to != null) {
      let t = `${plain(a.from) || '?'} → ${plain(a.to) || '?'}`;
      if (a.action === 'admission') t += ' per second';
      parts.push(t);
    }
    if (typeof d.cohort === 'number') parts.push(`pre-queue of ${O.plural(d.cohort, 'request', 'requests')} drawn`);
    if (typeof d.prequeue_ended === 'number') parts.push(`${O.plural(d.prequeue_ended, 'pre-queue request', 'pre-queue requests')} ended`);
    if (!parts.length) {
      const rest = Object.entries(d).filter(([k]) => k !== 'from' && k !== 'to' && k !== 'per_second');
      if (rest.length) parts.push(rest.map(([k, v]) => `${k.replace(/_/g, ' ')}: ${plain(v)}`).join(', '));
    }
    return parts.join(' · ');
  }

  function renderAudit() {
    const list = dash.audit;
    const top = list.length ? `${list.length}|${list[0].at}|${list[0].action}|${list[list.length - 1].at}` : '0';
    if (top === dash.auditTop) return;
    const previousTop = dash.auditTop ? dash.auditNewest : null;
    dash.auditTop = top;
    dash.auditNewest = list.length ? Date.parse(list[0].at) : 0;
    const body = $('audit').tBodies[0];
    const rows = list.map((a) => {
      const tr = document.createElement('tr');
      tr.dataset.action = a.action;
      if (a.actor_email) tr.dataset.actor = a.actor_email;
      const at = Date.parse(a.at);
      if (previousTop != null && at > previousTop) tr.className = 'fresh';

      const when = document.createElement('td');
      const time = document.createElement('time');
      time.dateTime = a.at;
      time.title = O.fmtDateTime(a.at);
      time.textContent = fmtTime(at);
      when.append(time);

      const who = document.createElement('td');
      who.className = 'audit-who';
      who.textContent = a.actor_email || (a.actor ? `user ${String(a.actor).slice(0, 8)}` : 'the system');

      const what = document.createElement('td');
      what.className = 'audit-action';
      what.textContent = ACTION_NAME[a.action] || a.action;

      const change = document.createElement('td');
      change.textContent = changeText(a);

      tr.append(when, who, what, change);
      return tr;
    });
    body.replaceChildren(...rows);
    show($('audit-empty'), !list.length);
  }

  /* ------------------------------------------------------------------ */
  /* seats left per section                                              */
  /* ------------------------------------------------------------------ */

  let sectionsFrame = 0;
  function scheduleSections() {
    if (sectionsFrame) return;
    sectionsFrame = requestAnimationFrame(() => {
      sectionsFrame = 0;
      renderSections();
    });
  }

  function renderSections() {
    const root = $('sections');
    if (!dash.seatsLoaded) return;
    root.setAttribute('aria-busy', 'false');
    if (!dash.sections.size) {
      root.replaceChildren(Object.assign(document.createElement('p'), { className: 'muted', textContent: 'This event has no seats.' }));
      return;
    }
    let table = root.querySelector('table');
    if (!table || table.rows.length - 2 !== dash.sections.size) {
      table = document.createElement('table');
      table.className = 'sections-table';
      table.innerHTML =
        '<caption class="visually-hidden">Seats per section: left, held and sold</caption>' +
        '<thead><tr><th scope="col">Section</th><th scope="col" class="num">Left</th>' +
        '<th scope="col" class="num">Held</th><th scope="col" class="num">Sold</th>' +
        '<th scope="col" class="num">Seats</th><th scope="col" class="bar-col"><span class="visually-hidden">Share left</span></th></tr></thead>' +
        '<tbody></tbody><tfoot></tfoot>';
      const body = table.tBodies[0];
      for (const name of dash.sections.keys()) body.append(sectionRow(name));
      table.tFoot.append(sectionRow(null));
      root.replaceChildren(table);
    }
    const totals = { total: 0, available: 0, held: 0, sold: 0, tiers: new Set() };
    for (const [name, sec] of dash.sections) {
      fillSectionRow(table.querySelector(`tr[data-section="${CSS.escape(name)}"]`), name, sec);
      totals.total += sec.total;
      totals.available += sec.available;
      totals.held += sec.held;
      totals.sold += sec.sold;
    }
    fillSectionRow(table.tFoot.rows[0], null, totals);
    setText($('sections-note'), live.isLive() ? 'Live from the seat map.' : 'From the seat map, refreshed every few seconds.');
  }

  function sectionRow(name) {
    const tr = document.createElement('tr');
    if (name != null) tr.dataset.section = name;
    else tr.className = 'total';
    const th = document.createElement('th');
    th.scope = 'row';
    tr.append(th);
    for (let i = 0; i < 4; i++) {
      const td = document.createElement('td');
      td.className = 'num';
      tr.append(td);
    }
    const bar = document.createElement('td');
    bar.className = 'bar-col';
    bar.innerHTML = '<span class="meter" aria-hidden="true"><span class="meter-sold"></span><span class="meter-held"></span></span>';
    tr.append(bar);
    return tr;
  }

  function fillSectionRow(tr, name, sec) {
    if (!tr) return;
    const cells = tr.cells;
    if (name != null) {
      const tiers = Array.from(sec.tiers || []).join(', ');
      const key = `${name}|${tiers}`;
      if (cells[0].dataset.name !== key) {
        cells[0].dataset.name = key;
        cells[0].textContent = name;
        if (tiers) {
          const t = document.createElement('span');
          t.className = 'tier';
          t.textContent = ` ${tiers}`;
          cells[0].append(t);
        }
      }
    } else {
      setText(cells[0], 'All sections');
    }
    tr.dataset.available = String(sec.available);
    tr.dataset.held = String(sec.held);
    tr.dataset.sold = String(sec.sold);
    tr.dataset.total = String(sec.total);
    setText(cells[1], num(sec.available));
    setText(cells[2], num(sec.held));
    setText(cells[3], num(sec.sold));
    setText(cells[4], num(sec.total));
    const total = sec.total || 1;
    const meter = cells[5].firstChild;
    meter.firstChild.style.width = `${(sec.sold / total) * 100}%`;
    meter.lastChild.style.width = `${(sec.held / total) * 100}%`;
    meter.title = `${Math.round((sec.available / total) * 100)} % left`;
  }

  /* ------------------------------------------------------------------ */
  /* charts: small inline SVG, drawn here                                */
  /* ------------------------------------------------------------------ */

  const SVG = 'http://www.w3.org/2000/svg';
  let chartsFrame = 0;

  function scheduleCharts() {
    if (chartsFrame) return;
    chartsFrame = requestAnimationFrame(() => {
      chartsFrame = 0;
      renderCharts();
    });
  }

  function el(name, attrs, text) {
    const e = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text != null) e.textContent = text;
    return e;
  }

  /** The smallest of 1, 2, 4, 5 × 10^k that is at least `v` (its half is as round). */
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 4, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  /** Smoothed per-second rates of `field` over RATE_SMOOTH_MS, never across gaps. */
  function ratesOf(samples, field) {
    const out = [];
    let segStart = 0;
    let j = 0;
    for (let i = 0; i < samples.length; i++) {
      if (i > 0 && samples[i].t - samples[i - 1].t > GAP_MS) {
        segStart = i;
        j = i;
        out.push(null); // a break in the line
      }
      if (i === segStart) continue;
      while (j < i - 1 && samples[i].t - samples[j].t > RATE_SMOOTH_MS) j++;
      if (j < segStart) j = segStart;
      const dt = (samples[i].t - samples[j].t) / 1000;
      if (dt <= 0) continue;
      out.push([samples[i].t, Math.max(0, samples[i][field] - samples[j][field]) / dt]);
    }
    return out;
  }

  /** The admission rate set over time, as steps, from the audit log's changes. */
  function rateSteps(t0, t1) {
    const current = dash.sale.admission_per_second;
    const changes = dash.audit
      .filter((a) => a.action === 'admission' && a.to != null)
      .map((a) => ({ t: Date.parse(a.at), from: Number(a.from), to: Number(a.to) }))
      .filter((c) => !Number.isNaN(c.t))
      .sort((a, b) => a.t - b.t);
    const before = changes.filter((c) => c.t <= t0);
    const after = changes.filter((c) => c.t > t0);
    let v = before.length ? before[before.length - 1].to : after.length && Number.isFinite(after[0].from) ? after[0].from : current;
    if (v == null) return [];
    const pts = [[t0, v]];
    for (const c of after) {
      if (c.t > t1) break;
      pts.push([c.t, v]);
      v = c.to;
      pts.push([c.t, v]);
    }
    pts.push([t1, v]);
    if (current != null && current !== v) pts.push([t1, current]);
    return pts;
  }

  /** When the sale was paused, from the audit log: [[from, to], ...] within [t0, t1]. */
  function pausedSpans(t0, t1) {
    const evs = dash.audit
      .filter((a) => a.action === 'pause' || a.action === 'resume' || a.action === 'close')
      .map((a) => ({ t: Date.parse(a.at), action: a.action }))
      .filter((e) => !Number.isNaN(e.t))
      .sort((a, b) => a.t - b.t);
    const spans = [];
    let start = null;
    for (const e of evs) {
      if (e.action === 'pause') start = start == null ? e.t : start;
      else if (start != null) {
        spans.push([start, e.t]);
        start = null;
      }
    }
    if (start != null && saleState() === 'paused') spans.push([start, t1]);
    return spans.filter(([a, b]) => b > t0 && a < t1).map(([a, b]) => [Math.max(a, t0), Math.min(b, t1)]);
  }

  function renderCharts() {
    const samples = dash.samples;
    const now = samples.length ? Math.max(samples[samples.length - 1].t, O.now() - 1500) : O.now();
    const first = samples.length ? samples[0].t : now;
    const span = Math.min(WINDOW_MAX_S, Math.max(WINDOW_MIN_S, Math.ceil((now - first) / 1000)));
    const t0 = now - span * 1000;
    const t1 = now;
    const inWindow = samples.filter((s) => s.t >= t0 - 6000);
    show($('charts-empty'), dash.historyLoaded && !samples.length);
    setText($('charts-span'), samples.length ? `Last ${fmtSpan(span)}` : '');

    const queue = inWindow.map((s) => [s.t, Math.max(0, s.next - s.served)]);
    const gapsBroken = (pts) => {
      const out = [];
      for (let i = 0; i < pts.length; i++) {
        if (i > 0 && pts[i][0] - pts[i - 1][0] > GAP_MS) out.push(null);
        out.push(pts[i]);
      }
      return out;
    };
    const last = samples.length ? samples[samples.length - 1] : null;
    const paused = pausedSpans(t0, t1);
    show($('charts-paused'), paused.length > 0);
    const q = gapsBroken(queue);
    drawChart($('chart-queue'), {
      id: 'queue',
      t0,
      t1,
      paused,
      series: [{ key: 'queue', label: 'Fans in line', points: q, area: true }],
      summary: summaryOf('Fans in line', q, (v) => num(Math.round(v))),
      fmt: (v) => num(v),
    });

    const arrivals = ratesOf(inWindow, 'next');
    const admitted = ratesOf(inWindow, 'served');
    const steps = samples.length ? rateSteps(Math.max(t0, first), t1) : [];
    drawChart($('chart-rates'), {
      id: 'rates',
      t0,
      t1,
      paused,
      series: [
        { key: 'rate', label: 'Admission rate set', points: steps, step: true },
        { key: 'arrivals', label: 'Arrivals per second', points: arrivals },
        { key: 'admitted', label: 'Admitted per second', points: admitted },
      ],
      summary: [
        summaryOf('Arrivals per second', arrivals, rate),
        summaryOf('Admitted per second', admitted, rate),
        steps.length ? `Admission rate set: ${num(steps[steps.length - 1][1])} per second.` : '',
      ].join(' '),
      fmt: (v) => rate(v),
    });

    const held = gapsBroken(inWindow.map((s) => [s.t, s.held]));
    const sold = gapsBroken(inWindow.map((s) => [s.t, s.sold]));
    drawChart($('chart-sales'), {
      id: 'sales',
      t0,
      t1,
      paused,
      series: [
        { key: 'held', label: 'Seats held', points: held },
        { key: 'sold', label: 'Seats sold', points: sold },
      ],
      summary: `${summaryOf('Seats held', held, num)} ${summaryOf('Seats sold', sold, num)}`,
      fmt: (v) => num(v),
    });
    if (last) $('chart-queue').dataset.last = String(Math.max(0, last.next - last.served));
  }

  function summaryOf(label, pts, fmt) {
    const vals = pts.filter(Boolean).map((p) => p[1]);
    if (!vals.length) return `${label}: no samples yet.`;
    return `${label}: now ${fmt(vals[vals.length - 1])}, highest ${fmt(Math.max(...vals))}, lowest ${fmt(Math.min(...vals))}.`;
  }

  function drawChart(box, { id, t0, t1, series, summary, fmt, paused }) {
    if (!box) return;
    const W = Math.max(220, Math.round(box.clientWidth || 480));
    const H = W < 420 ? 120 : 140;
    const m = { l: 44, r: 10, t: 10, b: 22 };
    const iw = W - m.l - m.r;
    const ih = H - m.t - m.b;
    let max = 0;
    let count = 0;
    for (const s of series) {
      for (const p of s.points) {
        if (!p || p[0] < t0 - 6000) continue;
        count++;
        if (p[1] > max) max = p[1];
      }
    }
    const top = niceMax(max * 1.05);
    const x = (t) => m.l + Math.max(0, Math.min(1, (t - t0) / (t1 - t0 || 1))) * iw;
    const y = (v) => m.t + ih - (v / top) * ih;

    const svg = el('svg', {
      viewBox: `0 0 ${W} ${H}`,
      width: W,
      height: H,
      role: 'img',
      'aria-labelledby': `chart-${id}-title chart-${id}-desc`,
      class: 'chart-svg',
    });
    svg.append(el('title', { id: `chart-${id}-title` }, series.map((s) => s.label).join(', ') + ` over the last ${fmtSpan((t1 - t0) / 1000)}`));
    const pausedNote = paused && paused.length ? ` The sale was paused during ${paused.length === 1 ? 'the shaded span' : `${paused.length} shaded spans`}.` : '';
    svg.append(el('desc', { id: `chart-${id}-desc` }, summary + pausedNote));

    const grid = el('g', { class: 'grid', 'aria-hidden': 'true' });
    for (const [a, b] of paused || []) {
      grid.append(el('rect', { x: x(a).toFixed(1), y: m.t, width: Math.max(1, x(b) - x(a)).toFixed(1), height: ih, class: 'paused-span' }));
    }
    for (const f of [0, 0.5, 1]) {
      const v = top * f;
      const yy = Math.round(y(v)) + 0.5;
      grid.append(el('line', { x1: m.l, x2: W - m.r, y1: yy, y2: yy, class: f === 0 ? 'axis' : 'gridline' }));
      grid.append(el('text', { x: m.l - 6, y: yy + 4, 'text-anchor': 'end', class: 'tick' }, fmt(v)));
    }
    /* time ticks at round seconds back from now: at most 5 gaps, fewer on a phone */
    const spanS = (t1 - t0) / 1000;
    const most = W < 420 ? 3 : 5;
    const stepS = [10, 15, 20, 30, 60, 120, 300].find((st) => spanS / st <= most) || 300;
    for (let ago = 0; ago <= spanS + 0.5; ago += stepS) {
      const xx = x(t1 - ago * 1000);
      if (ago > 0 && xx - m.l < 14) break; // too close to the left edge to read
      const label = ago === 0 ? 'now' : ago % 60 === 0 ? `−${ago / 60} min` : `−${ago} s`;
      grid.append(el('line', { x1: xx, x2: xx, y1: m.t + ih, y2: m.t + ih + 4, class: 'axis' }));
      grid.append(el('text', { x: xx, y: H - 6, 'text-anchor': ago === 0 ? 'end' : 'middle', class: 'tick' }, label));
    }
    svg.append(grid);

    const plot = el('g', { 'aria-hidden': 'true' });
    for (const s of series) {
      const segs = [];
      let cur = [];
      for (const p of s.points) {
        if (!p) {
          if (cur.length) segs.push(cur);
          cur = [];
          continue;
        }
        if (p[0] < t0 - 6000) continue;
        cur.push(p);
      }
      if (cur.length) segs.push(cur);
      let d = '';
      let area = '';
      for (const seg of segs) {
        const pts = seg.map((p) => [x(p[0]).toFixed(1), y(p[1]).toFixed(1)]);
        d += `M${pts.map((p) => p.join(' ')).join('L')}`;
        if (seg.length === 1) d += `h1`;
        if (s.area && seg.length > 1) {
          area += `M${pts[0][0]} ${y(0).toFixed(1)}L${pts.map((p) => p.join(' ')).join('L')}L${pts[pts.length - 1][0]} ${y(0).toFixed(1)}Z`;
        }
      }
      if (area) plot.append(el('path', { d: area, class: `area area-${s.key}` }));
      if (d) plot.append(el('path', { d, class: `line line-${s.key}`, 'data-series': s.key, 'data-points': segs.reduce((n, g) => n + g.length, 0) }));
      const lastSeg = segs[segs.length - 1];
      if (lastSeg && !s.step) {
        const p = lastSeg[lastSeg.length - 1];
        plot.append(el('circle', { cx: x(p[0]).toFixed(1), cy: y(p[1]).toFixed(1), r: 3, class: `dot dot-${s.key}` }));
      }
    }
    svg.append(plot);
    if (!count) {
      svg.append(el('text', { x: m.l + iw / 2, y: m.t + ih / 2, 'text-anchor': 'middle', class: 'empty' }, 'No samples yet'));
    }
    box.replaceChildren(svg);
  }

  /* ------------------------------------------------------------------ */

  function renderAll() {
    renderSale();
    renderFigures();
    renderLevers();
    renderUpdated();
    scheduleCharts();
    scheduleSections();
  }

  /* Escape closes the dialog as "no"; so does a click on its backdrop. */
  $('confirm-dialog').addEventListener('click', (e) => {
    if (e.target === e.currentTarget) {
      const r = e.currentTarget.getBoundingClientRect();
      const inside = e.clientX >= r.left && e.clientX <= r.right && e.clientY >= r.top && e.clientY <= r.bottom;
      if (!inside) e.currentTarget.close('');
    }
  });

  O.wireAuth(); // the account bar and its sign-out button
  wireSignIn();
  wireLevers();
  O.onAccountChange((next, why) => {
    if (!next && why === 'expired') say('ops-signin-message', 'Your session has ended. Please sign in again.', 'error');
    enter();
  });
  enter();

  /* for tests and the curious: what the page knows */
  Object.defineProperty(window, 'onsaleOps', { value: { dash, session, live }, configurable: true });
})();
