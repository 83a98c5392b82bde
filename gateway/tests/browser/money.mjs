// Money back and paper, in a real browser: a fan's invoice and a refund of one of
// their tickets on /orders, a stale second attempt refused with the server's words,
// and the operator cancelling the show from the dashboard until every order is
// refunded.
//
//   cd gateway/tests/browser && npm ci
//   BASE_URL=http://127.0.0.1:8080 ADMIN_EMAIL=admin@example.com ADMIN_PASSWORD=... \
//   SCREENSHOTS=/tmp/shots node money.mjs
//
// Setup goes through the REST API as the bootstrap admin: a venue, an event whose
// fans may ask for refunds until a day before the show for a 10 % fee, with 19 % tax
// included in its prices, opened at once; a fan who buys 2 seats with the test card
// that pays. The fan's phone (390x844) uses /orders: the invoice (its PDF fetched in
// the page), the policy, a refund of one ticket (the amount shown before and in the
// confirmation), the refund's state and credit note (its PDF fetched, and saved by
// a click). The same fan's desktop (1280x900), opened before, still offers that
// ticket: the server refuses it and the page says so. The operator (1280x900)
// cancels the show on /ops/events/{event_id} and watches the refunds finish; the
// fan's phone then shows the order refunded. Needs payments' refund loop running
// beside the gateway (the Rust harness runs it). Exit 0 when every step held, 1
// otherwise.
//
// Optional: TIMEOUT_SECONDS (150), HEADFUL=1.

import {
  BASE_URL, ADMIN_EMAIL, ADMIN_PASSWORD, log, step, check, pages, watch, shot, run, begin, failureFile, withBrowser,
  phoneContext, desktopContext, waitFor, text, signInInPage, opsSignIn, call, login, registerFan, createSale, openSale,
  buySeats, seatWords,
} from './lib.mjs';

const FEE_PERCENT = 10;
const PRICES = { Floor: 9500, Balcony: 4500 }; // createSale's tiers, tax included
const REASON = 'The headliner has lost their voice; the tour is off.';

const euros = (cents) => new Intl.NumberFormat('en-US', { style: 'currency', currency: 'EUR' }).format(cents / 100);
const priceOf = (t) => PRICES[t.seat_id.split('-')[0]];
const feeOf = (t) => Math.floor((priceOf(t) * FEE_PERCENT) / 100);

async function main() {
  await begin();

  step('the admin signs in; a fan registers (REST)');
  const admin = await login(ADMIN_EMAIL, ADMIN_PASSWORD);
  const fan = await registerFan(1, 'moneyfan');

  step(`the admin creates an event with refunds until a day before the show (${FEE_PERCENT} % fee) and 19 % tax included, and opens it (REST)`);
  const until = new Date(Date.now() + 29 * 86400 * 1000).toISOString();
  const { eventId, eventName } = await createSale(admin, {
    venueName: 'Money Hall',
    eventName: 'Money Night',
    onsaleDelayS: 3600,
    refundPolicy: { until, fee_percent: FEE_PERCENT },
    tax: { rate_percent: 19, included: true },
  });
  await openSale(admin, eventId);
  const ev = (await call('GET', `/v1/events/${eventId}`, { expect: [200] })).data;
  check(ev.refund_policy && ev.refund_policy.fee_percent === FEE_PERCENT && ev.tax && ev.tax.rate_percent === 19 && ev.tax.included === true && ev.cancelled === false,
    `GET /v1/events/${eventId} answered refund_policy ${JSON.stringify(ev.refund_policy)}, tax ${JSON.stringify(ev.tax)}, cancelled ${ev.cancelled}`);

  step('the fan buys 2 seats with 4242 4242 4242 4242 (REST); the order has its invoice');
  const order = await buySeats(fan, eventId, 2);
  check(order.amount_cents === order.tickets.reduce((sum, t) => sum + priceOf(t), 0), `order ${order.order_id} cost ${order.amount_cents} for ${order.seats.join(', ')}`);
  const invoice = (await call('GET', `/v1/orders/${order.order_id}/invoice`, { token: fan.token, expect: [200] })).data;
  check(/^INV-\d{4}-\d+$/.test(invoice.invoice_number) && invoice.total_cents === order.amount_cents && invoice.tax_cents > 0,
    `the invoice is ${JSON.stringify(invoice)}`);
  log(`   invoice ${invoice.invoice_number}: ${euros(invoice.total_cents)}, of which ${euros(invoice.tax_cents)} tax`);

  await withBrowser((browser) => scenario(browser, { admin, fan, eventId, eventName, order, invoice }), failureFile);
}

