// What the browser scenarios share: progress lines, failures, the run itself
// (start, deadline, exit code, the failure screenshots' names), the ticket
// scenarios' start (an opened sale and the accounts they need), the browser and its
// phone and desktop contexts, the pages watched for console errors, waiting in a
// page, screenshots, signing up and in through a page (a fans' page, or the
// dashboard's own box), reading the QR codes a page shows, seats as the pages
// write them, and the REST API as the admin, background fans and door staff use it
// (buying seats, scanning tickets). BASE_URL, SCREENSHOTS, CHROMIUM, ADMIN_EMAIL,
// ADMIN_PASSWORD, TIMEOUT_SECONDS and HEADFUL come from the environment.

import { chromium } from 'playwright-core';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

export const BASE_URL = (process.env.BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
export const SCREENSHOTS = path.resolve(process.env.SCREENSHOTS || path.join(os.tmpdir(), 'onsale-browser-screenshots'));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const ADMIN_EMAIL = process.env.ADMIN_EMAIL;
export const ADMIN_PASSWORD = process.env.ADMIN_PASSWORD;
export const TIMEOUT_S = Number(process.env.TIMEOUT_SECONDS || 150);

const RUN = crypto.randomBytes(4).toString('hex');
const T0 = Date.now();

// ---------------------------------------------------------------------------
// reporting

function log(line) {
  const s = ((Date.now() - T0) / 1000).toFixed(1).padStart(6);
  console.log(`[${s}s] ${line}`);
}
function step(name) {
  log(`== ${name}`);
}

class Failure extends Error {}
function fail(reason) {
  throw new Failure(reason);
}
function check(cond, reason) {
  if (!cond) fail(reason);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const pages = []; // {name, page, console: [], errors: []}

function watch(name, page) {
  const w = { name, page, console: [], errors: [], csp: [] };
  page.on('console', (msg) => {
    if (msg.type() === 'error' || msg.type() === 'warning') {
      w.console.push(`${msg.type()}: ${msg.text()}`);
    }
    /* The pages are served under a strict Content-Security-Policy: anything it
     * blocks fails the scenario, even when the step it broke went unnoticed. */
    if (/Content Security Policy/i.test(msg.text())) w.csp.push(msg.text());
  });
  page.on('pageerror', (e) => w.errors.push(`uncaught: ${e.message}`));
  page.on('requestfailed', (r) => {
    const f = r.failure();
    /* a socket closed on purpose, or a fetch aborted by a navigation, is no error */
    if (f && !/ERR_ABORTED/.test(f.errorText)) w.console.push(`request failed: ${r.method()} ${r.url()} ${f.errorText}`);
  });
  pages.push(w);
  return w;
}

/** A screenshot of the whole page, or with `fullPage: false` of what the viewport shows (a modal dialog over it). */
async function shot(page, file, { fullPage = true } = {}) {
  const to = path.join(SCREENSHOTS, file);
  await page.screenshot({ path: to, fullPage });
  log(`   screenshot ${to}`);
}

/** Every watched page's uncaught errors and console errors, the last 40 of each. */
function report() {
  for (const w of pages) {
    const lines = [...w.errors, ...w.console];
    console.log(`--- ${w.name}: ${lines.length ? `${lines.length} console errors` : 'no console errors'}`);
    for (const l of lines.slice(-40)) console.log(`    ${l}`);
  }
}

/** The failure screenshot of a watched page: "fan (phone)" leaves 99-failure-fan-phone-.png. */
const failureFile = (name) => `99-failure-${name.replace(/[^\w]+/g, '-')}.png`.replace(/-+/g, '-');

/** A screenshot of every watched page after a failure, named `fileOf(page's name)`. */
async function failureShots(fileOf) {
  for (const w of pages) {
    await w.page.screenshot({ path: path.join(SCREENSHOTS, fileOf(w.name)), fullPage: true, timeout: 5000 }).catch(() => {});
  }
}

// ---------------------------------------------------------------------------
// the run

/**
 * Runs `main` within TIMEOUT_SECONDS and exits: 0 when every step held, 1 otherwise,
 * with the pages' console errors (also on success when `reportOnPass`) and, on a
 * failure, `failureShots(failureFile)`.
 */
function run(main, { failureFile, reportOnPass = false }) {
  const deadline = setTimeout(async () => {
    console.log(`FAILED: the scenario did not finish within ${TIMEOUT_S} s`);
    await failureShots(failureFile);
    report();
    process.exit(1);
  }, TIMEOUT_S * 1000);

  main()
    .then(() => {
      clearTimeout(deadline);
      const blocked = pages.flatMap((w) => w.csp.map((t) => `${w.name}: ${t}`));
      if (blocked.length) {
        console.log(`FAILED: the Content-Security-Policy blocked ${blocked.length} loads:`);
        for (const b of blocked) console.log(`    ${b}`);
        process.exit(1);
      }
      if (reportOnPass) report();
      log(`PASSED in ${((Date.now() - T0) / 1000).toFixed(1)} s`);
      process.exit(0);
    })
    .catch(async (e) => {
      clearTimeout(deadline);
      console.log(`FAILED: ${e instanceof Failure ? e.message : e.stack || e}`);
      report();
      process.exit(1);
    });
}

/** What every scenario does first: the admin's credentials are set, and the gateway answers. */
async function begin() {
  check(ADMIN_EMAIL && ADMIN_PASSWORD, 'set ADMIN_EMAIL and ADMIN_PASSWORD (the bootstrap admin)');
  await fs.mkdir(SCREENSHOTS, { recursive: true });
  log(`run ${RUN} against ${BASE_URL}; screenshots in ${SCREENSHOTS}`);

  step('the gateway answers');
  {
    const until = Date.now() + 20000;
    for (;;) {
      const r = await fetch(`${BASE_URL}/healthz`).catch(() => null);
      if (r && r.ok) break;
      check(Date.now() < until, `${BASE_URL}/healthz did not answer 200 within 20 s`);
      await sleep(250);
    }
  }
}

/**
 * What the ticket scenarios do first: `begin()`, the admin signs in, one account
 * registers per prefix of `accounts` (`who` names them in the step's line), and the
 * admin creates a sale (`createSale`, on sale in an hour) and opens it at once.
 * Answers {admin (a token), accounts (as `registerFan` answers them, in order),
 * eventId, eventName}.
 */
async function beginOpenSale({ venueName, eventName, who, accounts }) {
  await begin();

  step(`the admin signs in; ${who} register (REST)`);
  const admin = await login(ADMIN_EMAIL, ADMIN_PASSWORD);
  const registered = [];
  for (const prefix of accounts) registered.push(await registerFan(1, prefix));

  step('the admin creates a venue and an event, and opens its sale now (REST)');
  const sale = await createSale(admin, { venueName, eventName, onsaleDelayS: 3600 });
  await openSale(admin, sale.eventId);
  return { admin, accounts: registered, eventId: sale.eventId, eventName: sale.eventName };
}

// ---------------------------------------------------------------------------
// the browser

/** Starts Debian's chromium (headless unless HEADFUL), with `extraArgs` beside the usual ones. */
function launch(extraArgs = []) {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: !process.env.HEADFUL,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', ...extraArgs].filter(
      (a) => !(process.env.HEADFUL && a === '--headless')
    ),
  });
}

