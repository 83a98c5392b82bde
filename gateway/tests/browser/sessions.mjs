// A fan's session in a real browser: the live socket opened with a single-use
// ticket (no token in any URL), a token that ran out refreshed without the fan
// noticing, signed out by "sign out everywhere" on another device (the open
// socket closes and the page says so), and the page's own sign-out ending the
// session on the server.
//
//   cd gateway/tests/browser && npm ci
//   BASE_URL=http://127.0.0.1:8080 ADMIN_EMAIL=admin@example.com ADMIN_PASSWORD=... \
//   SCREENSHOTS=/tmp/shots node sessions.mjs
//
// Exit 0 when every step held, 1 otherwise. Optional: TIMEOUT_SECONDS (150), HEADFUL=1.

import {
  BASE_URL, step, check, watch, shot, run, beginOpenSale, failureFile, withBrowser, phoneContext, waitFor,
  signInInPage, call, login,
} from './lib.mjs';

async function main() {
  const { accounts: [fan], eventId } = await beginOpenSale({
    venueName: 'Session Hall',
    eventName: 'Session Night',
    who: 'a fan',
    accounts: ['sessionfan'],
  });
  await withBrowser((browser) => scenario(browser, { fan, eventId }), failureFile);
}

/** The account the page keeps in sessionStorage. */
function stored(page) {
  return page.evaluate(() => JSON.parse(window.sessionStorage.getItem('onsale.auth') || 'null'));
}

async function live(page, what) {
  await waitFor(page, `${what}: the live socket is connected`, () => {
    const el = document.getElementById('connection');
    return el && el.dataset.state === 'live';
  });
}

async function scenario(browser, { fan, eventId }) {
  const context = await phoneContext(browser);
  const page = await context.newPage();
  watch('fan (phone)', page);
  const sockets = [];
  page.on('websocket', (ws) => sockets.push(ws.url()));
  const refreshes = [];
  page.on('response', (r) => {
    if (r.url().endsWith('/v1/auth/refresh')) refreshes.push(r.status());
  });

  step('1. the fan signs in on the event page; the socket opens with a ticket, never the token');
  await page.goto(`${BASE_URL}/e/${eventId}`);
  await signInInPage(page, fan.email, fan.password);
  await live(page, 'signed in');
  check(sockets.length > 0, 'no socket was opened');
  for (const url of sockets) {
    check(/[?&]ticket=/.test(url), `the socket URL carries no ticket: ${url}`);
    check(!/access_token|Bearer|eyJ/.test(url), `a token travels in the socket URL: ${url}`);
  }

  step('2. the access token runs out: the next call refreshes it silently');
  const before = await stored(page);
  check(before && before.refreshToken, 'the page keeps no refresh token');
  await page.evaluate(() => {
    const auth = JSON.parse(window.sessionStorage.getItem('onsale.auth'));
    auth.expiresAt = Date.now() - 1000;
    window.sessionStorage.setItem('onsale.auth', JSON.stringify(auth));
  });
  await page.goto(`${BASE_URL}/orders`);
  await waitFor(page, 'the orders page shows the fan signed in', (mail) => {
    const who = document.getElementById('signed-in-as');
    return who && who.textContent === mail;
  }, fan.email);
  await waitFor(page, 'the orders page has loaded the (empty) list', () => {
    const list = document.getElementById('orders-empty') || document.getElementById('orders');
    return !!list && !list.hidden;
  });
  const after = await stored(page);
  check(refreshes.includes(200), `no refresh answered 200 (saw ${JSON.stringify(refreshes)})`);
  check(after && after.refreshToken !== before.refreshToken, 'the refresh token was not rotated');
  check(after.expiresAt > Date.now(), 'the new access token is already expired');
  await shot(page, '01-refreshed-silently.png');

  step('3. "sign out everywhere" on another device: the open page is told its session ended');
  await page.goto(`${BASE_URL}/e/${eventId}`);
  await live(page, 'back on the event page');
  const elsewhere = await login(fan.email, fan.password);
  await call('POST', '/v1/auth/logout-all', { token: elsewhere, expect: [204] });
  await waitFor(page, 'the page says the session ended and offers the sign-in box again', () => {
    const msg = document.getElementById('auth-message');
    const box = document.getElementById('auth');
    return box && !box.hidden && msg && /session has ended/i.test(msg.textContent);
  });
  check((await stored(page)) === null, 'the page still keeps the ended account');
  await shot(page, '02-signed-out-elsewhere.png');

  step('4. the page\'s own "Sign out" ends the session on the server');
  await signInInPage(page, fan.email, fan.password);
  await live(page, 'signed in again');
  const token = (await stored(page)).token;
  const logout = page.waitForResponse((r) => r.url().endsWith('/v1/auth/logout'));
  await page.click('#sign-out');
  check((await logout).status() === 204, 'the sign-out was not answered 204');
  const me = await call('GET', '/v1/auth/me', { token, expect: [401] });
  check(me.data && me.data.code === 'session_ended', `the old token got ${JSON.stringify(me.data)}, not session_ended`);
  await waitFor(page, 'the page offers the sign-in box', () => {
    const box = document.getElementById('auth');
    return box && !box.hidden;
  });
  await shot(page, '03-signed-out.png');
  await context.close();
}

run(main, { failureFile });
