// Confirming an email address before joining a line, in a real browser, with the
// gateway requiring it (ONSALE_AUTH__REQUIRE_VERIFIED_EMAIL=true): a fan signs up
// on the event page of a phone, is refused at the join with a note that says why,
// asks for the link again with the keyboard, opens the link (/verify#token=…), comes
// back to the event page and joins.
//
//   cd gateway/tests/browser && npm ci
//   BASE_URL=http://127.0.0.1:8080 ADMIN_EMAIL=admin@example.com ADMIN_PASSWORD=... \
//   MAILBOX=/tmp/mailbox SCREENSHOTS=/tmp/shots node verify.mjs
//
// MAILBOX is the folder the confirmation links arrive in, one `<n>.json` file
// ({"email", "token"}) per link (`gateway/tests/it/browser.rs` copies them there
// from the outbox; nothing sends real mail in the tests). Setup and the fans ahead
// in line go through the REST API; the fan under test uses only the pages.
//
// Exit 0 when every step held, 1 otherwise. Optional: TIMEOUT_SECONDS (150),
// AHEAD (6), HEADFUL=1.

import fs from 'node:fs/promises';
import path from 'node:path';
import crypto from 'node:crypto';
import {
  BASE_URL, log, step, check, sleep, pages, watch, shot, run, beginOpenSale, failureFile, withBrowser,
  phoneContext, waitFor, text, visible, registerInPage, call, login, registerFan, pool,
} from './lib.mjs';

const MAILBOX = process.env.MAILBOX;
const AHEAD = Number(process.env.AHEAD || 6);

// ---------------------------------------------------------------------------
// the mailbox

/** The confirmation tokens sent to `email` so far, oldest first. */
async function linksSent(email) {
  const names = await fs.readdir(MAILBOX).catch(() => []);
  const mails = [];
  for (const name of names.filter((n) => /^\d+\.json$/.test(n))) {
    const mail = JSON.parse(await fs.readFile(path.join(MAILBOX, name), 'utf8'));
    if (mail.email === email) mails.push({ n: Number(name.split('.')[0]), token: mail.token });
  }
  return mails.sort((a, b) => a.n - b.n).map((m) => m.token);
}

/** Waits until `count` links were sent to `email`; answers them, oldest first. */
async function waitForLinks(email, count) {
  const until = Date.now() + 20000;
  for (;;) {
    const sent = await linksSent(email);
    if (sent.length >= count) return sent;
    check(Date.now() < until, `${sent.length} confirmation links reached ${email} within 20 s, wanted ${count}`);
    await sleep(200);
  }
}

/** A fan registered and confirmed through the API, signed in again (a token saying so). */
async function confirmedFan(i) {
  const fan = await registerFan(i, 'ahead');
  const [token] = await waitForLinks(fan.email, 1);
  await call('POST', '/v1/auth/verify-email', { body: { token }, expect: [200] });
  return { ...fan, token: await login(fan.email, fan.password) };
}

// ---------------------------------------------------------------------------

async function main() {
  check(MAILBOX, 'set MAILBOX (the folder the confirmation links arrive in)');
  check(AHEAD >= 1, 'AHEAD must be at least 1: the place in line is shown behind the fans ahead');
  const { admin, eventId, eventName } = await beginOpenSale({
    venueName: 'Confirm Hall',
    eventName: 'Confirmed Night',
    who: 'nobody yet',
    accounts: [],
  });

  step(`${AHEAD} fans who confirmed their addresses get ready to join ahead (REST)`);
  const ahead = await pool(Array.from({ length: AHEAD }, (_, i) => i + 1), 3, (i) => confirmedFan(i));
  // One admission a second: the fans ahead are still in front when the fan joins.
  await call('PUT', `/v1/ops/events/${eventId}/admission`, {
    token: admin,
    key: crypto.randomUUID(),
    body: { per_second: 1 },
    expect: [200],
  });

  await withBrowser((browser) => scenario(browser, { eventId, eventName, ahead }), failureFile);
}

/** Nothing on the page is wider than the phone: no sideways scrolling, no cut-off control. */
async function fitsThePhone(page, what, selectors) {
  const fit = await page.evaluate((sels) => {
    const width = document.documentElement.clientWidth;
    const wide = sels
      .map((s) => [s, document.querySelector(s)])
      .filter(([, el]) => el && el.offsetParent !== null)
      .map(([s, el]) => [s, el.getBoundingClientRect()])
      .filter(([, r]) => r.left < 0 || r.right > width)
      .map(([s, r]) => `${s} spans ${Math.round(r.left)}..${Math.round(r.right)}`);
    return { width, scroll: document.documentElement.scrollWidth, wide };
  }, selectors);
  check(fit.scroll <= fit.width, `${what}: the page scrolls sideways on a phone (${fit.scroll} > ${fit.width} px)`);
  check(!fit.wide.length, `${what}: cut off on a ${fit.width} px phone: ${fit.wide.join('; ')}`);
}

