// A fan's tickets, in a real browser: bought on the event page, shown there as QR
// codes, listed on /orders, read by the door, and reissued.
//
//   cd gateway/tests/browser && npm ci
//   BASE_URL=http://127.0.0.1:8080 ADMIN_EMAIL=admin@example.com ADMIN_PASSWORD=... \
//   SCREENSHOTS=/tmp/shots node tickets.mjs
//
// Setup goes through the REST API as the bootstrap admin (a venue, an event opened
// at once); the fan (registered over REST) signs in and buys 2 seats on the event
// page (390x844), sees "Your tickets" there, then /orders on the phone and on a
// desktop (1280x900). Every QR the pages show is read in the page with the
// vendored jsQR and must hold the ticket's code from the API; the door (a staff
// account, over REST) admits one ticket; the fan reissues the other on /orders,
// after which its old code scans as void and the new QR holds the new code.
// Exit 0 when every step held, 1 otherwise.
//
// Optional: TIMEOUT_SECONDS (150), HEADFUL=1.

import {
  BASE_URL, log, step, check, pages, watch, shot, run, beginOpenSale, failureFile, withBrowser, phoneContext,
  desktopContext, waitFor, text, signInInPage, readQrCodes, call, makeStaff, scanCode, paidOrder, seatWords, sleep,
} from './lib.mjs';

async function main() {
  const { admin, accounts: [fan, staff], eventId, eventName } = await beginOpenSale({
    venueName: 'Ticket Hall',
    eventName: 'Ticket Night',
    who: 'a fan and a door steward',
    accounts: ['ticketfan', 'steward'],
  });

  await withBrowser((browser) => scenario(browser, { admin, fan, staff, eventId, eventName }), failureFile);
}

/** Waits until `scope` shows `count` ticket entries whose QR codes have loaded. */
async function ticketsShown(page, scope, count, what) {
  await waitFor(
    page,
    `${what}: ${count} tickets with their QR codes loaded`,
    ([sel, n]) => {
      const items = document.querySelectorAll(`${sel} li.ticket`);
      return items.length === n && Array.from(items).every((li) => li.dataset.state === 'void' || li.querySelector('img.qr').dataset.loaded === 'true');
    },
    [scope, count],
    30000
  );
}

/** Waits until the API shows ticket `ticketId` of `orderId` in `state`; answers the ticket. */
async function ticketInState(fan, orderId, ticketId, state) {
  const until = Date.now() + 20000;
  for (;;) {
    const o = (await call('GET', `/v1/orders/${orderId}`, { token: fan.token, expect: [200] })).data;
    const t = (o.tickets || []).find((x) => x.ticket_id === ticketId);
    if (t && t.state === state) return t;
    check(Date.now() < until, `GET /v1/orders/${orderId} still shows ticket ${ticketId} as ${t ? t.state : 'missing'} after 20 s, wanted ${state}`);
    await sleep(250);
  }
}

/** Checks that every QR under `scope` holds its ticket's code, as the API gives it. */
async function qrsHoldTheCodes(page, scope, tickets, what) {
  const read = await readQrCodes(page, scope);
  check(read.length === tickets.length, `${what}: ${read.length} QR codes shown, wanted ${tickets.length}`);
  for (const t of tickets) {
    const r = read.find((x) => x.ticket_id === t.ticket_id);
    check(r, `${what}: no entry for ticket ${t.ticket_id} (${t.seat_id})`);
    check(r.text, `${what}: jsQR could not read the QR code of ${t.seat_id}`);
    check(r.text === t.code, `${what}: the QR code of ${t.seat_id} holds "${r.text.slice(0, 40)}…", not its code "${t.code.slice(0, 40)}…"`);
    check(r.version === t.version, `${what}: ${t.seat_id} is shown at version ${r.version}, the API says ${t.version}`);
  }
  log(`   ${what}: ${read.length} QR codes read with jsQR, each holding its ticket's code`);
}

