// The fan's flow through the waiting room, in a real browser.
//
//   cd gateway/tests/browser && npm ci
//   BASE_URL=http://127.0.0.1:8080 ADMIN_EMAIL=admin@example.com ADMIN_PASSWORD=... \
//   SCREENSHOTS=/tmp/shots node fan.mjs
//
// Setup goes through the REST API as the bootstrap admin; the two fans under test
// use only the pages (/e/{event_id}). Debian's chromium is driven by playwright-core
// (CHROMIUM overrides its path). Exit 0 when every step held, 1 otherwise.
//
// Optional: TIMEOUT_SECONDS (150), ONSALE_DELAY_SECONDS (12), FANS (20), HEADFUL=1.

import {
  BASE_URL, ADMIN_EMAIL, ADMIN_PASSWORD, RUN, createSale, log, step, check, pages, watch, shot, run, begin, withBrowser,
  phoneContext, desktopContext, waitFor, text, visible, registerInPage, call, login, registerFan, pool,
} from './lib.mjs';
import crypto from 'node:crypto';

const ONSALE_DELAY_S = Number(process.env.ONSALE_DELAY_SECONDS || 12);
const FANS = Number(process.env.FANS || 20);

// ---------------------------------------------------------------------------

/** The failure screenshot of a watched page: "fan A (phone)" leaves 99-failure-fan-A.png. */
const failureFile = (name) => `99-failure-${name.split(' ')[0]}-${name.split(' ')[1]}.png`.replace(/[^\w.-]/g, '');

async function main() {
  await begin();

  step('a. the admin signs in');
  const admin = await login(ADMIN_EMAIL, ADMIN_PASSWORD);

  step(`b. ${FANS} other fans register and sign in`);
  const fans = await pool(Array.from({ length: FANS }, (_, i) => i + 1), 4, (i) => registerFan(i));
  log(`   ${fans.length} fans signed in`);

  await withBrowser((browser) => scenario(browser, admin, fans), failureFile);
}

/**
 * A sale that opened and closed is badged as closed on the home page (not "on sale
 * now"), and on a 390 px phone its 12-seat rows fit the card without scrolling.
 */
async function closedSaleOnAPhone(page, admin) {
  step('c. a closed sale reads "sale closed" on the home page; 12-seat rows fit a phone');
  const venue = await call('POST', '/v1/venues', {
    token: admin,
    key: crypto.randomUUID(),
    expect: [201],
    body: {
      name: `Club Twelve ${RUN}`,
      sections: [{ name: 'Floor', price_tier: 'gold', rows: ['A', 'B'].map((label) => ({ label, seats: 12 })) }],
    },
  });
  const created = await call('POST', '/v1/events', {
    token: admin,
    key: crypto.randomUUID(),
    expect: [201],
    body: {
      venue_id: venue.data.venue_id,
      name: `Closed Night ${RUN}`,
      starts_at: new Date(Date.now() + 30 * 86400 * 1000).toISOString(),
      onsale_at: new Date(Date.now() + 86400 * 1000).toISOString(),
      max_per_fan: 4,
      hold_seconds: 300,
      prices: { gold: 9500 },
    },
  });
  const eventId = created.data.event_id;
  for (const lever of ['open', 'close']) {
    await call('POST', `/v1/ops/events/${eventId}/${lever}`, { token: admin, key: crypto.randomUUID(), expect: [200] });
  }
  await page.goto(`${BASE_URL}/`);
  const badge = page.locator(`li[data-event-id="${eventId}"] .badge`);
  await badge.waitFor({ state: 'visible', timeout: 10000 });
  const said = (await badge.textContent()).trim();
  check(said === 'Sale closed', `the closed sale's badge reads "${said}", not "Sale closed"`);
  await shot(page, 'c-home-closed-sale-390.png');
  await page.goto(`${BASE_URL}/e/${eventId}`);
  await waitFor(page, 'the seat map is drawn', () => document.querySelectorAll('.seat-row').length === 2);
  const fit = await page.evaluate(() => {
    const rows = document.querySelector('.map-section .rows');
    const seats = rows.querySelectorAll('.seat');
    const last = seats[seats.length - 1].getBoundingClientRect();
    return { scroll: rows.scrollWidth, client: rows.clientWidth, lastRight: last.right, rowsRight: rows.getBoundingClientRect().right, hint: !rows.parentElement.querySelector('.rows-more').hidden };
  });
  check(fit.scroll <= fit.client && fit.lastRight <= fit.rowsRight, `a 12-seat row is cut off at 390 px: ${JSON.stringify(fit)}`);
  check(!fit.hint, 'a row that fits says there are more seats to the right');
  await shot(page, 'c-seat-map-12-seats-390.png');
}

