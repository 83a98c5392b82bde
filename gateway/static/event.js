/* onsale: the fan's waiting room for one event, at /e/{event_id}.
 *
 * Sources of truth, in order: the live socket (docs/REALTIME.md), its REST fallback
 * (GET /v1/events/{id}/live/snapshot), and plain REST reads on (re)load. The page
 * keeps no state the server does not have, except what it remembers per tab in
 * sessionStorage: the signed-in account, the fan's request in this event, the first
 * position seen (for the progress bar) and the order id of the last checkout. */
(function () {
  'use strict';

  const O = window.Onsale;
  const $ = (id) => document.getElementById(id);

  const TERMINAL = new Set(['confirmed', 'expired', 'released', 'cancelled', 'rejected']);
  const JOINABLE = new Set(['scheduled', 'drawing', 'open', 'paused']);
  const RANK = { prequeue: 0, queued: 1, held: 2, paying: 3, confirmed: 4, expired: 4, released: 4, cancelled: 4, rejected: 4 };
  const POLL_MS = 5000;
  const ANON_POLL_MS = 10000;
  const BACKOFF_MAX_S = 15;

  const eventId = parseEventId();
  const REQ_KEY = `onsale.request.${eventId}`;

  const state = {
    event: null,
    venueName: '',
    sale: null, // {state, onsale_at, admission_per_second}
    request: null, // as GET /v1/requests/{id}
    ask: null, // what the fan asked for, as sent
    position: null, // {request_id, queue_number, position, eta_seconds, seats_left}
    seats: new Map(), // seat_id -> {seat, el, r, c}
    rows: [], // [[entry, ...], ...] in map order, for arrow keys
    seatsVersion: 0,
    seatsBuilt: false,
    selected: new Set(),
    order: null, // the last checkout's order
    ended: false, // an ended request is being shown
  };

  /* ------------------------------------------------------------------ */
  /* utilities                                                           */
  /* ------------------------------------------------------------------ */

  function parseEventId() {
    const m = window.location.pathname.match(/\/e\/([^/]+)\/?$/);
    if (m) return decodeURIComponent(m[1]);
    return new URLSearchParams(window.location.search).get('event') || '';
  }

  const enc = encodeURIComponent;

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
  function pageError(text) {
    const el = $('page-error');
    setText(el, text);
    show(el, !!text);
    clearTimeout(pageErrorTimer);
    if (text) pageErrorTimer = setTimeout(() => show(el, false), 15000);
  }

  function saleState() {
    if (state.sale && state.sale.state) return state.sale.state;
    return null;
  }

  function onsaleAt() {
    const iso = (state.sale && state.sale.onsale_at) || (state.event && state.event.onsale_at);
    const t = iso ? Date.parse(iso) : NaN;
    return Number.isNaN(t) ? null : t;
  }

  function isLive(req) {
    return !!req && !TERMINAL.has(req.state);
  }

  function seatLabel(id) {
    const entry = state.seats.get(id);
    if (entry) {
      const s = entry.seat;
      return `${s.section} · Row ${s.row} · Seat ${s.number}`;
    }
    return id;
  }

  function priceOf(id) {
    const entry = state.seats.get(id);
    if (!entry || !state.event || !state.event.prices) return null;
    const p = state.event.prices[entry.seat.price_tier];
    return typeof p === 'number' ? p : null;
  }

  function totalOf(ids) {
    let sum = 0;
    for (const id of ids) {
      const p = priceOf(id);
      if (p == null) return null;
      sum += p;
    }
    return sum;
  }

  /* ------------------------------------------------------------------ */
  /* the fan's request, remembered per event                            */
  /* ------------------------------------------------------------------ */

  function remembered() {
    const r = O.load(REQ_KEY);
    if (!r || !r.request_id || r.email !== O.email()) return null;
    return r;
  }

  function remember(req, ask) {
    if (!req) {
      O.save(REQ_KEY, null);
      return;
    }
    const prev = remembered();
    O.save(REQ_KEY, {
      request_id: req.request_id,
      email: O.email(),
      ask: ask || (prev && prev.request_id === req.request_id ? prev.ask : null),
    });
  }

  /** Takes a request as the server tells it (REST or socket). */
  function adoptRequest(req, ask) {
    if (!req || !req.request_id) return;
    const prev = state.request;
    if (prev && prev.request_id !== req.request_id && isLive(prev) && !isLive(req)) {
      return; // an old request's news must not replace the live one
    }
    const changedId = !prev || prev.request_id !== req.request_id;
    const before = prev && !changedId ? prev.state : null;
    /* a request only moves forward (a declined payment aside: paying -> held); news
     * that arrives late, like a join's answer after the socket said "held", is old */
    if (before && RANK[req.state] < RANK[before] && !(before === 'paying' && req.state === 'held')) return;
    const next = Object.assign({}, req);
    delete next.type;
    /* messages are whole requests; only seats are kept from before if one leaves them out */
    if (!changedId && !next.seats && prev.seats && next.state !== 'prequeue' && next.state !== 'queued') next.seats = prev.seats;
    state.request = next;
    if (changedId) {
      state.position = null;
      state.ask = ask || null;
      state.ended = false;
    }
    if (ask) state.ask = ask;
    if (!state.ask) {
      const mem = remembered();
      if (mem && mem.request_id === req.request_id) state.ask = mem.ask;
    }
    if (req.position != null && (req.state === 'queued')) {
      notePosition({
        request_id: req.request_id,
        queue_number: req.queue_number,
        position: req.position,
        eta_seconds: state.position ? state.position.eta_seconds : null,
        seats_left: state.position ? state.position.seats_left : null,
      }, true);
    }
    remember(state.request, state.ask);
    if (TERMINAL.has(state.request.state)) state.ended = state.request.state !== 'confirmed';
    if (state.request.state !== before) announceTransition(before, state.request.state);
    if (changedId) live.follow();
    markMine();
    render();
  }

  function forgetRequest() {
    state.request = null;
    state.position = null;
    state.ask = null;
    state.ended = false;
    state.order = null;
    remember(null);
    markMine();
    render();
  }

  function announceTransition(before, after) {
    const text = {
      queued: before === 'prequeue' ? 'Places have been drawn: you are in line.' : '',
      held: 'Your seats are held. Pay before the hold runs out.',
      paying: 'Waiting for your bank…',
      confirmed: 'You’re going! Your seats are paid for.',
      expired: 'Your hold ran out; the seats went back on sale.',
      released: 'You released your seats.',
      cancelled: 'Your request was cancelled.',
      rejected: 'Your request could not be served.',
    }[after];
    if (text) {
      document.title = `${titleFor(after)}${state.event ? ` · ${state.event.name}` : ''} · onsale`;
      setText($('announcer'), text);
    }
    if (after === 'confirmed') {
      const c = $('confirmation');
      setTimeout(() => c && !c.hidden && c.focus(), 0);
    } else if (after === 'held' && before !== 'paying') {
      /* moving focus would yank a fan away from whatever they are reading; the
       * hold's heading is announced by the status region instead */
      say('line-message', '', '');
    }
  }

  function titleFor(s) {
    return (
      {
        prequeue: 'In the pre-queue',
        queued: 'In line',
        held: 'Seats held: pay now',
        paying: 'Paying…',
        confirmed: 'You’re going!',
        expired: 'Hold ran out',
        released: 'Seats released',
        cancelled: 'Cancelled',
        rejected: 'Not served',
      }[s] || 'Waiting room'
    );
  }

  /* ------------------------------------------------------------------ */
  /* the event and its seat map                                         */
  /* ------------------------------------------------------------------ */

  async function loadEvent() {
    for (let attempt = 0; ; attempt++) {
      const r = await O.api('GET', `/v1/events/${enc(eventId)}`);
      if (r.ok) {
        state.event = r.data;
        break;
      }
      if (r.status === 404 || r.status === 400) {
        setText($('event-name'), 'Event not found');
        setText($('event-meta'), 'This event does not exist, or its link is wrong.');
        $('event-name').dataset.state = 'not-found';
        show($('sale'), false);
        show($('join'), false);
        show($('auth'), false);
        show($('seatmap'), false);
        return false;
      }
      pageError(`${O.message(r.error)} Retrying…`);
      await O.sleep(Math.min(BACKOFF_MAX_S, 2 ** attempt) * 1000);
    }
    pageError('');
    const ev = state.event;
    setText($('event-name'), ev.name);
    document.title = `${ev.name} · onsale`;
    for (const el of document.querySelectorAll('.max-per-fan')) setText(el, String(ev.max_per_fan));
    const q = $('best-quantity');
    q.max = String(ev.max_per_fan);
    if (Number(q.value) > ev.max_per_fan) q.value = String(ev.max_per_fan);
    renderMeta();
    O.api('GET', `/v1/venues/${enc(ev.venue_id)}`).then((v) => {
      if (v.ok && v.data && v.data.name) {
        state.venueName = v.data.name;
        renderMeta();
      }
    });
    return true;
  }

  function renderMeta() {
    const ev = state.event;
    if (!ev) return;
    const parts = [];
    if (state.venueName) parts.push(state.venueName);
    parts.push(O.fmtDateTime(ev.starts_at));
    setText($('event-meta'), parts.join(' · '));
  }

  let seatsLoading = null;
  let seatsWanted = 0;
  let pendingDeltas = [];

  /** Fetches the whole map; deltas arriving meanwhile wait and are applied after it. */
  function loadSeats(minVersion) {
    seatsWanted = Math.max(seatsWanted, minVersion || 0);
    if (seatsLoading) return seatsLoading;
    seatsLoading = (async () => {
      for (let attempt = 0; attempt < 8; attempt++) {
        const r = await O.api('GET', `/v1/events/${enc(eventId)}/seats`, { cache: 'no-cache' });
        if (!r.ok) {
          if (r.status === 404) return;
          await O.sleep(Math.min(BACKOFF_MAX_S, 2 ** attempt) * 1000);
          continue;
        }
        const header = r.headers.get('Onsale-Seats-Version');
        const version = header != null && header !== '' && Number.isFinite(Number(header)) ? Number(header) : seatsWanted;
        applySnapshot(Array.isArray(r.data) ? r.data : [], version);
        /* the server's copy is at most a second old: a version behind the one the
         * socket announced means changes we will never get as deltas */
        if (version >= seatsWanted) return;
        await O.sleep(400);
      }
    })().finally(() => {
      seatsLoading = null;
      const later = pendingDeltas.sort((a, b) => a.version - b.version);
      pendingDeltas = [];
      for (const m of later) applyDelta(m);
    });
    return seatsLoading;
  }

  function applySnapshot(list, version) {
    const same = state.seatsBuilt && list.length === state.seats.size && list.every((s) => state.seats.has(s.seat_id));
    if (!same) buildMap(list);
    else for (const s of list) setSeatState(s.seat_id, s.state);
    state.seatsVersion = version;
    const later = pendingDeltas.filter((m) => m.version > version).sort((a, b) => a.version - b.version);
    pendingDeltas = [];
    for (const m of later) applyDelta(m);
    renderSeatSummary();
  }

  function applyDelta(m) {
    if (!(m.version > state.seatsVersion)) return;
    for (const c of m.changes || []) setSeatState(c.seat_id, c.state);
    state.seatsVersion = m.version;
    renderSeatSummary();
  }

  function buildMap(list) {
    const root = $('seat-map');
    const sections = new Map();
    for (const s of list) {
      if (!sections.has(s.section)) sections.set(s.section, { tier: s.price_tier, rows: new Map() });
      const sec = sections.get(s.section);
      if (!sec.rows.has(s.row)) sec.rows.set(s.row, []);
      sec.rows.get(s.row).push(s);
    }
    const focusedId = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.seatId : null;
    state.seats.clear();
    state.rows = [];
    const frag = document.createDocumentFragment();
    if (list.length) {
      const stage = document.createElement('div');
      stage.className = 'stage';
      stage.setAttribute('aria-hidden', 'true');
      stage.textContent = 'Stage';
      frag.append(stage);
    }
    let i = 0;
    for (const [name, sec] of sections) {
      i++;
      const el = document.createElement('section');
      el.className = 'map-section';
      el.dataset.section = name;
      el.setAttribute('aria-labelledby', `map-section-${i}`);
      const h = document.createElement('h3');
      h.id = `map-section-${i}`;
      const title = document.createElement('span');
      title.textContent = name;
      const tier = document.createElement('span');
      tier.className = 'tier';
      const tiers = new Set();
      for (const seats of sec.rows.values()) for (const s of seats) tiers.add(s.price_tier);
      tier.textContent = Array.from(tiers)
        .map((t) => {
          const p = state.event && state.event.prices ? state.event.prices[t] : undefined;
          return typeof p === 'number' ? `${t} · ${O.fmtMoney(p)}` : t;
        })
        .join(', ');
      const count = document.createElement('span');
      count.className = 'section-count';
      h.append(title, tier, count);
      el.append(h);
      const rowsEl = document.createElement('div');
      rowsEl.className = 'rows';
      for (const [rowLabel, seats] of sec.rows) {
        seats.sort((a, b) => a.number - b.number);
        const row = document.createElement('div');
        row.className = 'seat-row';
        row.setAttribute('role', 'group');
        row.setAttribute('aria-label', `${name}, row ${rowLabel}`);
        const label = document.createElement('span');
        label.className = 'row-label';
        label.setAttribute('aria-hidden', 'true');
        label.textContent = rowLabel;
        const seatsEl = document.createElement('div');
        seatsEl.className = 'row-seats';
        const entries = [];
        for (const s of seats) {
          const b = document.createElement('button');
          b.type = 'button';
          b.className = 'seat';
          b.textContent = String(s.number);
          b.dataset.seatId = s.seat_id;
          b.dataset.testid = 'seat';
          b.tabIndex = -1;
          const entry = { seat: Object.assign({}, s), el: b, r: state.rows.length, c: entries.length };
          entries.push(entry);
          state.seats.set(s.seat_id, entry);
          paintSeat(entry);
          seatsEl.append(b);
        }
        state.rows.push(entries);
        row.append(label, seatsEl);
        rowsEl.append(row);
      }
      el.append(rowsEl);
      const more = document.createElement('p');
      more.className = 'rows-more';
      more.hidden = true;
      more.textContent = 'More seats to the right: scroll sideways, or use the arrow keys →';
      el.append(more);
      frag.append(el);
    }
    root.replaceChildren(frag);
    markOverflowingRows();
    root.setAttribute('aria-busy', 'false');
    if (list.length === 0) {
      const p = document.createElement('p');
      p.className = 'muted';
      p.textContent = 'This event has no seats.';
      root.append(p);
    }
    state.seatsBuilt = true;
    /* picks that no longer exist are dropped */
    for (const id of Array.from(state.selected)) if (!state.seats.has(id)) state.selected.delete(id);
    for (const id of state.selected) paintSeat(state.seats.get(id));
    markMine();
    const keep = focusedId && state.seats.get(focusedId);
    setRoving(keep || firstSeat());
    if (keep) keep.el.focus();
    fillSections(sections);
  }

  function fillSections(sections) {
    const select = $('best-section');
    const current = select.value;
    select.replaceChildren(new Option('Any section', ''));
    for (const name of sections.keys()) select.append(new Option(name, name));
    if (Array.from(select.options).some((o) => o.value === current)) select.value = current;
  }

  function firstSeat() {
    for (const row of state.rows) for (const e of row) if (e.seat.state === 'available') return e;
    return state.rows.length && state.rows[0].length ? state.rows[0][0] : null;
  }

  function paintSeat(entry) {
    if (!entry) return;
    const { seat, el } = entry;
    const selected = state.selected.has(seat.seat_id);
    el.dataset.state = seat.state;
    el.setAttribute('aria-pressed', selected ? 'true' : 'false');
    el.setAttribute('aria-disabled', seat.state === 'available' || selected ? 'false' : 'true');
    const mine = el.dataset.mine === 'true' ? ', yours' : '';
    el.setAttribute(
      'aria-label',
      `Seat ${seat.section} ${seat.row} ${seat.number}, ${seat.state}${mine}, tier ${seat.price_tier}`
    );
  }

  function setSeatState(id, next) {
    const entry = state.seats.get(id);
    if (!entry || entry.seat.state === next) return;
    entry.seat.state = next;
    if (next !== 'available' && state.selected.has(id)) {
      state.selected.delete(id);
      say('join-message', `Seat ${seatLabel(id)} was just taken; pick another.`, 'error');
      renderPicked();
    }
    paintSeat(entry);
  }

  function markMine() {
    const mine = new Set(state.request && state.request.seats && ['held', 'paying', 'confirmed'].includes(state.request.state) ? state.request.seats : []);
    for (const entry of state.seats.values()) {
      const is = mine.has(entry.seat.seat_id);
      if ((entry.el.dataset.mine === 'true') !== is) {
        if (is) entry.el.dataset.mine = 'true';
        else delete entry.el.dataset.mine;
        paintSeat(entry);
      }
    }
  }

  function renderSeatSummary() {
    let available = 0;
    const perSection = new Map();
    for (const { seat } of state.seats.values()) {
      const c = perSection.get(seat.section) || { a: 0, n: 0 };
      c.n++;
      if (seat.state === 'available') {
        available++;
        c.a++;
      }
      perSection.set(seat.section, c);
    }
    setText($('seat-summary'), state.seats.size ? `${O.fmtNumber(available)} of ${O.fmtNumber(state.seats.size)} seats available` : '');
    for (const el of document.querySelectorAll('.map-section')) {
      const c = perSection.get(el.dataset.section);
      if (c) setText(el.querySelector('.section-count'), `${O.fmtNumber(c.a)} available`);
    }
  }

  /**
   * A section whose rows are wider than the card scrolls sideways; on a phone the
   * scrollbar is hidden until touched, so the section says so in words.
   */
  function markOverflowingRows() {
    for (const rows of document.querySelectorAll('.map-section .rows')) {
      const more = rows.parentElement.querySelector('.rows-more');
      if (more) more.hidden = rows.scrollWidth <= rows.clientWidth + 1;
    }
  }
  window.addEventListener('resize', markOverflowingRows);

  /* ----- picking seats ----- */

  function canPick() {
    return !isLive(state.request) && !(state.request && state.request.state === 'confirmed');
  }

  function toggleSeat(entry) {
    const id = entry.seat.seat_id;
    const max = state.event ? state.event.max_per_fan : 4;
    if (!canPick()) {
      say('seatmap-message', 'You already have a request in this event; seats are picked before joining.', 'error');
      return;
    }
    if (state.selected.has(id)) {
      state.selected.delete(id);
    } else {
      if (entry.seat.state !== 'available') {
        announcePick(`Seat ${seatLabel(id)} is ${entry.seat.state}.`);
        return;
      }
      if (state.selected.size >= max) {
        announcePick(`You can pick up to ${max} seats. Unpick one first.`);
        return;
      }
      state.selected.add(id);
    }
    paintSeat(entry);
    say('seatmap-message', '', '');
    $('mode-pick').checked = true;
    renderJoinMode();
    renderPicked();
  }

  function announcePick(text) {
    say('seatmap-message', text, 'error');
  }

  function renderPicked() {
    const ids = Array.from(state.selected);
    const max = state.event ? state.event.max_per_fan : 4;
    if (!ids.length) {
      say('picked-summary', `No seats picked yet. Pick up to ${max} on the seat map.`, '');
      return;
    }
    const total = totalOf(ids);
    say(
      'picked-summary',
      `${O.plural(ids.length, 'seat', 'seats')} picked: ${ids.map(seatLabel).join('; ')}` +
        (total != null ? ` (${O.fmtMoney(total)})` : ''),
      ''
    );
  }

  function setRoving(entry) {
    const current = $('seat-map').querySelector('.seat[tabindex="0"]');
    if (current && (!entry || current !== entry.el)) current.tabIndex = -1;
    if (entry) entry.el.tabIndex = 0;
  }

  function wireSeatMap() {
    const root = $('seat-map');
    root.addEventListener('click', (e) => {
      const b = e.target.closest('.seat');
      if (!b) return;
      const entry = state.seats.get(b.dataset.seatId);
      if (!entry) return;
      setRoving(entry);
      toggleSeat(entry);
    });
    root.addEventListener('focusin', (e) => {
      const b = e.target.closest('.seat');
      if (b && state.seats.has(b.dataset.seatId)) setRoving(state.seats.get(b.dataset.seatId));
    });
    root.addEventListener('keydown', (e) => {
      const b = e.target.closest('.seat');
      if (!b) return;
      const entry = state.seats.get(b.dataset.seatId);
      if (!entry) return;
      let next = null;
      const row = state.rows[entry.r];
      switch (e.key) {
        case 'ArrowRight':
          next = row[entry.c + 1];
          break;
        case 'ArrowLeft':
          next = row[entry.c - 1];
          break;
        case 'ArrowDown': {
          const r = state.rows[entry.r + 1];
          next = r && r[Math.min(entry.c, r.length - 1)];
          break;
        }
        case 'ArrowUp': {
          const r = state.rows[entry.r - 1];
          next = r && r[Math.min(entry.c, r.length - 1)];
          break;
        }
        case 'Home':
          next = row[0];
          break;
        case 'End':
          next = row[row.length - 1];
          break;
        default:
          return;
      }
      e.preventDefault();
      if (next) {
        setRoving(next);
        next.el.focus();
      }
    });
  }

  /* ------------------------------------------------------------------ */
  /* joining, leaving, releasing                                        */
  /* ------------------------------------------------------------------ */

  function renderJoinMode() {
    const pick = $('mode-pick').checked;
    show($('best-fields'), !pick);
    show($('pick-fields'), pick);
    if (pick) renderPicked();
  }

  function buildAsk() {
    const max = state.event ? state.event.max_per_fan : 50;
    if ($('mode-pick').checked) {
      const seats = Array.from(state.selected);
      if (!seats.length) {
        say('join-message', 'Pick at least one seat on the seat map, or choose best available.', 'error');
        return null;
      }
      return { seats };
    }
    const qInput = $('best-quantity');
    const quantity = Number(qInput.value);
    qInput.removeAttribute('aria-invalid');
    if (!Number.isInteger(quantity) || quantity < 1 || quantity > max) {
      qInput.setAttribute('aria-invalid', 'true');
      say('join-message', `Ask for 1 to ${max} seats.`, 'error');
      qInput.focus();
      return null;
    }
    const ask = { quantity };
    const section = $('best-section').value;
    if (section) ask.section = section;
    return ask;
  }

  function describeAsk(ask) {
    if (!ask) return '';
    if (ask.seats) return `You asked for ${ask.seats.map(seatLabel).join('; ')}.`;
    const where = ask.section ? ` in ${ask.section}` : '';
    return `You asked for the best ${O.plural(ask.quantity, 'seat', 'seats')} available${where}.`;
  }

  /** Waits `seconds`, counting down in a message. */
  async function countdownMessage(id, prefix, seconds) {
    for (let s = seconds; s > 0; s--) {
      say(id, `${prefix}, retrying in ${s} s…`, 'info');
      await O.sleep(1000);
    }
  }

  let joining = false;
  async function join(e) {
    e.preventDefault();
    if (joining) return;
    if (!O.token()) {
      say('join-message', 'Please sign in first.', 'error');
      return;
    }
    const ask = buildAsk();
    if (!ask) return;
    joining = true;
    const button = $('join-button');
    button.disabled = true;
    const key = O.uuid(); // one attempt: every retry of it carries the same key
    say('join-message', 'Joining the line…', 'info');
    try {
      for (let attempt = 0; attempt < 30; attempt++) {
        const r = await O.api('POST', `/v1/events/${enc(eventId)}/requests`, { body: ask, idempotencyKey: key });
        if (r.ok) {
          const d = r.data;
          say('join-message', '', '');
          state.selected.clear();
          for (const entry of state.seats.values()) paintSeat(entry);
          adoptRequest(
            {
              request_id: d.request_id,
              event_id: eventId,
              state: d.queue_number == null ? 'prequeue' : 'queued',
              queue_number: d.queue_number == null ? undefined : d.queue_number,
              position: d.position == null ? undefined : d.position,
            },
            ask
          );
          return;
        }
        if (r.status === 429) {
          await countdownMessage('join-message', 'Too many requests', Math.max(1, r.retryAfter != null ? r.retryAfter : 2));
          continue;
        }
        if (O.retryable(r)) {
          const wait = r.retryAfter != null ? Math.max(1, r.retryAfter) : Math.min(BACKOFF_MAX_S, 2 ** attempt);
          await countdownMessage('join-message', O.message(r.error).replace(/\.$/, ''), wait);
          continue;
        }
        const code = r.error.code;
        if (code === 'already_in_line' && r.error.request_id) {
          say('join-message', O.message(r.error), 'info');
          const existing = await O.api('GET', `/v1/requests/${enc(r.error.request_id)}`);
          if (existing.ok) adoptRequest(existing.data);
          return;
        }
        if (code === 'sold_out' || code === 'sale_closed') {
          state.sale = Object.assign({}, state.sale, { state: code === 'sold_out' ? 'sold_out' : 'closed' });
        }
        let text = O.message(r.error);
        if (code === 'over_limit' && state.event) {
          text = `That is more than the ${state.event.max_per_fan} tickets one fan may buy for this event` +
            (r.error.message ? ` (${r.error.message}).` : '.');
        }
        say('join-message', text, 'error');
        render();
        return;
      }
      say('join-message', 'The line is very busy; please try again in a moment.', 'error');
    } finally {
      joining = false;
      button.disabled = false;
    }
  }

  async function leave(kind) {
    const req = state.request;
    if (!req) return;
    const question =
      kind === 'release'
        ? 'Release your seats? They go back on sale at once and you leave the line.'
        : 'Leave the line? You lose your place.';
    if (!window.confirm(question)) return;
    const msgId = kind === 'release' ? 'checkout-message' : 'line-message';
    say(msgId, kind === 'release' ? 'Releasing your seats…' : 'Leaving the line…', 'info');
    for (let attempt = 0; attempt < 5; attempt++) {
      const r = await O.api('DELETE', `/v1/requests/${enc(req.request_id)}`);
      if (r.ok) {
        say(msgId, '', '');
        adoptRequest(r.data);
        return;
      }
      if (!O.retryable(r)) {
        say(msgId, O.message(r.error), 'error');
        return;
      }
      await O.sleep((r.retryAfter != null ? Math.max(1, r.retryAfter) : 2 ** attempt) * 1000);
    }
    say(msgId, 'That did not go through; please try again.', 'error');
  }

  /* ------------------------------------------------------------------ */
  /* checkout                                                           */
  /* ------------------------------------------------------------------ */

  function luhn(digits) {
    let sum = 0;
    let dbl = false;
    for (let i = digits.length - 1; i >= 0; i--) {
      let d = digits.charCodeAt(i) - 48;
      if (dbl) {
        d *= 2;
        if (d > 9) d -= 9;
      }
      sum += d;
      dbl = !dbl;
    }
    return sum % 10 === 0;
  }

  function fieldError(inputId, text) {
    const input = $(inputId);
    say(`${inputId}-error`, text || '', text ? 'error' : '');
    if (text) input.setAttribute('aria-invalid', 'true');
    else input.removeAttribute('aria-invalid');
  }

  function readCard() {
    const number = $('card-number').value.replace(/[\s-]/g, '');
    let expiry = $('card-expiry').value.replace(/\s/g, '');
    if (/^\d{4}$/.test(expiry)) expiry = `${expiry.slice(0, 2)}/${expiry.slice(2)}`;
    if (/^\d\/\d{2}$/.test(expiry)) expiry = `0${expiry}`;
    const cvc = $('card-cvc').value.trim();
    const errors = {};
    if (!/^\d{12,19}$/.test(number) || !luhn(number)) errors['card-number'] = 'Enter a valid card number (12 to 19 digits).';
    const m = expiry.match(/^(0[1-9]|1[0-2])\/(\d{2})$/);
    if (!m) errors['card-expiry'] = 'Enter the expiry as MM/YY, e.g. 12/30.';
    else {
      const end = new Date(2000 + Number(m[2]), Number(m[1]), 1); // first day after the expiry month
      if (end.getTime() <= Date.now()) errors['card-expiry'] = 'That card has expired.';
    }
    if (!/^\d{3,4}$/.test(cvc)) errors['card-cvc'] = 'The security code is 3 or 4 digits.';
    return { body: { card_number: number, expiry, cvc }, errors };
  }

  let paying = false;
  async function pay(e) {
    e.preventDefault();
    const req = state.request;
    if (paying || !req || req.state !== 'held') return;
    const { body, errors } = readCard();
    for (const id of ['card-number', 'card-expiry', 'card-cvc']) fieldError(id, errors[id]);
    const invalid = Object.keys(errors);
    if (invalid.length) {
      say('checkout-message', 'Please correct the card details.', 'error');
      $(invalid[0]).focus();
      return;
    }
    paying = true;
    renderHold();
    const key = O.uuid(); // this attempt; retries of it reuse the key and charge once
    say('checkout-message', 'Paying…', 'info');
    try {
      for (let attempt = 0; attempt < 20; attempt++) {
        const r = await O.api('POST', `/v1/requests/${enc(req.request_id)}/checkout`, { body, idempotencyKey: key });
        if (r.ok) {
          onOrder(r.data);
          return;
        }
        if (O.retryable(r)) {
          const wait = r.retryAfter != null ? Math.max(1, r.retryAfter) : Math.min(5, 1 + attempt);
          const prefix = r.status === 429 ? 'Too many requests' : O.message(r.error).replace(/\.$/, '');
          await countdownMessage('checkout-message', prefix, wait);
          continue;
        }
        const code = r.error.code;
        if (code === 'invalid_card_number') fieldError('card-number', O.message(r.error));
        else if (code === 'invalid_expiry' || code === 'card_expired') fieldError('card-expiry', O.message(r.error));
        else if (code === 'invalid_cvc') fieldError('card-cvc', O.message(r.error));
        say('checkout-message', O.message(r.error), 'error');
        if (code === 'already_paid') {
          findOrder(req.request_id);
          adoptRequest(Object.assign({}, req, { state: 'confirmed' }));
        } else if (code === 'payment_in_flight') {
          adoptRequest(Object.assign({}, req, { state: 'paying' }));
        } else if (code === 'hold_ended' || code === 'request_not_held' || code === 'request_not_found') {
          refreshRequest();
        }
        return;
      }
      say('checkout-message', 'The payment service is busy; please try again.', 'error');
    } finally {
      paying = false;
      renderHold();
    }
  }

  function onOrder(order) {
    state.order = order;
    if (order.request_id) O.save(`onsale.order.${order.request_id}`, order.order_id);
    const req = state.request;
    switch (order.state) {
      case 'paid':
        say('checkout-message', '', '');
        if (req && req.request_id === order.request_id) adoptRequest(Object.assign({}, req, { state: 'confirmed' }));
        renderConfirmation();
        break;
      case 'declined':
        say('checkout-message', O.message({ code: 'card_declined' }), 'error');
        if (req && req.state === 'paying') adoptRequest(Object.assign({}, req, { state: 'held' }));
        setTimeout(() => {
          const n = $('card-number');
          n.focus();
          n.select();
        }, 0);
        break;
      case 'pending':
        say('checkout-message', 'Waiting for your bank…', 'info');
        if (req && req.state === 'held') adoptRequest(Object.assign({}, req, { state: 'paying' }));
        watchOrder(order.order_id);
        break;
      case 'refunded':
        say('checkout-message', 'The payment arrived after your hold had ended, so it was refunded.', 'error');
        refreshRequest();
        break;
      default:
        say('checkout-message', 'The payment did not go through.', 'error');
        refreshRequest();
    }
  }

  /* A pending payment's outcome comes as a `request` message; reading the order too
   * covers a socket that is down at that moment. */
  let watching = null;
  async function watchOrder(orderId) {
    if (watching === orderId) return;
    watching = orderId;
    const until = Date.now() + 5 * 60 * 1000;
    while (watching === orderId && Date.now() < until) {
      await O.sleep(2500);
      if (!state.request || !['held', 'paying'].includes(state.request.state)) break;
      const r = await O.api('GET', `/v1/orders/${enc(orderId)}`);
      if (r.ok && r.data.state !== 'pending') {
        onOrder(r.data);
        break;
      }
    }
    if (watching === orderId) watching = null;
  }

  async function findOrder(requestId) {
    const known = O.load(`onsale.order.${requestId}`);
    if (known && (!state.order || state.order.order_id !== known)) {
      const r = await O.api('GET', `/v1/orders/${enc(known)}`);
      if (r.ok) {
        state.order = r.data;
        renderConfirmation();
        return;
      }
    }
    if (state.order && state.order.request_id === requestId && state.order.state === 'paid') return;
    const all = await O.api('GET', '/v1/orders');
    if (all.ok && all.data && Array.isArray(all.data.orders)) {
      const mine = all.data.orders.find((o) => o.request_id === requestId && o.state === 'paid');
      if (mine) {
        state.order = mine;
        O.save(`onsale.order.${requestId}`, mine.order_id);
        renderConfirmation();
      }
    }
  }

  async function refreshRequest() {
    const req = state.request;
    if (!req) return;
    const r = await O.api('GET', `/v1/requests/${enc(req.request_id)}`);
    if (r.ok) adoptRequest(r.data);
    else if (r.status === 404) forgetRequest();
  }

  /* ------------------------------------------------------------------ */
  /* live updates: the socket, and polling when it cannot be held        */
  /* ------------------------------------------------------------------ */

  const live = {
    ws: null,
    attempt: 0,
    timer: null,
    pollTimer: null,
    anonTimer: null,
    awaitingSeatSnapshot: false,
    connectedOnce: false,
    started: false,

    requestId() {
      return isLive(state.request) ? state.request.request_id : null;
    },

    start() {
      this.started = true;
      this.stop();
      if (!O.token()) {
        this.setStatus('off');
        this.startAnonymous();
        return;
      }
      this.stopAnonymous();
      this.connect();
    },

    stop() {
      clearTimeout(this.timer);
      this.timer = null;
      this.stopPolling();
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
    },

    /** The request to follow changed: reconnect at once with its id. */
    follow() {
      if (!this.started || !O.token()) return;
      if (this.ws && this.ws.followed === this.requestId()) return;
      this.attempt = 0;
      this.start();
    },

    connect() {
      clearTimeout(this.timer);
      this.timer = null;
      const token = O.token();
      if (!token) return;
      if (!('WebSocket' in window)) {
        this.startPolling();
        return;
      }
      const proto = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
      const params = new URLSearchParams({ access_token: token });
      const rid = this.requestId();
      if (rid) params.set('request_id', rid);
      const url = `${proto}//${window.location.host}/v1/events/${enc(eventId)}/live?${params}`;
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
          this.stopPolling();
          this.setStatus('live');
        }
        let msg;
        try {
          msg = JSON.parse(ev.data);
        } catch (_) {
          return;
        }
        handle(msg);
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
      if (!O.token()) {
        this.setStatus('off');
        return;
      }
      this.attempt++;
      /* the socket cannot be held: poll the same facts meanwhile */
      if (!hadMessages || this.attempt >= 2) this.startPolling();
      if (!hadMessages) diagnose();
      const base = Math.min(BACKOFF_MAX_S, 2 ** (this.attempt - 1));
      const jitter = Math.random() * Math.min(1, base / 2) * 1000;
      this.setStatus(this.pollTimer ? 'polling' : 'reconnecting');
      this.timer = setTimeout(() => this.connect(), base * 1000 + jitter);
    },

    reconnectNow() {
      if (!O.token() || this.ws) return;
      this.attempt = 0;
      this.connect();
    },

    startPolling() {
      if (this.pollTimer) return;
      const tick = async () => {
        await pollSnapshot();
        if (this.pollTimer) this.pollTimer = setTimeout(tick, POLL_MS);
      };
      this.pollTimer = setTimeout(tick, 0);
    },

    stopPolling() {
      clearTimeout(this.pollTimer);
      this.pollTimer = null;
    },

    startAnonymous() {
      if (this.anonTimer) return;
      const tick = async () => {
        const r = await O.api('GET', `/v1/events/${enc(eventId)}/lottery`);
        if (r.ok && r.data && r.data.state) onSale({ state: r.data.state });
        await loadSeats(0);
        if (this.anonTimer) this.anonTimer = setTimeout(tick, ANON_POLL_MS);
      };
      this.anonTimer = setTimeout(tick, 0);
    },

    stopAnonymous() {
      clearTimeout(this.anonTimer);
      this.anonTimer = null;
    },

    setStatus(s) {
      const el = $('connection');
      el.dataset.state = s;
      const text = {
        off: '',
        connecting: 'Connecting to live updates…',
        live: 'Live',
        reconnecting: 'Connection lost — reconnecting…',
        polling: `Connection lost — reconnecting… Meanwhile the page checks for news every ${POLL_MS / 1000} s.`,
      }[s];
      setText(el, text || '');
      show(el, !!text);
    },
  };

  /** A socket that never opened: an expired token, or a request that is not ours. */
  async function diagnose() {
    const me = await O.api('GET', '/v1/auth/me');
    if (me.status === 401) return; // the api client signed the fan out
    if (state.request && isLive(state.request)) refreshRequest();
  }

  async function pollSnapshot() {
    const rid = live.requestId();
    const q = rid ? `?request_id=${enc(rid)}` : '';
    const r = await O.api('GET', `/v1/events/${enc(eventId)}/live/snapshot${q}`);
    if (r.ok && r.data) {
      const s = r.data;
      if (s.sale) onSale(s.sale);
      if (s.request) adoptRequest(s.request);
      if (s.position) notePosition(s.position);
      if (s.seats_version != null && s.seats_version !== state.seatsVersion) loadSeats(s.seats_version);
      render();
      return;
    }
    if (r.status === 404 && r.error.code === 'request_not_found') {
      forgetRequest();
      return;
    }
    /* no snapshot to be had: read the same facts one by one */
    const lottery = await O.api('GET', `/v1/events/${enc(eventId)}/lottery`);
    if (lottery.ok && lottery.data && lottery.data.state) onSale({ state: lottery.data.state });
    if (state.request) await refreshRequest();
    await loadSeats(0);
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
        onSeats(msg);
        break;
      case 'error':
        pageError(msg.message || O.message(msg));
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

  function onSeats(m) {
    const version = Number(m.version);
    if (live.awaitingSeatSnapshot || m.reset) {
      live.awaitingSeatSnapshot = false;
      if (m.reset || !state.seatsBuilt || version !== state.seatsVersion) loadSeats(version);
      return;
    }
    const delta = { version, changes: m.changes || [] };
    if (seatsLoading) pendingDeltas.push(delta);
    else applyDelta(delta);
  }

  function notePosition(p, fromRequest) {
    const req = state.request;
    if (req && p.request_id && p.request_id !== req.request_id) return;
    if (p.position == null) return;
    /* the socket's position messages are the freshest; a request's own copy may lag */
    if (fromRequest && state.position && state.position.request_id === p.request_id && state.position.position < p.position) return;
    if (req && req.state === 'prequeue') {
      req.state = 'queued';
      announceTransition('prequeue', 'queued');
    }
    if (req && !fromRequest) {
      req.position = p.position;
      if (p.queue_number != null) req.queue_number = p.queue_number;
    }
    state.position = Object.assign({}, state.position, p);
    if (fromRequest && p.eta_seconds == null) delete state.position.eta_seconds;
    const key = req ? `onsale.first.${req.request_id}` : null;
    if (key) {
      const first = O.load(key);
      if (first == null || p.position > first) O.save(key, p.position);
    }
    renderLine();
  }

  /* ------------------------------------------------------------------ */
  /* rendering                                                          */
  /* ------------------------------------------------------------------ */

  const SALE_TEXT = {
    scheduled: 'The sale has not started yet. You can join the pre-queue now.',
    drawing: 'The sale is opening: places in the pre-queue are being drawn…',
    open: 'On sale now',
    paused: 'The sale is paused. You keep your place in line.',
    sold_out: 'Sold out',
    closed: 'The sale is closed.',
  };

  /** The sale's state, or, before the server said, what the event's time implies. */
  function shownSaleState() {
    const s = saleState();
    if (s) return s;
    const at = onsaleAt();
    return at && at > O.now() ? 'scheduled' : '';
  }

  function saleText() {
    const s = shownSaleState();
    const at = onsaleAt();
    if (s === 'scheduled' && at != null && at <= O.now()) return 'The sale is opening…';
    if (s === 'paused' && !isLive(state.request)) return 'The sale is paused. The line keeps its order.';
    if (s === 'sold_out' && state.request && state.request.state === 'confirmed') return 'Sold out. You got your seats.';
    return SALE_TEXT[s] || '';
  }

  function renderSale() {
    const s = saleState();
    const el = $('sale-state');
    const at = onsaleAt();
    const guessed = shownSaleState();
    el.dataset.state = s || '';
    setText(el, saleText());
    show($('countdown-box'), guessed === 'scheduled' && at != null);
    setText($('onsale-at'), at ? `On sale ${O.fmtDateTime(new Date(at).toISOString())}` : '');
    show($('sold-out-note'), s === 'sold_out');
    tick();
  }

  function render() {
    const signedIn = !!O.token();
    const req = state.request;
    const st = req ? req.state : null;
    const s = saleState();
    const joinable = !s || JOINABLE.has(s);

    show($('auth'), !signedIn && !!state.event);
    show($('join'), signedIn && !!state.event && !req && joinable);
    show($('line'), signedIn && (st === 'prequeue' || st === 'queued'));
    show($('hold'), signedIn && (st === 'held' || st === 'paying'));
    show($('confirmation'), signedIn && st === 'confirmed');
    show($('ended'), signedIn && !!req && TERMINAL.has(st) && st !== 'confirmed');
    $('join-button').disabled = joining;

    if (st === 'prequeue' || st === 'queued') renderLine();
    if (st === 'held' || st === 'paying') renderHold();
    if (st === 'confirmed') renderConfirmation();
    if (req && TERMINAL.has(st) && st !== 'confirmed') renderEnded();
    renderSaleText();
  }

  function renderSaleText() {
    setText($('sale-state'), saleText());
  }

  function renderLine() {
    const req = state.request;
    if (!req) return;
    const pre = req.state === 'prequeue';
    setText($('line-title'), pre ? 'You are in the pre-queue' : 'You are in line');
    show($('prequeue-note'), pre);
    const p = state.position;
    const hasPosition = !pre && p && p.position != null;
    show($('line-stats'), !!hasPosition);
    setText($('asked-for'), describeAsk(state.ask));
    if (!hasPosition) return;
    const posEl = $('position');
    setText(posEl, O.fmtNumber(p.position));
    posEl.dataset.position = String(p.position);
    const paused = saleState() === 'paused';
    let eta = '–';
    if (paused) eta = 'paused';
    else if (p.eta_seconds != null) eta = p.position === 0 ? 'any moment now' : O.fmtWait(p.eta_seconds);
    setText($('eta'), eta);
    const first = Math.max(O.load(`onsale.first.${req.request_id}`) || 0, p.position);
    const bar = $('progress');
    const max = Math.max(1, first);
    bar.max = max;
    bar.value = first === 0 ? 1 : first - p.position;
    bar.setAttribute('aria-valuetext', first ? `${O.fmtNumber(first - p.position)} of ${O.fmtNumber(first)} fans ahead of you served` : 'at the front');
    let odds;
    const left = p.seats_left;
    const leftText = left == null ? '' : left === 0
      ? '; no seats left right now (holds that run out come back)'
      : `; ${O.plural(left, 'seat', 'seats')} left`;
    if (p.position === 0) odds = `You are at the front of the line${leftText}.`;
    else odds = `about ${O.plural(p.position, 'fan', 'fans')} ahead of you${leftText}`;
    setText($('odds'), odds);
    document.title = `${O.fmtNumber(p.position)} ahead · ${state.event ? state.event.name : 'onsale'}`;
  }

  function chips(listId, ids) {
    const ul = $(listId);
    const key = ids.join(',');
    if (ul.dataset.seats === key) return;
    ul.dataset.seats = key;
    ul.replaceChildren(
      ...ids.map((id) => {
        const li = document.createElement('li');
        li.className = 'chip';
        li.dataset.seatId = id;
        const p = priceOf(id);
        li.textContent = seatLabel(id) + (p != null ? ` · ${O.fmtMoney(p)}` : '');
        return li;
      })
    );
  }

  function renderHold() {
    const req = state.request;
    if (!req) return;
    const ids = req.seats || [];
    const hold = $('hold');
    hold.dataset.seats = ids.join(',');
    chips('hold-seats', ids);
    const isPaying = req.state === 'paying';
    const left = holdLeft();
    const expired = left === 0;
    setText($('hold-countdown'), left == null ? '–:––' : O.fmtClock(left));
    const busy = paying || isPaying || expired;
    for (const id of ['card-number', 'card-expiry', 'card-cvc']) $(id).readOnly = busy;
    const payButton = $('pay');
    payButton.disabled = busy;
    $('release').disabled = busy;
    const total = totalOf(ids);
    setText(payButton, isPaying || paying ? 'Paying…' : total != null ? `Pay ${O.fmtMoney(total)}` : 'Pay');
    if (isPaying && !paying) {
      const m = $('checkout-message');
      if (!m.textContent || m.dataset.kind !== 'info') say('checkout-message', 'Waiting for your bank…', 'info');
    }
  }

  function holdLeft() {
    const req = state.request;
    if (!req || !req.hold_expires_at) return null;
    const t = Date.parse(req.hold_expires_at);
    return Number.isNaN(t) ? null : Math.max(0, t - O.now());
  }

  function renderConfirmation() {
    const req = state.request;
    if (!req) return;
    const ids = req.seats && req.seats.length ? req.seats : (state.order && state.order.seats) || [];
    $('confirmation').dataset.seats = ids.join(',');
    chips('confirmation-seats', ids);
    setText($('confirmation-email'), O.email() || 'your email address');
    const order = state.order && state.order.request_id === req.request_id ? state.order : null;
    setText($('order-id'), order ? order.order_id : '–');
    setText($('order-amount'), order && order.amount_cents != null ? `, ${O.fmtMoney(order.amount_cents, order.currency)} paid.` : '');
    if (!order) findOrder(req.request_id);
  }

  const REASONS = {
    sold_out: 'it sold out before your turn came',
    seat_unavailable: 'a seat you picked was taken before your turn came',
    no_adjacent_seats: 'there were not enough seats together for your request',
    over_limit: 'it asked for more tickets than one fan may buy',
    conflict: 'it conflicted with another request of yours',
    sale_closed: 'the sale closed before your turn came',
    hold_ended: 'the hold ended',
  };

  function renderEnded() {
    const req = state.request;
    const s = saleState();
    const texts = {
      expired: ['Your hold ran out', 'Your hold ran out; the seats went back on sale.'],
      released: ['You released your seats', 'Your seats went back on sale, and you left the line.'],
      cancelled: ['Your request was cancelled', 'You left the line.'],
      rejected: [
        'We could not get you seats',
        `Your request was not served: ${REASONS[req.reason] || (req.reason ? req.reason.replace(/_/g, ' ') : 'no reason was given')}.`,
      ],
    }[req.state] || ['Your request has ended', ''];
    setText($('ended-title'), texts[0]);
    const open = !s || JOINABLE.has(s);
    setText($('ended-message'), texts[1] + (open ? ' The sale is still on: you can join the line again.' : ''));
    $('ended').dataset.state = req.state;
    show($('join-again'), open);
  }

  /* ----- the clock: countdowns ----- */

  function tick() {
    const at = onsaleAt();
    const box = $('countdown-box');
    if (at != null && !box.hidden) {
      const left = at - O.now();
      setText($('countdown'), O.fmtClock(left));
      $('countdown').dataset.ms = String(Math.max(0, left));
      if (left <= 0) renderSaleText();
    }
    const req = state.request;
    if (req && (req.state === 'held' || req.state === 'paying')) {
      const left = holdLeft();
      const el = $('hold-countdown');
      setText(el, left == null ? '–:––' : O.fmtClock(left));
      el.dataset.urgent = left != null && left < 60000 ? 'true' : 'false';
      if (left === 0 && req.state === 'held' && !paying) {
        const m = $('checkout-message');
        if (m.dataset.kind !== 'ended') say('checkout-message', 'Your hold has run out.', 'ended');
        renderHold();
      }
    }
  }

  /* ------------------------------------------------------------------ */
  /* start                                                              */
  /* ------------------------------------------------------------------ */

  async function restoreRequest() {
    const mem = remembered();
    if (!mem) return;
    const r = await O.api('GET', `/v1/requests/${enc(mem.request_id)}`);
    if (r.ok) {
      state.ask = mem.ask;
      adoptRequest(r.data, mem.ask);
    } else if (r.status === 404 || r.status === 403) {
      O.save(REQ_KEY, null);
    }
  }

  async function onAccount(next) {
    live.stop();
    live.started = false;
    state.request = null;
    state.position = null;
    state.order = null;
    state.ended = false;
    markMine();
    render();
    if (next) {
      await restoreRequest();
      live.start();
    } else {
      live.start();
    }
  }

  async function main() {
    O.wireAuth();
    wireSeatMap();
    $('join-form').addEventListener('submit', join);
    for (const r of document.querySelectorAll('input[name="mode"]')) r.addEventListener('change', renderJoinMode);
    $('leave').addEventListener('click', () => leave('leave'));
    $('release').addEventListener('click', () => leave('release'));
    $('checkout-form').addEventListener('submit', pay);
    $('join-again').addEventListener('click', () => {
      forgetRequest();
      const first = $('mode-best').checked ? $('best-quantity') : $('mode-pick');
      setTimeout(() => first.focus(), 0);
    });
    $('card-expiry').addEventListener('input', (e) => {
      const v = e.target.value;
      if (/^\d{2}$/.test(v) && e.inputType && e.inputType.startsWith('insert')) e.target.value = `${v}/`;
    });
    O.onAccountChange((next) => onAccount(next));
    window.addEventListener('online', () => live.reconnectNow());
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') live.reconnectNow();
    });
    setInterval(tick, 250);

    if (!eventId) {
      setText($('event-name'), 'No event given');
      return;
    }
    renderSale();
    render();
    const found = await loadEvent();
    if (!found) return;
    renderSale();
    render();
    await loadSeats(0);
    renderJoinMode();
    if (O.token()) await restoreRequest();
    render();
    live.start();
  }

  /* for the browser test and for debugging: what the page believes */
  window.onsaleState = state;

  main().catch((e) => {
    console.error(e);
    pageError('Something went wrong on this page. Reload it to try again.');
  });
})();