async function signedInAs(page, email) {
  await waitFor(page, `the page shows ${email} as signed in`, (mail) => {
    const bar = document.getElementById('account');
    return bar && !bar.hidden && document.getElementById('signed-in-as').textContent === mail;
  }, email);
}

async function scenario(browser, { eventId, eventName, ahead }) {
  const context = await phoneContext(browser);
  const w = watch('fan (phone)', await context.newPage());
  const page = w.page;
  const eventUrl = `${BASE_URL}/e/${eventId}`;
  const joins = [];
  page.on('response', (r) => {
    if (r.request().method() === 'POST' && r.url().endsWith(`/v1/events/${eventId}/requests`)) joins.push(r.status());
  });

  step('1. the fan (390x844) opens the event page and signs up there');
  await page.goto(eventUrl);
  await waitFor(page, "the page shows the event's name", (n) => document.getElementById('event-name').textContent === n, eventName);
  const email = await registerInPage(page, 'newfan');
  const [firstLink] = await waitForLinks(email, 1);
  log(`   ${email} signed up; the confirmation link arrived in the mailbox`);

  step('2. the fan taps "Join the line" before confirming: refused, with a note that says why');
  await waitFor(page, 'the join form is shown', () => !document.getElementById('join').hidden);
  await page.fill('#best-quantity', '1');
  await page.tap('#join-button');
  await waitFor(page, 'the unconfirmed note (#unverified) is shown', () => !document.getElementById('unverified').hidden);
  const said = await text(page, '#join-message');
  check(/not confirmed/i.test(said), `#join-message says "${said}", not that the address is unconfirmed`);
  const note = await text(page, '#unverified');
  check(/confirm your email address/i.test(note) && /link/i.test(note), `the note says: ${note}`);
  check(await visible(page, '#resend-link'), 'the note offers no "Email me the link again" button');
  const button = await text(page, '#resend-link');
  check(/email me the link again/i.test(button), `the resend button reads "${button}"`);
  check(joins.length && joins.every((s) => s === 403), `the joins were answered ${joins.join(', ')}, wanted 403s`);
  check((await page.evaluate(() => window.onsaleState && window.onsaleState.request)) == null, 'the refused join left a request on the page');
  check(await visible(page, '#join'), 'the join form went away after a refused join');
  await fitsThePhone(page, 'the unconfirmed note', ['#join', '#unverified', '#resend-link', '#join-button', '#join-message']);
  // What the fan sees where they tapped, before scrolling.
  const below = await page.evaluate(() => {
    const r = document.getElementById('resend-link').getBoundingClientRect();
    return r.bottom > window.innerHeight ? Math.round(r.bottom - window.innerHeight) : 0;
  });
  check(!below, `right after the refusal "Email me the link again" ends ${below} px below the phone's screen`);
  await shot(page, '01-unconfirmed-390.png');
  await shot(page, '01b-unconfirmed-as-tapped-390.png', { fullPage: false });

  step('3. with the keyboard: Tab from "Join the line" reaches "Email me the link again", and Enter sends it');
  await page.focus('#join-button');
  await page.keyboard.press('Tab');
  const focused = await page.evaluate(() => document.activeElement && document.activeElement.id);
  check(focused === 'resend-link', `Tab from #join-button lands on #${focused}, not on #resend-link`);
  await page.keyboard.press('Enter');
  await waitFor(page, '#resend-message says a new link is on its way', () => {
    const m = document.getElementById('resend-message');
    return m.dataset.kind && m.dataset.kind !== 'info';
  });
  const resent = await text(page, '#resend-message');
  const kind = await page.evaluate(() => document.getElementById('resend-message').dataset.kind);
  check(kind === 'ok' && /on its way/i.test(resent), `after Enter on the resend button #resend-message says (${kind}) "${resent}"`);
  const links = await waitForLinks(email, 2);
  check(links.length === 2 && links[0] === firstLink, `the mailbox of ${email} holds ${links.length} links, wanted sign-up's and one more`);
  // The keyboard's focus stays on the button (aria-disabled while sending, not
  // disabled, which would drop it to the top of the page).
  const after = await page.evaluate(() => {
    const a = document.activeElement;
    return a ? (a.id ? `#${a.id}` : a.tagName.toLowerCase()) : 'nothing';
  });
  check(after === '#resend-link', `after the resend the focus is on ${after}, no longer on #resend-link`);
  await page.evaluate(() => document.getElementById('resend-message').scrollIntoView({ block: 'center' }));
  await shot(page, '02-link-sent-390.png', { fullPage: false });

  step('4. the fan opens the newest link: /verify#token=… confirms the address');
  const verifyAnswer = page.waitForResponse((r) => r.url().endsWith('/v1/auth/verify-email'));
  await page.goto(`${BASE_URL}/verify#token=${encodeURIComponent(links[1])}`);
  check((await verifyAnswer).status() === 200, 'POST /v1/auth/verify-email was not answered 200');
  await waitFor(page, 'the page says the address is confirmed', () => {
    const box = document.getElementById('verify-outcome');
    return box && !box.hidden && box.classList.contains('card-success');
  });
  const title = await text(page, '#verify-title');
  check(/confirmed/i.test(title), `the outcome's title says "${title}"`);
  const body = await text(page, '#verify-text');
  check(/join the line/i.test(body), `the outcome says "${body}", not what the fan can do now`);
  check(!(await visible(page, '#verify-working')), '"Confirming your address…" still shows beside the outcome');
  check(!(await visible(page, '#resend-box')), 'a confirmed address is offered a new link');
  check(!/token=/.test(page.url()), `the token stays in the address bar: ${page.url()}`);
  check(
    (await page.evaluate(() => document.activeElement && document.activeElement.id)) === 'verify-outcome',
    'the focus is not on the outcome (a screen reader would not hear it)'
  );
  await signedInAs(page, email);
  await fitsThePhone(page, 'the confirmation', ['#verify-outcome', '#verify-title', '#verify-text']);
  await shot(page, '03-confirmed-390.png');

  step('5. back on the event page, the fans ahead join, then the fan joins with Enter and sees a place in line');
  await page.goto(eventUrl);
  await waitFor(page, "the page shows the event's name", (n) => document.getElementById('event-name').textContent === n, eventName);
  await signedInAs(page, email);
  await waitFor(page, 'the join form is shown', () => !document.getElementById('join').hidden);
  check(!(await visible(page, '#unverified')), 'the unconfirmed note is back on a fresh page');
  for (const fan of ahead) {
    await call('POST', `/v1/events/${eventId}/requests`, { token: fan.token, key: crypto.randomUUID(), body: { quantity: 1 }, expect: [202] });
  }
  joins.length = 0;
  await page.fill('#best-quantity', '1');
  await page.focus('#best-quantity');
  await page.keyboard.press('Enter');
  await waitFor(
    page,
    'the fan is shown in line (#position shows a number)',
    () => {
      const s = window.onsaleState && window.onsaleState.request && window.onsaleState.request.state;
      const stats = document.getElementById('line-stats');
      return ['held', 'failed', 'expired', 'cancelled'].includes(s) ||
        (s === 'queued' && stats && !stats.hidden && /\d/.test(document.getElementById('position').textContent));
    },
    undefined,
    30000
  );
  check(joins.length === 1 && joins[0] === 202, `the join was answered ${joins.join(', ') || 'never'}, wanted one 202`);
  const state = await page.evaluate(() => window.onsaleState.request.state);
  check(state === 'queued', `the fan's request is ${state}, not in line (the fans ahead were served too fast?)`);
  const position = await text(page, '#position');
  log(`   in line: #position "${position}", #eta "${await text(page, '#eta')}"`);
  check(!(await visible(page, '#unverified')), 'the unconfirmed note still shows once in line');
  check(await visible(page, '#line'), '"You are in line" is not shown');
  await fitsThePhone(page, 'the place in line', ['#line', '#line-stats', '#position']);
  await page.locator('#line').scrollIntoViewIfNeeded();
  await shot(page, '04-in-line-390.png');
  await shot(page, '04b-in-line-viewport-390.png', { fullPage: false });

  // The refused joins' 403s are the only console lines Chromium may log.
  for (const p of pages) {
    const unexpected = [...p.errors, ...p.console.filter((l) => !/status of 403/.test(l))];
    check(!unexpected.length, `${p.name}: ${unexpected.join(' | ')}`);
  }
  await context.close();
}

run(main, { failureFile });