async function scenario(browser, admin, fans) {
  const phone = await phoneContext(browser);
  const desktop = await desktopContext(browser);
  const a = watch('fan A (phone)', await phone.newPage());
  const b = watch('fan B (desktop)', await desktop.newPage());
  const pageA = a.page;
  const pageB = b.page;

  step('c. fan A (390x844) opens the home page and registers there');
  await pageA.goto(`${BASE_URL}/`);
  const emailA = await registerInPage(pageA, 'fan-a');

  await closedSaleOnAPhone(pageA, admin);

  step('a. the admin creates a venue and an event that goes on sale in a few seconds');
  const { eventId, eventName, onsaleAt } = await createSale(admin, {
    venueName: 'Riverside Hall',
    eventName: 'The Midnight Tour',
    onsaleDelayS: ONSALE_DELAY_S,
  });
  const eventUrl = `${BASE_URL}/e/${eventId}`;

  step('c. fan A follows the event from the home page and sees the countdown');
  await pageA.goto(`${BASE_URL}/`);
  const link = pageA.locator(`a[href="/e/${eventId}"]`).first();
  try {
    await link.waitFor({ state: 'visible', timeout: 5000 });
    await link.click();
    await pageA.waitForURL(`**/e/${eventId}`, { timeout: 10000 });
  } catch (_) {
    log('   (the event is not among those the home page lists; going to its page directly)');
    await pageA.goto(eventUrl);
  }
  await waitFor(pageA, `fan A's page shows the event's name`, (n) => document.getElementById('event-name').textContent === n, eventName);
  await waitFor(pageA, `fan A is still signed in as ${emailA}`, (mail) => {
    const bar = document.getElementById('account');
    return bar && !bar.hidden && document.getElementById('signed-in-as').textContent === mail;
  }, emailA);
  await waitFor(pageA, 'the countdown shows a time', () => {
    const box = document.getElementById('countdown-box');
    return box && !box.hidden && /^\d+:\d{2}(:\d{2})?$/.test(document.getElementById('countdown').textContent.trim());
  });
  const countdown = await text(pageA, '#countdown');
  log(`   #countdown shows ${countdown}`);
  check(Date.now() < onsaleAt.getTime(), `the on-sale came before fan A saw the countdown; raise ONSALE_DELAY_SECONDS (is ${ONSALE_DELAY_S})`);

  step(`b. the ${fans.length} other fans join the pre-queue (1 seat each)`);
  const joins = await pool(fans, 8, (f) =>
    call('POST', `/v1/events/${eventId}/requests`, {
      token: f.token,
      key: crypto.randomUUID(),
      body: { quantity: 1 },
      expect: [202],
    })
  );
  for (const j of joins) {
    check(j.data.request_id, `a join answered no request_id: ${JSON.stringify(j.data)}`);
    check(
      j.data.queue_number === null && j.data.position === null,
      `a join before the on-sale must be in the pre-queue (queue_number and position null), got ${JSON.stringify(j.data)}` +
        ' (is setup slower than ONSALE_DELAY_SECONDS?)'
    );
  }
  log(`   ${joins.length} requests in the pre-queue`);
  const evNow = (await call('GET', `/v1/events/${eventId}`, { expect: [200] })).data;
  if (evNow.admission_per_second !== 2) {
    log(`   admission is ${evNow.admission_per_second}/s; setting 2/s`);
    await call('PUT', `/v1/ops/events/${eventId}/admission`, {
      token: admin,
      key: crypto.randomUUID(),
      body: { per_second: 2 },
      expect: [200],
    });
  }
  await shot(pageA, '01-countdown.png');

  step('c. fan B (1280x900) opens the same event and registers');
  await pageB.goto(eventUrl);
  await waitFor(pageB, `fan B's page shows the event's name`, (n) => document.getElementById('event-name').textContent === n, eventName);
  await registerInPage(pageB, 'fan-b');
  await waitFor(pageB, "fan B's seat map has 50 seats", () => document.querySelectorAll('#seat-map [data-seat-id]').length === 50);
  log('   fan B asks for the best seat available in the Floor, before the on-sale');
  await waitFor(pageB, 'the join form is shown', () => !document.getElementById('join').hidden);
  await pageB.check('#mode-best');
  await waitFor(pageB, 'the Floor is offered as a section', () =>
    Array.from(document.querySelectorAll('#best-section option')).some((o) => o.value === 'Floor')
  );
  await pageB.selectOption('#best-section', 'Floor');
  await pageB.fill('#best-quantity', '1');
  await pageB.click('#join-button');
  await waitFor(pageB, 'fan B is shown in the pre-queue', () => {
    const line = document.getElementById('line');
    const note = document.getElementById('prequeue-note');
    return line && !line.hidden && note && !note.hidden;
  });
  const note = await text(pageB, '#prequeue-note');
  check(/pre-queue/.test(note) && /random/.test(note), `the pre-queue note says: ${note}`);
  check(!(await visible(pageB, '#line-stats')), 'a request in the pre-queue must show no position yet');
  const stateB = await pageB.evaluate(() => window.onsaleState && window.onsaleState.request && window.onsaleState.request.state);
  check(stateB === 'prequeue', `fan B's request is ${stateB}, not in the pre-queue; raise ONSALE_DELAY_SECONDS`);
  await pageB.evaluate(() => {
    window.__loadedOnce = 'fan-b';
  });
  let navigationsB = 0;
  pageB.on('framenavigated', (f) => {
    if (f === pageB.mainFrame()) navigationsB++;
  });

  step("d. the sale opens; fan A's place in line is recorded as it moves");
  await pageA.evaluate(() => {
    const el = document.getElementById('position');
    window.__positions = [];
    const note = () => {
      if (el.dataset.position === undefined) return;
      const shown = Number(el.textContent.replace(/\D/g, ''));
      const list = window.__positions;
      if (!list.length || list[list.length - 1].shown !== shown) {
        list.push({ shown, data: Number(el.dataset.position), at: Date.now() });
      }
    };
    new MutationObserver(note).observe(el, { childList: true, characterData: true, subtree: true, attributes: true });
    note();
  });
  const untilOpen = onsaleAt.getTime() - Date.now() + 30000;
  await waitFor(pageA, 'fan A sees the sale open', () => document.getElementById('sale-state').dataset.state === 'open', undefined, untilOpen);
  await shot(pageA, '01b-open.png');
  // Joining after the draw puts fan A behind the drawn cohort, first come first
  // served: a place far enough back to watch it fall and to pause in front of.
  log('   fan A asks for the best 2 seats available in the Balcony');
  await waitFor(pageA, 'the join form is shown', () => !document.getElementById('join').hidden);
  await pageA.check('#mode-best');
  await waitFor(pageA, 'the Balcony is offered as a section', () =>
    Array.from(document.querySelectorAll('#best-section option')).some((o) => o.value === 'Balcony')
  );
  await pageA.selectOption('#best-section', 'Balcony');
  await pageA.fill('#best-quantity', '2');
  await pageA.click('#join-button');

  await waitFor(
    pageA,
    'fan A sees a place in line (#position shows a number)',
    () => {
      const stats = document.getElementById('line-stats');
      const s = window.onsaleState && window.onsaleState.request && window.onsaleState.request.state;
      return (stats && !stats.hidden && /\d/.test(document.getElementById('position').textContent)) || s === 'held';
    },
    undefined,
    untilOpen
  );

  step('e. the admin pauses the sale while fan A is in line');
  await call('POST', `/v1/ops/events/${eventId}/pause`, { token: admin, key: crypto.randomUUID(), expect: [200] });
  const firstSeen = await pageA.evaluate(() => window.__positions.slice());
  log(`   fan A's first position: ${firstSeen.map((p) => p.shown).join(', ') || '(none: served at once)'}`);
  await waitFor(pageA, 'fan A sees the paused banner', () => {
    const el = document.getElementById('sale-state');
    return el.dataset.state === 'paused' && /paused/i.test(el.textContent);
  });
  const stateWhenPaused = await pageA.evaluate(() => window.onsaleState.request.state);
  check(stateWhenPaused === 'queued', `fan A was ${stateWhenPaused} when the pause landed, not in line`);
  let positionWhenPaused = null;
  {
    const banner = await text(pageA, '#sale-state');
    check(
      banner.includes('The sale is paused. You keep your place in line.'),
      `the paused banner says: ${banner}`
    );
    check(await visible(pageA, '#position'), '#position is not visible while paused');
    const shown = await text(pageA, '#position');
    check(/^\d[\d,.\s]*$/.test(shown), `#position shows "${shown}" while paused, not a number`);
    positionWhenPaused = Number(shown.replace(/\D/g, ''));
    log(`   paused: the banner shows and #position still shows ${shown}; #eta: ${await text(pageA, '#eta')}`);
  }
  await shot(pageA, '03-paused.png');
  await call('POST', `/v1/ops/events/${eventId}/resume`, { token: admin, key: crypto.randomUUID(), expect: [200] });
  await waitFor(pageA, 'fan A sees the sale open again', () => document.getElementById('sale-state').dataset.state === 'open');
  log('   resumed');

  step("d. fan A's place falls as the line moves");
  {
    await waitFor(
      pageA,
      'fan A moves up the line, or gets seats',
      (paused) => {
        const s = window.onsaleState.request.state;
        if (s !== 'queued') return true;
        const n = Number(document.getElementById('position').textContent.replace(/\D/g, ''));
        return n < paused;
      },
      positionWhenPaused,
      60000
    );
  }
  await shot(pageA, '02-in-line.png');
  const eta = await text(pageA, '#eta');
  const odds = await text(pageA, '#odds');
  log(`   #eta "${eta}", #odds "${odds}"`);
  if (await visible(pageA, '#odds')) {
    check(/fans? ahead of you|front of the line/.test(odds) && /seats? left|no seats left/.test(odds), `#odds says: ${odds}`);
  }

  step("f. fan A's seats are held");
  await waitFor(pageA, 'fan A sees the hold (#hold)', () => !document.getElementById('hold').hidden, undefined, 60000);
  const positions = await pageA.evaluate(() => window.__positions.slice());
  const seen = positions.map((p) => p.shown);
  log(`   #position over time: ${seen.join(' → ') || '(never shown)'}`);
  for (const p of positions) check(p.shown === p.data, `#position shows ${p.shown} but means ${p.data}`);
  for (let i = 1; i < seen.length; i++) {
    check(seen[i] <= seen[i - 1], `#position went up: ${seen.join(' → ')}`);
  }
  if (seen.length >= 2) check(seen[seen.length - 1] < seen[0], `#position did not fall: ${seen.join(' → ')}`);
  const held = await pageA.evaluate(() => document.getElementById('hold').dataset.seats.split(',').filter(Boolean));
  check(held.length === 2, `fan A holds ${held.length} seats (${held.join(', ')}), wanted 2`);
  check(held.every((s) => s.startsWith('Balcony-')), `fan A asked for the Balcony and holds ${held.join(', ')}`);
  await waitFor(pageA, '#hold-countdown shows the time left', () =>
    /^\d+:\d{2}$/.test(document.getElementById('hold-countdown').textContent.trim())
  );
  const holdLeft = await text(pageA, '#hold-countdown');
  log(`   held ${held.join(', ')}; ${holdLeft} left to pay`);
  await shot(pageA, '04-held.png');

  step('f. fan A pays with the test card, pressing Pay with the keyboard');
  const yy = String((new Date().getUTCFullYear() + 3) % 100).padStart(2, '0');
  await pageA.click('#card-number');
  await pageA.keyboard.type('4242 4242 4242 4242');
  await pageA.focus('#card-expiry');
  await pageA.keyboard.type(`12${yy}`);
  const expiry = await pageA.inputValue('#card-expiry');
  check(expiry === `12/${yy}`, `the expiry field reads "${expiry}", wanted 12/${yy}`);
  await pageA.fill('#card-cvc', '123');
  await pageA.focus('#pay');
  check(await pageA.evaluate(() => document.activeElement && document.activeElement.id === 'pay'), '#pay cannot take the focus');
  await pageA.keyboard.press('Enter');
  await waitFor(
    pageA,
    'fan A sees the confirmation with an order id',
    () => {
      const c = document.getElementById('confirmation');
      const id = document.getElementById('order-id').textContent.trim();
      return c && !c.hidden && id && id !== '–';
    },
    undefined,
    30000
  );
  const confirmation = await text(pageA, '#confirmation');
  check(/You.re going!/.test(confirmation), `the confirmation says: ${confirmation}`);
  check(/email/i.test(confirmation), 'the confirmation does not say the tickets come by email');
  const confirmedSeats = await pageA.evaluate(() => document.getElementById('confirmation').dataset.seats.split(','));
  check(held.every((s) => confirmedSeats.includes(s)), `the confirmation lists ${confirmedSeats.join(', ')}, held were ${held.join(', ')}`);
  const orderId = await text(pageA, '#order-id');
  log(`   confirmed: order ${orderId} for ${emailA}`);
  await shot(pageA, '05-confirmed.png');

  step("g. fan B's map shows fan A's seats as sold, without a reload");
  await waitFor(
    pageB,
    `fan B sees ${held.join(', ')} as sold`,
    (ids) => ids.every((id) => {
      const el = document.querySelector(`#seat-map [data-seat-id="${id}"]`);
      return el && el.dataset.state === 'sold';
    }),
    held,
    20000
  );
  check(navigationsB === 0 && (await pageB.evaluate(() => window.__loadedOnce)) === 'fan-b', "fan B's page was reloaded");
  const labels = await pageB.evaluate(
    (ids) => ids.map((id) => document.querySelector(`#seat-map [data-seat-id="${id}"]`).getAttribute('aria-label')),
    held
  );
  for (const l of labels) check(/sold/.test(l), `a sold seat's aria-label says: ${l}`);
  await pageB.locator(`#seat-map [data-seat-id="${held[0]}"]`).scrollIntoViewIfNeeded();
  await shot(pageB, '06-other-fan-sees-sold.png');

  for (const w of pages) check(!w.errors.length, `${w.name} threw: ${w.errors.join(' | ')}`);
  return orderId;
}

// ---------------------------------------------------------------------------

run(main, { failureFile });