async function scenario(browser, { admin, fan, staff, eventId, eventName }) {
  const phone = await phoneContext(browser);
  const desktop = await desktopContext(browser);
  const p = watch('fan (phone)', await phone.newPage());
  const d = watch('fan (desktop)', await desktop.newPage());
  const page = p.page;
  const desk = d.page;

  step('the fan (390x844) opens the event page, signs in and asks for the best 2 seats');
  await page.goto(`${BASE_URL}/e/${eventId}`);
  await waitFor(page, "the page shows the event's name", (n) => document.getElementById('event-name').textContent === n, eventName);
  await signInInPage(page, fan.email, fan.password);
  await waitFor(page, 'the sale shows as open', () => document.getElementById('sale-state').dataset.state === 'open', undefined, 30000);
  check(await page.locator('#tickets').isHidden(), '"Your tickets" shows before the fan bought anything');
  await waitFor(page, 'the join form is shown', () => !document.getElementById('join').hidden);
  await page.check('#mode-best');
  await page.fill('#best-quantity', '2');
  await page.click('#join-button');

  step('the seats are held; the fan pays with the test card');
  await waitFor(page, 'the hold shows (#hold)', () => !document.getElementById('hold').hidden, undefined, 60000);
  const held = await page.evaluate(() => document.getElementById('hold').dataset.seats.split(',').filter(Boolean));
  check(held.length === 2, `the fan holds ${held.join(', ')}, wanted 2 seats`);
  await page.fill('#card-number', '4242 4242 4242 4242');
  await page.fill('#card-expiry', '12/34');
  await page.fill('#card-cvc', '123');
  await page.click('#pay');
  await waitFor(page, 'the confirmation shows with an order id', () => {
    const c = document.getElementById('confirmation');
    const id = document.getElementById('order-id').textContent.trim();
    return c && !c.hidden && id && id !== '–';
  }, undefined, 30000);
  const orderId = await text(page, '#order-id');

  step('"Your tickets" shows both tickets with their QR codes, at 390 px');
  await waitFor(page, '#tickets is shown', () => !document.getElementById('tickets').hidden, undefined, 30000);
  await ticketsShown(page, '#ticket-list', 2, 'the event page');
  const order = await paidOrder(fan, orderId, 2);
  const tickets = order.tickets;
  check(order.event_id === eventId, `order ${orderId} is for event ${order.event_id}`);
  check(tickets.every((t) => held.includes(t.seat_id)), `the tickets are for ${tickets.map((t) => t.seat_id).join(', ')}, held were ${held.join(', ')}`);
  check(tickets.every((t) => t.state === 'valid'), `new tickets are ${tickets.map((t) => t.state).join(', ')}, not valid`);
  {
    const shown = await page.evaluate(() => Array.from(document.querySelectorAll('#ticket-list li.ticket')).map((li) => ({
      seat: li.querySelector('.ticket-seat').textContent,
      state: li.querySelector('.ticket-state').textContent,
      alt: li.querySelector('img.qr').alt,
      width: li.querySelector('img.qr').getBoundingClientRect().width,
    })));
    for (const t of tickets) {
      const s = shown.find((x) => x.seat === seatWords(t.seat_id));
      check(s, `the event page does not show ${seatWords(t.seat_id)}: ${JSON.stringify(shown)}`);
      check(s.state === 'Valid', `${t.seat_id} shows as "${s.state}"`);
      check(/QR code/.test(s.alt) && s.alt.includes(t.seat_id.split('-')[0]), `the QR of ${t.seat_id} has the alt text "${s.alt}"`);
      check(s.width >= 200, `the QR of ${t.seat_id} is ${s.width} px wide at 390 px: too small to scan from a phone`);
    }
    const fits = await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth);
    check(fits, 'the event page scrolls sideways at 390 px');
    log(`   ${shown.map((s) => `${s.seat} (${s.state}, ${Math.round(s.width)} px)`).join('; ')}`);
  }
  await qrsHoldTheCodes(page, '#ticket-list', tickets, 'the event page');
  await page.locator('#tickets').scrollIntoViewIfNeeded();
  await shot(page, '01-event-tickets-390.png');

  step('after a reload the event page still shows the tickets (from GET /v1/orders)');
  await page.reload();
  await waitFor(page, '#tickets is shown again', () => !document.getElementById('tickets').hidden, undefined, 30000);
  await ticketsShown(page, '#ticket-list', 2, 'the event page after a reload');
  check(await page.locator('#tickets a[href="/orders"]').isVisible(), '"Your tickets" has no link to /orders');

  step('the fan opens /orders on the phone');
  await page.click('#tickets a[href="/orders"]');
  await page.waitForURL('**/orders', { timeout: 10000 });
  const orderItem = `#orders li.order[data-order-id="${orderId}"]`;
  await waitFor(page, 'the order is listed, with its event name', ([sel, name]) => {
    const li = document.querySelector(sel);
    return li && li.querySelector('.order-event').textContent === name;
  }, [orderItem, eventName]);
  await ticketsShown(page, orderItem, 2, '/orders on the phone');
  {
    const facts = await page.evaluate((sel) => {
      const li = document.querySelector(sel);
      return {
        state: li.querySelector('.order-state').textContent,
        amount: li.querySelector('.order-amount').textContent,
        seats: li.querySelector('.order-seats').textContent,
        when: li.querySelector('.order-when').textContent,
        reissue: li.querySelectorAll('button[data-action="reissue"]').length,
        sideways: document.documentElement.scrollWidth > window.innerWidth,
      };
    }, orderItem);
    log(`   ${JSON.stringify(facts)}`);
    check(facts.state === 'Paid', `the order's state reads "${facts.state}"`);
    check(/\d/.test(facts.amount), `the order's amount reads "${facts.amount}"`);
    check(tickets.every((t) => facts.seats.includes(seatWords(t.seat_id))), `the order's seats read "${facts.seats}"`);
    check(/Show /.test(facts.when) && /ordered /.test(facts.when), `the order's dates read "${facts.when}"`);
    check(facts.reissue === 2, `${facts.reissue} Reissue buttons for 2 valid tickets`);
    check(!facts.sideways, '/orders scrolls sideways at 390 px');
  }
  await qrsHoldTheCodes(page, orderItem, tickets, '/orders on the phone');
  await shot(page, '02-orders-390.png');

  step('the fan opens /orders on a desktop (1280x900) and signs in there');
  await desk.goto(`${BASE_URL}/orders`);
  check(await desk.locator('#orders-section').isHidden(), '/orders shows orders before anyone signed in');
  await signInInPage(desk, fan.email, fan.password);
  await ticketsShown(desk, orderItem, 2, '/orders on the desktop');
  await shot(desk, '03-orders-desktop.png');

  const [first, second] = tickets;
  step(`the door admits ${first.seat_id} with the code read from its QR (a steward, over REST)`);
  await makeStaff(admin, eventId, staff);
  const readFirst = (await readQrCodes(page, orderItem)).find((r) => r.ticket_id === first.ticket_id).text;
  const admitted = await scanCode(staff, eventId, readFirst, { device: 'Gate A' });
  check(admitted.result === 'admitted' && admitted.ticket_id === first.ticket_id && admitted.seat_id === first.seat_id,
    `the door answered ${JSON.stringify(admitted)} for ${first.seat_id}'s code, wanted admitted`);
  log(`   ${first.seat_id}: ${admitted.result}`);

  step(`/orders shows ${first.seat_id} as checked in, with no Reissue; ${second.seat_id} can still be reissued`);
  await ticketInState(fan, orderId, first.ticket_id, 'checked_in');
  await desk.reload();
  await waitFor(desk, `${first.seat_id} shows as checked in`, (id) => {
    const li = document.querySelector(`li.ticket[data-ticket-id="${id}"]`);
    return li && li.dataset.state === 'checked_in' && li.querySelector('.ticket-state').textContent === 'Checked in';
  }, first.ticket_id);
  check(await desk.locator(`li.ticket[data-ticket-id="${first.ticket_id}"] button[data-action="reissue"]`).count() === 0,
    `${first.seat_id} is checked in, yet offers Reissue`);

  step(`the fan reissues ${second.seat_id} on /orders: the confirmation says the old code stops working`);
  const reissueButton = desk.locator(`li.ticket[data-ticket-id="${second.ticket_id}"] button[data-action="reissue"]`);
  await reissueButton.click();
  await waitFor(desk, 'the confirmation dialog opens', () => document.getElementById('confirm-dialog').open);
  {
    const said = `${await text(desk, '#confirm-title')} ${await text(desk, '#confirm-text')}`;
    log(`   the dialog asks: "${said}"`);
    check(/stops working/.test(said) && /offline/.test(said), `the reissue confirmation says "${said}"`);
  }
  await shot(desk, '04-reissue-confirm.png');
  await desk.click('#confirm-yes');
  await waitFor(desk, `${second.seat_id} shows a new QR code (version ${second.version + 1})`, ([id, v]) => {
    const li = document.querySelector(`li.ticket[data-ticket-id="${id}"]`);
    const img = li && li.querySelector('img.qr');
    return img && li.dataset.version === String(v) && img.dataset.loaded === 'true' && img.dataset.version === String(v);
  }, [second.ticket_id, second.version + 1], 30000);
  {
    const msg = await text(desk, `li.ticket[data-ticket-id="${second.ticket_id}"] .ticket-message`);
    check(/new QR code/.test(msg), `after the reissue the ticket says "${msg}"`);
  }
  const after = await paidOrder(fan, orderId, 2);
  const renewed = after.tickets.find((t) => t.ticket_id === second.ticket_id);
  check(renewed && renewed.version === second.version + 1 && renewed.code !== second.code && renewed.state === 'valid',
    `after the reissue the API shows ${JSON.stringify(renewed)}, wanted version ${second.version + 1} with a new code`);
  await qrsHoldTheCodes(desk, orderItem, after.tickets, '/orders after the reissue');
  await shot(desk, '05-reissued-desktop.png');

  step(`the door refuses ${second.seat_id}'s old code as void, and admits the new one`);
  const old = await scanCode(staff, eventId, second.code, { device: 'Gate A' });
  check(old.result === 'void', `the old code of ${second.seat_id} scanned as ${JSON.stringify(old)}, wanted void`);
  log(`   old code: ${old.result} (${old.reason || 'no reason'})`);
  const fresh = await scanCode(staff, eventId, renewed.code, { device: 'Gate A' });
  check(fresh.result === 'admitted', `the new code of ${second.seat_id} scanned as ${JSON.stringify(fresh)}, wanted admitted`);

  step('someone with no orders sees the empty state on /orders');
  {
    const ctx = await phoneContext(browser);
    const w = watch('steward on /orders (phone)', await ctx.newPage());
    await w.page.goto(`${BASE_URL}/orders`);
    await signInInPage(w.page, staff.email, staff.password);
    await waitFor(w.page, 'the empty state shows', () => !document.getElementById('orders-empty').hidden);
    const said = await text(w.page, '#orders-empty');
    check(/no orders yet/i.test(said), `the empty state says "${said}"`);
    await shot(w.page, '06-orders-empty-390.png');
  }

  for (const w of pages) check(!w.errors.length, `${w.name} threw: ${w.errors.join(' | ')}`);
}

run(main, { failureFile, reportOnPass: true });