/** The PDF a link (`a.doc-link` matching `selector`) names, fetched in the page with the signed-in account's token. */
async function pdfInPage(page, selector) {
  const got = await page.evaluate(async (sel) => {
    const a = document.querySelector(sel);
    if (!a) return { error: `no link ${sel}` };
    const auth = JSON.parse(sessionStorage.getItem('onsale.auth') || 'null');
    const res = await fetch(a.dataset.pdf, { headers: { Authorization: `Bearer ${auth && auth.token}` } });
    const bytes = new Uint8Array(await res.arrayBuffer());
    return { path: a.dataset.pdf, status: res.status, type: res.headers.get('content-type'), size: bytes.length, head: String.fromCharCode(...bytes.slice(0, 5)) };
  }, selector);
  check(!got.error, got.error);
  check(got.status === 200 && got.type === 'application/pdf' && got.head === '%PDF-',
    `GET ${got.path} in the page answered ${got.status} ${got.type}, ${got.size} bytes starting "${got.head}"`);
  log(`   GET ${got.path}: ${got.status} ${got.type}, ${got.size} bytes`);
}

/** What an order's entry on /orders shows. */
async function orderFacts(page, sel) {
  return page.evaluate((s) => {
    const li = document.querySelector(s);
    const t = (q) => (li.querySelector(q) ? li.querySelector(q).textContent.trim() : '');
    const shown = (q) => !!li.querySelector(q) && li.querySelector(q).offsetParent !== null;
    return {
      state: t('.order-state'),
      invoice: t('.order-invoice'),
      policy: shown('.order-policy') ? t('.order-policy') : '',
      note: t('.order-note'),
      paidBack: shown('.order-refunded-fact') ? t('.order-refunded') : '',
      refundOffered: shown('button[data-action="refund"]'),
      refunds: Array.from(li.querySelectorAll('li.refund'), (r) => ({
        id: r.dataset.refundId,
        state: r.dataset.state,
        badge: r.querySelector('.refund-state').textContent,
        amount: r.querySelector('.refund-amount-back').textContent,
        text: r.textContent,
        note: r.querySelector('a.doc-link') ? r.querySelector('a.doc-link').dataset.number : null,
        link: r.querySelector('a.doc-link') ? r.querySelector('a.doc-link').textContent : null,
      })),
      tickets: Array.from(li.querySelectorAll('li.ticket'), (x) => ({
        id: x.dataset.ticketId,
        state: x.dataset.state,
        qr: x.querySelector('img.qr').offsetParent !== null,
        note: x.querySelector('.qr-note').textContent,
      })),
      message: t('.order-message'),
      messageKind: li.querySelector('.order-message').dataset.kind || '',
      sideways: document.documentElement.scrollWidth > window.innerWidth,
    };
  }, sel);
}