/**
 * Starts the browser (`launch`) and runs `scenario(browser)`; on a failure,
 * `failureShots(failureFile)` before the error goes on.
 */
async function withBrowser(scenario, failureFile) {
  step('the browser starts');
  const browser = await launch();
  try {
    await scenario(browser);
  } catch (e) {
    await failureShots(failureFile);
    throw e;
  } finally {
    await browser.close().catch(() => {});
  }
}

/** A phone: 390x844 at 2x, touch. */
function phoneContext(browser) {
  return browser.newContext({
    viewport: { width: 390, height: 844 },
    deviceScaleFactor: 2,
    isMobile: true,
    hasTouch: true,
    locale: 'en-US',
    timezoneId: 'UTC',
  });
}

/** A desktop: 1280x900. */
function desktopContext(browser) {
  return browser.newContext({
    viewport: { width: 1280, height: 900 },
    locale: 'en-US',
    timezoneId: 'UTC',
  });
}

// ---------------------------------------------------------------------------
// waiting in the browser, never by fixed sleeps

async function waitFor(page, what, fn, arg, timeoutMs = 20000) {
  try {
    return await page.waitForFunction(fn, arg, { timeout: timeoutMs, polling: 100 });
  } catch (e) {
    fail(`timed out after ${timeoutMs / 1000} s waiting until ${what}`);
  }
}

async function text(page, selector) {
  return (await page.locator(selector).first().textContent({ timeout: 5000 }))?.trim() ?? '';
}