async function scenario(browser, { fan, eventId, eventName, order, invoice }) {
  const p = watch('fan (phone)', await (await phoneContext(browser)).newPage()).page;
  const d = watch('fan (desktop)', await (await desktopContext(browser)).newPage()).page;
  const o = watch('operator (desktop)', await (await desktopContext(browser)).newPage()).page;
  const item = `#orders li.order[data-order-id="${order.order_id}"]`;
  const [first, second] = order.tickets;
  const firstBack = priceOf(first) - feeOf(first);
  const allBack = order.tickets.reduce((sum, t) => sum + priceOf(t) - feeOf(t), 0);

  const invoiceShown = async (page, what) => {
    await waitFor(page, `${what}: the order shows its event, invoice ${invoice.invoice_number}, the refund policy and 2 QR codes`, ([sel, number, name]) => {
      const li = document.querySelector(sel);
      const inv = li && li.querySelector('.order-invoice');
      const policy = li && li.querySelector('.order-policy');
      const qrs = li ? li.querySelectorAll('li.ticket img.qr[data-loaded="true"]').length : 0;
      return inv && !inv.hidden && inv.dataset.number === number && policy && !policy.hidden &&
        li.querySelector('.order-event').textContent === name && qrs === 2;
    }, [item, invoice.invoice_number, eventName], 30000);
  };

  step('the fan (390x844) opens /orders and signs in: the invoice, the refund policy and "Refund tickets…" show');
  await p.goto(`${BASE_URL}/orders`);
  await signInInPage(p, fan.email, fan.password);
  await invoiceShown(p, 'the phone');
  {
    const f = await orderFacts(p, item);
    log(`   ${JSON.stringify({ state: f.state, invoice: f.invoice, policy: f.policy })}`);
    check(f.state === 'Paid', `the order reads "${f.state}"`);
    check(f.invoice.includes(invoice.invoice_number) && f.invoice.includes('(PDF)') && f.invoice.includes(euros(invoice.tax_cents)),
      `the invoice line reads "${f.invoice}"`);
    check(/until .*10 %/.test(f.policy), `the policy note reads "${f.policy}"`);
    check(f.refundOffered, 'no "Refund tickets…" button on a paid order of an event that offers refunds');
    check(!f.sideways, '/orders scrolls sideways at 390 px');
  }
  await pdfInPage(p, `${item} .order-invoice a.doc-link`);
  await shot(p, '01-orders-paid-390.png');

  step('the same fan opens /orders on a desktop (1280x900) and the refund form there, and leaves it open');
  await d.goto(`${BASE_URL}/orders`);
  await signInInPage(d, fan.email, fan.password);
  await invoiceShown(d, 'the desktop');
  await d.click(`${item} button[data-action="refund"]`);
  await waitFor(d, 'the desktop shows what refunding both tickets pays back', ([sel, back]) => {
    const line = document.querySelector(`${sel} .refund-amount`);
    return line && line.offsetParent !== null && line.textContent.includes(back);
  }, [item, euros(allBack)]);
  await shot(d, '02-orders-desktop.png');

  step(`on the phone the fan chooses ${first.seat_id} only, by keyboard: the form says what comes back`);
  await p.focus(`${item} button[data-action="refund"]`);
  await p.keyboard.press('Enter');
  await waitFor(p, `both valid tickets are chosen, ${euros(allBack)} back`, ([sel, back]) => {
    const boxes = document.querySelectorAll(`${sel} .refund-tickets input[type="checkbox"]`);
    const line = document.querySelector(`${sel} .refund-amount`);
    return boxes.length === 2 && Array.from(boxes).every((b) => b.checked) && line.textContent.includes(back);
  }, [item, euros(allBack)]);
  check(await p.evaluate((sel) => document.activeElement && document.activeElement.matches(`${sel} .refund-tickets input`), item),
    'opening the refund form did not move the focus to its first check box');
  await p.keyboard.press('Tab');
  check(await p.evaluate((id) => document.activeElement && document.activeElement.value === id, second.ticket_id),
    `Tab from the first check box did not reach ${second.seat_id}'s`);
  await p.keyboard.press('Space');
  await waitFor(p, `the form says ${euros(firstBack)} back`, ([sel, back]) =>
    document.querySelector(`${sel} .refund-amount`).textContent.includes(`You get back ${back}`), [item, euros(firstBack)]);
  log(`   "${await text(p, `${item} .refund-amount`)}"`);
  await shot(p, '03-refund-choice-390.png');

  step('the confirmation names the amount, the seat and that it cannot be undone; the fan confirms');
  await p.click(`${item} .refund-submit`);
  await waitFor(p, 'the confirmation dialog opens', () => document.getElementById('confirm-dialog').open);
  {
    const said = `${await text(p, '#confirm-title')} ${await text(p, '#confirm-text')} ${await text(p, '#confirm-note')}`;
    log(`   the dialog asks: "${said}"`);
    check(said.includes(euros(firstBack)) && said.includes(seatWords(first.seat_id)) && /cannot be undone/.test(said) && !said.includes(seatWords(second.seat_id)),
      `the refund's confirmation says "${said}"`);
  }
  await shot(p, '04-refund-confirm-390.png', { fullPage: false });
  await p.click('#confirm-yes');

  step('the refund shows in the order with its state and its credit note; the ticket is void, with no QR code');
  await waitFor(p, 'the refund shows with a "Credit note CRN-…" link', (sel) => {
    const a = document.querySelector(`${sel} li.refund a.doc-link`);
    return a && /^Credit note CRN-\d{4}-\d+/.test(a.textContent);
  }, item, 20000);
  const api1 = (await call('GET', `/v1/orders/${order.order_id}`, { token: fan.token, expect: [200] })).data;
  const refund = (api1.refunds || [])[0];
  check(api1.state === 'partially_refunded' && api1.refunds.length === 1 && refund.amount_cents === firstBack && refund.fee_cents === feeOf(first) &&
    refund.ticket_ids.length === 1 && refund.ticket_ids[0] === first.ticket_id && /^CRN-/.test(refund.credit_note_number || ''),
  `after the refund GET /v1/orders/${order.order_id} shows ${api1.state}, refunds ${JSON.stringify(api1.refunds)}`);
  await waitFor(p, `${first.seat_id} shows as void`, ([sel, id]) => {
    const li = document.querySelector(`${sel} li.ticket[data-ticket-id="${id}"]`);
    return li && li.dataset.state === 'void';
  }, [item, first.ticket_id]);
  {
    const f = await orderFacts(p, item);
    log(`   ${JSON.stringify({ state: f.state, paidBack: f.paidBack, refunds: f.refunds.map((r) => [r.amount, r.badge, r.link]), message: f.message })}`);
    check(f.state === 'Partly refunded', `the order reads "${f.state}" after one of its 2 tickets was refunded`);
    check(f.paidBack === euros(firstBack), `"Paid back" reads "${f.paidBack}"`);
    const r = f.refunds[0];
    check(f.refunds.length === 1 && r.id === refund.refund_id && r.amount === `${euros(firstBack)} back` && r.note === refund.credit_note_number &&
      r.link === `Credit note ${refund.credit_note_number} (PDF)` && ['pending', 'succeeded'].includes(r.state) && /On its way|Paid back/.test(r.badge),
    `the refund shows as ${JSON.stringify(f.refunds)}`);
    check(f.messageKind === 'ok' && f.message.includes(euros(firstBack)), `the order's message reads "${f.message}" (${f.messageKind})`);
    const t1 = f.tickets.find((t) => t.id === first.ticket_id);
    const t2 = f.tickets.find((t) => t.id === second.ticket_id);
    check(t1 && !t1.qr && /void/.test(t1.note), `the refunded ticket shows ${JSON.stringify(t1)}, wanted void with no QR code`);
    check(t2 && t2.state === 'valid' && t2.qr, `the other ticket shows ${JSON.stringify(t2)}, wanted valid with its QR code`);
    check(f.refundOffered, 'the other ticket can no longer be refunded');
    check(!f.sideways, '/orders scrolls sideways at 390 px after the refund');
  }
  await pdfInPage(p, `${item} li.refund a.doc-link`);
  {
    const [download] = await Promise.all([
      p.waitForEvent('download', { timeout: 15000 }),
      p.click(`${item} li.refund a.doc-link`),
    ]);
    check(download.suggestedFilename() === `${refund.credit_note_number}.pdf`, `the credit note was saved as "${download.suggestedFilename()}"`);
    log(`   a click on the link saved ${download.suggestedFilename()}`);
  }
  await shot(p, '05-refunded-390.png');

  step(`the desktop's form, opened before, still offers ${first.seat_id}: the server refuses it and the page says why`);
  await d.uncheck(`${item} input[value="${second.ticket_id}"]`);
  await d.click(`${item} .refund-submit`);
  await waitFor(d, 'the confirmation dialog opens', () => document.getElementById('confirm-dialog').open);
  await d.click('#confirm-yes');
  await waitFor(d, "the order's message shows the refusal", (sel) => {
    const m = document.querySelector(`${sel} .order-message`);
    return m && m.dataset.kind === 'error' && m.textContent;
  }, item, 20000);
  {
    const m = await d.evaluate((sel) => {
      const el = document.querySelector(`${sel} .order-message`);
      return { text: el.textContent, live: el.getAttribute('aria-live'), role: el.getAttribute('role') };
    }, item);
    log(`   "${m.text}"`);
    const said = `Not refunded: The ticket for ${seatWords(first.seat_id)} cannot be refunded: it is not this order's, or it is void already.`;
    check(m.text === said && m.live === 'polite' && m.role === 'status', `the refusal reads "${m.text}" (aria-live ${m.live}, role ${m.role}), wanted "${said}"`);
  }
  await waitFor(d, 'the desktop catches up: the refund shows there too, the form is closed', (sel) =>
    document.querySelectorAll(`${sel} li.refund`).length === 1 && document.querySelector(`${sel} .refund-form`).hidden, item);
  {
    const again = (await call('GET', `/v1/orders/${order.order_id}`, { token: fan.token, expect: [200] })).data;
    check(again.refunds.length === 1 && again.refunded_cents === firstBack, `after the refusal the order has ${again.refunds.length} refunds, ${again.refunded_cents} cents paid back`);
  }
  await shot(d, '06-refused-desktop.png');

  step('the operator (1280x900) opens the dashboard: the danger card offers to cancel the show');
  await o.goto(`${BASE_URL}/ops/events/${eventId}`);
  await opsSignIn(o, ADMIN_EMAIL, ADMIN_PASSWORD);
  await waitFor(o, 'the cancel card shows its form, ready', () =>
    !document.getElementById('cancel-form').hidden && !document.getElementById('cancel-button').disabled &&
    document.getElementById('cancel-progress').hidden && document.getElementById('cancelled-banner').hidden, undefined, 30000);
  await o.click('#cancel-button');
  {
    const error = await text(o, '#cancel-error');
    check(/Say why/.test(error) && !(await o.evaluate(() => document.getElementById('confirm-dialog').open)), `an empty reason was not refused in the form: "${error}"`);
  }
  await o.fill('#cancel-reason', REASON);
  await o.locator('#cancel-card').scrollIntoViewIfNeeded();
  await shot(o, '07-ops-cancel-card.png');

  step('the confirmation names the consequences; the operator confirms');
  await o.click('#cancel-button');
  await waitFor(o, 'the confirmation dialog opens', () => document.getElementById('confirm-dialog').open);
  {
    const said = `${await text(o, '#confirm-title')} ${await text(o, '#confirm-text')} ${await text(o, '#confirm-note')}`;
    log(`   the dialog asks: "${said}"`);
    check(said.includes(eventName) && /refunded in full/.test(said) && /voided/.test(said) && /emailed/.test(said) && /cannot be undone/.test(said) && said.includes(REASON),
      `the cancellation's confirmation says "${said}"`);
    check((await text(o, '#confirm-no')) === 'Keep the show', `the way out reads "${await text(o, '#confirm-no')}"`);
  }
  await shot(o, '08-ops-cancel-confirm.png', { fullPage: false });
  await o.click('#confirm-yes');

  step('the progress shows, and reaches finished');
  await waitFor(o, 'the progress view shows', () => !document.getElementById('cancel-progress').hidden, undefined, 20000);
  await waitFor(o, 'the cancellation finishes (every order refunded)', () =>
    document.getElementById('cancel-progress').dataset.finished === 'true', undefined, 30000);
  {
    const shown = await o.evaluate(() => ({
      status: document.getElementById('cancel-status').textContent,
      refunded: document.getElementById('cancel-refunded').textContent,
      meter: [document.getElementById('cancel-meter').value, document.getElementById('cancel-meter').max],
      reason: document.getElementById('cancel-reason-shown').textContent,
      banner: document.getElementById('cancelled-banner').hidden ? '' : document.getElementById('cancelled-banner').textContent.trim(),
      form: !document.getElementById('cancel-form').hidden,
    }));
    log(`   ${JSON.stringify(shown)}`);
    check(/^Finished/.test(shown.status) && shown.refunded === '1 of 1' && shown.meter[0] === 1 && shown.meter[1] === 1 && shown.reason === REASON && /cancelled/.test(shown.banner) && !shown.form,
      `the finished cancellation shows ${JSON.stringify(shown)}`);
    const progress = (await call('GET', `/v1/ops/events/${eventId}/cancel`, { token: await login(ADMIN_EMAIL, ADMIN_PASSWORD), expect: [200] })).data;
    check(progress.finished_at && progress.orders_total === 1 && progress.orders_refunded === 1 && progress.reason === REASON,
      `GET /v1/ops/events/${eventId}/cancel answered ${JSON.stringify(progress)}`);
  }
  await shot(o, '09-ops-cancelled.png');

  step('reloaded, the dashboard shows the cancellation at once, with no form');
  await o.reload();
  await waitFor(o, 'the finished progress shows after a reload, the banner on top', () =>
    document.getElementById('cancel-progress').dataset.finished === 'true' && !document.getElementById('cancel-progress').hidden &&
    document.getElementById('cancel-form').hidden && !document.getElementById('cancelled-banner').hidden, undefined, 30000);
  await shot(o, '10-ops-cancelled-reloaded.png');

  step('on a phone (390x844) the dashboard shows the cancellation too, without scrolling sideways');
  {
    const w = watch('operator (phone)', await (await phoneContext(browser)).newPage());
    await w.page.goto(`${BASE_URL}/ops/events/${eventId}`);
    await opsSignIn(w.page, ADMIN_EMAIL, ADMIN_PASSWORD);
    await waitFor(w.page, 'the finished progress shows on the phone', () =>
      document.getElementById('cancel-progress').dataset.finished === 'true' && !document.getElementById('cancel-progress').hidden, undefined, 30000);
    check(!(await w.page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth)), 'the dashboard scrolls sideways at 390 px');
    await w.page.locator('#cancel-card').scrollIntoViewIfNeeded();
    await shot(w.page, '11-ops-cancelled-390.png', { fullPage: false });
  }

  step("the fan's phone, reloaded: the order is refunded, every ticket void, both refunds with their credit notes");
  await p.reload();
  await waitFor(p, 'the order reads Refunded, with 2 refunds and no ticket valid', (sel) => {
    const li = document.querySelector(sel);
    return li && li.querySelector('.order-state').textContent === 'Refunded' && li.querySelectorAll('li.refund a.doc-link').length === 2 &&
      Array.from(li.querySelectorAll('li.ticket')).every((t) => t.dataset.state === 'void');
  }, item, 30000);
  const api2 = (await call('GET', `/v1/orders/${order.order_id}`, { token: fan.token, expect: [200] })).data;
  check(api2.state === 'refunded' && api2.refunds.length === 2 && api2.refunded_cents === firstBack + priceOf(second) && api2.tickets.every((t) => t.state === 'void'),
    `after the cancellation GET /v1/orders/${order.order_id} shows ${api2.state}, ${api2.refunded_cents} cents back, refunds ${JSON.stringify(api2.refunds.map((r) => [r.amount_cents, r.state, r.reason]))}`);
  await waitFor(p, "the fan's own refund reads Paid back (the page follows a refund's money by itself)", ([sel, id]) => {
    const r = document.querySelector(`${sel} li.refund[data-refund-id="${id}"]`);
    return r && r.dataset.state === 'succeeded' && r.querySelector('.refund-state').textContent === 'Paid back';
  }, [item, refund.refund_id], 45000);
  {
    const f = await orderFacts(p, item);
    log(`   ${JSON.stringify({ state: f.state, paidBack: f.paidBack, note: f.note, refunds: f.refunds.map((r) => [r.amount, r.badge, r.link]) })}`);
    const cancelled = f.refunds.find((r) => r.id !== refund.refund_id);
    check(cancelled && cancelled.amount === `${euros(priceOf(second))} back` && cancelled.text.includes(`The show is cancelled: “${REASON}”`),
      `the cancellation's refund shows as ${JSON.stringify(cancelled)}`);
    check(!f.refundOffered, 'a refunded order of a cancelled show still offers a refund');
    check(f.paidBack === euros(firstBack + priceOf(second)), `"Paid back" reads "${f.paidBack}"`);
    check(!f.sideways, '/orders scrolls sideways at 390 px');
  }
  await shot(p, '12-orders-refunded-390.png');

  for (const w of pages) check(!w.errors.length, `${w.name} threw: ${w.errors.join(' | ')}`);
}

run(main, { failureFile, reportOnPass: true });