async function visible(page, selector) {
  return page.locator(selector).first().isVisible();
}

/** Registers through a fans' page's sign-in box (#auth); answers the email. */
async function registerInPage(page, who) {
  const email = `${who}-${RUN}@example.com`;
  const password = `pw-${RUN}-${who}-browser`;
  await waitFor(page, `${who}'s page shows the sign-in box`, () => {
    const box = document.getElementById('auth');
    return box && !box.hidden;
  });
  await page.fill('#auth-email', email);
  await page.fill('#auth-password', password);
  await page.click('#register');
  await waitFor(
    page,
    `${who} is shown as signed in (#signed-in-as = ${email})`,
    (mail) => {
      const bar = document.getElementById('account');
      const msg = document.getElementById('auth-message');
      if (msg && msg.dataset.kind === 'error' && msg.textContent) return true; // fail fast below
      return bar && !bar.hidden && document.getElementById('signed-in-as').textContent === mail;
    },
    email,
    30000
  );
  const error = await page.evaluate(() => {
    const msg = document.getElementById('auth-message');
    return msg && msg.dataset.kind === 'error' ? msg.textContent : '';
  });
  check(!error, `${who} could not register through the page: ${error}`);
  return email;
}

/** Signs in through a fans' page's sign-in box (#auth) with an existing account. */
async function signInInPage(page, email, password) {
  await waitFor(page, `the page shows the sign-in box (to sign in as ${email})`, () => {
    const box = document.getElementById('auth');
    return box && !box.hidden;
  });
  await page.fill('#auth-email', email);
  await page.fill('#auth-password', password);
  await page.click('#sign-in');
  await waitFor(
    page,
    `the page shows ${email} as signed in`,
    (mail) => {
      const msg = document.getElementById('auth-message');
      if (msg && msg.dataset.kind === 'error' && msg.textContent) return true; // fail fast below
      const bar = document.getElementById('account');
      return bar && !bar.hidden && document.getElementById('signed-in-as').textContent === mail;
    },
    email,
    30000
  );
  const error = await page.evaluate(() => {
    const msg = document.getElementById('auth-message');
    return msg && msg.dataset.kind === 'error' ? msg.textContent : '';
  });
  check(!error, `${email} could not sign in through the page: ${error}`);
}

/** Signs in through the dashboard's own box (#ops-signin). */
async function opsSignIn(page, email, password) {
  await waitFor(page, 'the dashboard shows its sign-in box (#ops-signin)', () => {
    const form = document.getElementById('ops-signin');
    return form && form.offsetParent !== null;
  });
  await page.fill('#ops-email', email);
  await page.fill('#ops-password', password);
  await page.click('#ops-signin-button');
}

/**
 * The QR codes the ticket entries under `scope` show (li.ticket > img.qr), read in
 * the page with the vendored jsQR (loaded into the page if it has none): each
 * image drawn on white onto a 600x600 canvas and decoded. Answers
 * [{ticket_id, seat_id, version, text}], `text` null when nothing could be read.
 */
async function readQrCodes(page, scope) {
  if (!(await page.evaluate(() => typeof window.jsQR === 'function'))) {
    await page.addScriptTag({ url: `${BASE_URL}/static/vendor/jsQR.js` });
  }
  return page.evaluate(async (sel) => {
    const out = [];
    for (const li of document.querySelectorAll(`${sel} li.ticket`)) {
      const img = li.querySelector('img.qr');
      const entry = { ticket_id: li.dataset.ticketId, seat_id: li.dataset.seatId, version: Number(li.dataset.version), text: null };
      out.push(entry);
      if (!img || img.dataset.loaded !== 'true') continue;
      if (img.decode) await img.decode().catch(() => {});
      const size = 600;
      const canvas = document.createElement('canvas');
      canvas.width = size;
      canvas.height = size;
      const ctx = canvas.getContext('2d', { willReadFrequently: true });
      ctx.fillStyle = '#fff';
      ctx.fillRect(0, 0, size, size);
      ctx.drawImage(img, 0, 0, size, size);
      const data = ctx.getImageData(0, 0, size, size);
      const found = window.jsQR(data.data, size, size);
      entry.text = found ? found.data : null;
    }
    return out;
  }, scope);
}

// ---------------------------------------------------------------------------
// the REST API, as the admin and the background fans

/** One call; 429 and 503 are retried after Retry-After, with the same Idempotency-Key. */
async function call(method, p, { token, body, key, expect } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  if (key) headers['Idempotency-Key'] = key;
  for (let attempt = 0; ; attempt++) {
    let res;
    try {
      res = await fetch(BASE_URL + p, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      if (attempt < 5) {
        await sleep(500 * (attempt + 1));
        continue;
      }
      fail(`${method} ${p}: ${e.cause ? e.cause.message || e.cause.code : e.message}`);
    }
    const text = await res.text();
    let data = text;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_) {
      /* not JSON */
    }
    if ((res.status === 429 || res.status === 503) && attempt < 10) {
      const wait = Number(res.headers.get('retry-after'));
      await sleep((Number.isFinite(wait) && wait > 0 ? wait : 1) * 1000);
      continue;
    }
    if (expect && !expect.includes(res.status)) {
      fail(`${method} ${p} answered ${res.status} (wanted ${expect.join(' or ')}): ${text.slice(0, 400)}`);
    }
    return { status: res.status, data, headers: res.headers };
  }
}

async function login(email, password) {
  const r = await call('POST', '/v1/auth/login', { body: { email, password }, expect: [200] });
  check(r.data && r.data.access_token && r.data.token_type === 'Bearer', `login of ${email}: no bearer token in ${JSON.stringify(r.data)}`);
  return r.data.access_token;
}

async function registerFan(i, prefix = 'fan') {
  const email = `${prefix}${i}-${RUN}@example.com`;
  const password = `pw-${RUN}-${i}-long-enough`;
  const r = await call('POST', '/v1/auth/register', { body: { email, password }, expect: [201] });
  check(r.data && r.data.user_id, `register ${email}: no user_id`);
  return { email, password, userId: r.data.user_id, token: await login(email, password) };
}

/** The sale opens now (the operators' "Open now" lever): the pre-queue is drawn at once. */
async function openSale(admin, eventId) {
  await call('POST', `/v1/ops/events/${eventId}/open`, { token: admin, key: crypto.randomUUID(), expect: [200] });
}

/**
 * `fan` buys `quantity` seats through the REST API: joins the line, waits until
 * the booking worker holds seats, pays with the test card that pays at once, and
 * waits until the order's tickets are issued. Answers the paid order, its tickets
 * sorted by seat.
 */
async function buySeats(fan, eventId, quantity, { section } = {}) {
  const joined = await call('POST', `/v1/events/${eventId}/requests`, {
    token: fan.token,
    key: crypto.randomUUID(),
    body: section ? { quantity, section } : { quantity },
    expect: [202],
  });
  const requestId = joined.data.request_id;
  const until = Date.now() + 60000;
  for (;;) {
    const req = (await call('GET', `/v1/requests/${requestId}`, { token: fan.token, expect: [200] })).data;
    if (req.state === 'held') break;
    check(['prequeue', 'queued'].includes(req.state), `${fan.email}'s request for ${quantity} seats ended ${req.state} (${req.reason || 'no reason'})`);
    check(Date.now() < until, `${fan.email}'s request for ${quantity} seats was not held within 60 s (is the booking worker running?)`);
    await sleep(250);
  }
  const paid = await call('POST', `/v1/requests/${requestId}/checkout`, {
    token: fan.token,
    key: crypto.randomUUID(),
    body: { card_number: '4242424242424242', expiry: '12/34', cvc: '123' },
    expect: [200],
  });
  check(paid.data.state === 'paid', `the checkout with 4242… answered ${JSON.stringify(paid.data)}`);
  const order = await paidOrder(fan, paid.data.order_id, quantity);
  log(`   ${fan.email} bought ${order.tickets.map((t) => t.seat_id).join(', ')} (order ${order.order_id})`);
  return order;
}

/** The paid order `orderId` once its `count` tickets are issued, tickets sorted by seat. */
async function paidOrder(fan, orderId, count) {
  const until = Date.now() + 30000;
  for (;;) {
    const o = (await call('GET', `/v1/orders/${orderId}`, { token: fan.token, expect: [200] })).data;
    if (Array.isArray(o.tickets) && o.tickets.length === count) {
      o.tickets.sort((a, b) => (a.seat_id < b.seat_id ? -1 : a.seat_id > b.seat_id ? 1 : 0));
      for (const t of o.tickets) {
        check(t.ticket_id && t.seat_id && Number.isInteger(t.version) && t.state && typeof t.code === 'string' && t.code.split('.').length === 3,
          `a ticket of order ${orderId} is not {ticket_id, seat_id, version, state, code (a JWS)}: ${JSON.stringify(t)}`);
      }
      return o;
    }
    check(Date.now() < until, `order ${orderId} has ${JSON.stringify(o.tickets || [])} after 30 s, wanted ${count} tickets`);
    await sleep(250);
  }
}

/** The admin makes `user` door staff of the event. */
async function makeStaff(admin, eventId, user) {
  const r = await call('PUT', `/v1/events/${eventId}/staff/${user.userId}`, { token: admin, expect: [200] });
  check(r.data && r.data.user_id === user.userId && r.data.event_id === eventId, `PUT staff answered ${JSON.stringify(r.data)}`);
}

/** One scan through the API, as `staff` at door `device`: answers its result. */
async function scanCode(staff, eventId, code, { device = 'Gate A', direction = 'entry', offline = false } = {}) {
  const scan = { scan_id: crypto.randomUUID(), code, direction, scanned_at: new Date().toISOString(), device_id: device, offline };
  const r = await call('POST', `/v1/events/${eventId}/scans`, { token: staff.token, body: { scans: [scan] }, expect: [200] });
  const result = r.data && Array.isArray(r.data.results) ? r.data.results[0] : null;
  check(result && result.scan_id === scan.scan_id, `POST scans answered ${JSON.stringify(r.data)}`);
  return result;
}

/** "Floor-A-1" as the pages write it: "Floor · row A · seat 1". */
function seatWords(id) {
  const [section, row, number] = id.split('-');
  return `${section} · row ${row} · seat ${number}`;
}

/** Runs fn over items, `width` at a time. */
async function pool(items, width, fn) {
  const out = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i], i);
      }
    })
  );
  return out;
}

// The scenarios' sale: a 50-seat venue (Floor: 3 rows of 10, gold; Balcony: 2 rows
// of 10, silver) and an event on it going on sale in `onsaleDelayS` seconds at two
// admissions a second, the show 30 days later, created by the admin over REST; with
// `refundPolicy` ({until, fee_percent}) and `tax` ({rate_percent, included}) when
// given. Returns the event's id, name, on-sale instant and show time.
async function createSale(admin, { venueName, eventName, onsaleDelayS, refundPolicy, tax }) {
  const venue = await call('POST', '/v1/venues', {
    token: admin,
    key: crypto.randomUUID(),
    expect: [201],
    body: {
      name: `${venueName} ${RUN}`,
      sections: [
        { name: 'Floor', price_tier: 'gold', rows: ['A', 'B', 'C'].map((label) => ({ label, seats: 10 })) },
        { name: 'Balcony', price_tier: 'silver', rows: ['A', 'B'].map((label) => ({ label, seats: 10 })) },
      ],
    },
  });
  const venueId = venue.data.venue_id;
  check(venueId && venue.data.seat_count === 50, `venue: wanted 50 seats, got ${JSON.stringify(venue.data)}`);
  const onsaleAt = new Date(Date.now() + onsaleDelayS * 1000);
  const name = `${eventName} ${RUN}`;
  const startsAt = new Date(Date.now() + 30 * 86400 * 1000);
  const created = await call('POST', '/v1/events', {
    token: admin,
    key: crypto.randomUUID(),
    expect: [201],
    body: {
      venue_id: venueId,
      name,
      starts_at: startsAt.toISOString(),
      onsale_at: onsaleAt.toISOString(),
      max_per_fan: 4,
      hold_seconds: 300,
      prices: { gold: 9500, silver: 4500 },
      admission_per_second: 2,
      ...(refundPolicy ? { refund_policy: refundPolicy } : {}),
      ...(tax ? { tax } : {}),
    },
  });
  const eventId = created.data.event_id;
  check(eventId, `event: no event_id in ${JSON.stringify(created.data)}`);
  log(`   event ${eventId}, on sale at ${onsaleAt.toISOString()}`);
  return { eventId, eventName: name, onsaleAt, startsAt };
}

export {
  createSale, CHROMIUM, RUN, T0, log, step, Failure, fail, check, sleep, pages, watch, shot, report, failureShots,
  failureFile, run, begin, beginOpenSale, launch, withBrowser, phoneContext, desktopContext, waitFor, text, visible,
  registerInPage, signInInPage, opsSignIn, readQrCodes, call, login, registerFan, pool, openSale, buySeats, paidOrder, makeStaff,
  scanCode, seatWords,
};
