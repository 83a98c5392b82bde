// The door, in a real browser: a steward's phone at /checkin/{event_id} admitting
// tickets online, refusing a second entry, admitting offline, and finding the
// double entry when it syncs; the operator's Door card; the camera.
//
//   cd gateway/tests/browser && npm ci
//   BASE_URL=http://127.0.0.1:8080 ADMIN_EMAIL=admin@example.com ADMIN_PASSWORD=... \
//   SCREENSHOTS=/tmp/shots node door.mjs
//
// Setup goes through the REST API as the bootstrap admin: a venue, an event opened
// at once, a fan who buys 3 seats, a steward made door staff. The steward's phone
// (390x844) uses only the door page: ticket 1 typed into the manual field is
// admitted (green), then refused as already in through "Gate B" (red); offline,
// ticket 2 is admitted on the phone (its signature checked there) while "Gate A"
// admits it online through the API; back online the upload reveals the double
// entry. The operator (1280x900) sees it on the dashboard's Door card and makes a
// second steward door staff there, who was refused on the door page until then.
// That steward's phone runs in a second Chromium whose fake camera films ticket 3's
// QR code (a Y4M file made from the QR the API draws): the camera path admits it.
// Exit 0 when every step held, 1 otherwise.
//
// Optional: TIMEOUT_SECONDS (150), HEADFUL=1.

import {
  BASE_URL, ADMIN_EMAIL, ADMIN_PASSWORD, SCREENSHOTS, log, step, check, pages, watch, shot, run, beginOpenSale,
  failureFile, launch, withBrowser, phoneContext, desktopContext, waitFor, text, signInInPage, call, buySeats,
  makeStaff, scanCode, seatWords,
} from './lib.mjs';
import fs from 'node:fs/promises';
import path from 'node:path';

async function main() {
  const { admin, accounts: [fan, steward, steward2], eventId, eventName } = await beginOpenSale({
    venueName: 'Door Hall',
    eventName: 'Door Night',
    who: 'a fan and two stewards',
    accounts: ['doorfan', 'steward-b', 'steward-c'],
  });

  step('the fan buys 3 seats (REST)');
  const order = await buySeats(fan, eventId, 3);
  const [t1, t2, t3] = order.tickets;

  step('the admin makes the first steward door staff of the event (REST)');
  await makeStaff(admin, eventId, steward);

  await withBrowser(
    (browser) => scenario(browser, { admin, fan, steward, steward2, eventId, eventName, tickets: [t1, t2, t3] }),
    failureFile
  );
}

/** Types `code` into the door's manual field, presses Enter, and answers what the door shows. */
async function scanTyped(page, code) {
  const before = await page.evaluate(() => Number(document.getElementById('result').dataset.scan || 0));
  await page.fill('#manual-code', code);
  await page.press('#manual-code', 'Enter');
  return doorAnswer(page, before);
}

/** Waits for the door's answer to scan number `before + 1`, and answers it. */
async function doorAnswer(page, before, timeoutMs = 20000) {
  await waitFor(page, 'the door answers the scan', (b) => {
    const r = document.getElementById('result');
    return Number(r.dataset.scan || 0) > b && r.dataset.result !== 'checking';
  }, before, timeoutMs);
  return page.evaluate(() => {
    const r = document.getElementById('result');
    const t = (id) => document.getElementById(id).textContent.trim();
    return {
      result: r.dataset.result,
      tone: r.dataset.tone,
      offline: r.dataset.offline === 'true',
      title: t('result-title'),
      seat: t('result-seat'),
      detail: t('result-detail'),
      meta: t('result-meta'),
    };
  });
}

/** The status line's data: online, pending, keys, revocation list version. */
async function doorStatus(page) {
  return page.evaluate(() => ({ ...document.getElementById('door-status').dataset, text: document.getElementById('door-status').textContent }));
}

/**
 * A Y4M video (one 640x480 frame, repeated) of `svg` (a ticket's QR as the API draws
 * it) on white, rendered in `page`: what Chromium's fake camera plays.
 */
async function qrVideo(page, svg, file) {
  const W = 640;
  const H = 480;
  const luma = await page.evaluate(async ([svgText, w, h]) => {
    const url = URL.createObjectURL(new Blob([svgText], { type: 'image/svg+xml' }));
    const img = new Image();
    img.src = url;
    await img.decode();
    const c = document.createElement('canvas');
    c.width = w;
    c.height = h;
    const ctx = c.getContext('2d', { willReadFrequently: true });
    ctx.fillStyle = '#fff';
    ctx.fillRect(0, 0, w, h);
    const side = 420;
    ctx.drawImage(img, (w - side) / 2, (h - side) / 2, side, side);
    URL.revokeObjectURL(url);
    const px = ctx.getImageData(0, 0, w, h).data;
    const y = new Uint8Array(w * h);
    for (let i = 0; i < w * h; i++) y[i] = Math.round(0.299 * px[4 * i] + 0.587 * px[4 * i + 1] + 0.114 * px[4 * i + 2]);
    let bin = '';
    for (let i = 0; i < y.length; i += 0x8000) bin += String.fromCharCode(...y.subarray(i, i + 0x8000));
    return btoa(bin);
  }, [svg, W, H]);
  const y = Buffer.from(luma, 'base64');
  check(y.length === W * H, `the QR frame has ${y.length} luma bytes, wanted ${W * H}`);
  const chroma = Buffer.alloc((W / 2) * (H / 2), 128); // grey: no colour
  const frame = Buffer.concat([Buffer.from('FRAME\n'), y, chroma, chroma]);
  await fs.writeFile(file, Buffer.concat([Buffer.from(`YUV4MPEG2 W${W} H${H} F10:1 Ip A1:1 C420jpeg\n`), frame, frame, frame]));
}

async function scenario(browser, { admin, fan, steward, steward2, eventId, tickets }) {
  const [t1, t2, t3] = tickets;
  const phone = await phoneContext(browser);
  const desktop = await desktopContext(browser);
  const s = watch('steward (phone)', await phone.newPage());
  const o = watch('operator (desktop)', await desktop.newPage());
  const door = s.page;
  const ops = o.page;
  const doorUrl = `${BASE_URL}/checkin/${eventId}`;

  step('the steward (390x844) opens the door page, signs in and names the door "Gate B"');
  await door.goto(doorUrl);
  await signInInPage(door, steward.email, steward.password);
  await waitFor(door, 'the door shows, online, with the event\'s keys downloaded', () => {
    const st = document.getElementById('door-status');
    return !document.getElementById('door').hidden && st.dataset.online === 'true' && Number(st.dataset.keys) >= 1;
  }, undefined, 30000);
  await door.fill('#device-name', 'Gate B');
  check(await door.isChecked('#direction-entry'), 'the door does not start on "Entry"');
  log(`   status: ${(await doorStatus(door)).text}`);

  step(`ticket 1 (${t1.seat_id}) typed into the manual field is admitted: a green panel with the seat`);
  const a1 = await scanTyped(door, t1.code);
  log(`   ${JSON.stringify(a1)}`);
  check(a1.result === 'admitted' && a1.tone === 'ok' && !a1.offline, `the first scan of ticket 1 shows ${JSON.stringify(a1)}, wanted admitted online`);
  check(a1.seat === seatWords(t1.seat_id), `the green panel shows the seat "${a1.seat}", wanted "${seatWords(t1.seat_id)}"`);
  await waitFor(door, 'screen readers are told (#say-status, role=status)', (seat) => {
    const said = document.getElementById('say-status').textContent;
    return said.startsWith('Admitted') && said.includes(seat);
  }, t1.seat_id.split('-')[0]);
  await shot(door, '01-admitted.png');

  step('the same code again is refused: already in, at a time, through Gate B');
  const a2 = await scanTyped(door, t1.code);
  log(`   ${JSON.stringify(a2)}`);
  check(a2.result === 'already_in' && a2.tone === 'bad', `the second scan of ticket 1 shows ${JSON.stringify(a2)}, wanted already_in`);
  check(/ at \d{1,2}:\d{2}/.test(a2.detail) && /through Gate B/.test(a2.detail), `the red panel says "${a2.detail}", wanted "at <time> through Gate B"`);
  await waitFor(door, 'the refusal is announced (#say-alert, role=alert)', () => document.getElementById('say-alert').textContent.startsWith('Already in'));
  await shot(door, '02-already-in.png');

  step(`offline: ticket 2 (${t2.seat_id}) is admitted on the phone, its signature checked there`);
  await phone.setOffline(true);
  await waitFor(door, 'the door knows it is offline', () => document.getElementById('door-status').dataset.online === 'false');
  const a3 = await scanTyped(door, t2.code);
  log(`   ${JSON.stringify(a3)}`);
  check(a3.result === 'admitted' && a3.offline, `ticket 2 offline shows ${JSON.stringify(a3)}, wanted admitted on the phone`);
  check(a3.seat === seatWords(t2.seat_id), `the offline green panel shows "${a3.seat}"`);
  await waitFor(door, '1 scan waits for the upload, and the banner says so', () => {
    const banner = document.getElementById('door-banner');
    return document.getElementById('door-status').dataset.pending === '1' && !banner.hidden &&
      banner.textContent.includes('Offline — 1 scan waiting to upload; signatures checked on this phone');
  });
  log('   meanwhile "Gate A" admits ticket 2 online, through the API');
  const gateA = await scanCode(steward, eventId, t2.code, { device: 'Gate A' });
  check(gateA.result === 'admitted', `Gate A's scan of ticket 2 answered ${JSON.stringify(gateA)}, wanted admitted`);
  await shot(door, '03-offline.png');
  {
    const forged = t3.code.replace(/\.([A-Za-z0-9_-]+)$/, (m, sig) => {
      const i = Math.floor(sig.length / 2);
      return `.${sig.slice(0, i)}${sig[i] === 'A' ? 'B' : 'A'}${sig.slice(i + 1)}`;
    });
    const bad = await scanTyped(door, forged);
    log(`   a forged code offline: ${JSON.stringify(bad)}`);
    check(bad.result === 'invalid' && bad.tone === 'bad' && /signature/i.test(bad.detail) && !bad.seat, `a forged code offline shows ${JSON.stringify(bad)}, wanted invalid`);
    check((await doorStatus(door)).pending === '1', 'a refused offline scan was queued for the upload');
    await door.fill('#manual-code', t2.code);
    await door.press('#manual-code', 'Enter');
    const again = await doorAnswer(door, await door.evaluate(() => Number(document.getElementById('result').dataset.scan) - 1));
    check(again.result === 'already_in' && /through Gate B/.test(again.detail), `ticket 2 again offline shows ${JSON.stringify(again)}, wanted already in through Gate B`);
    check((await doorStatus(door)).pending === '1', 'a refused offline scan was queued for the upload');
  }

  step('back online: the phone uploads its scan and shows the double entry in "Conflicts"');
  await phone.setOffline(false);
  await waitFor(door, 'the upload is done (nothing waiting) and the conflict is listed', (tid) => {
    const st = document.getElementById('door-status');
    return st.dataset.online === 'true' && st.dataset.pending === '0' && !!document.querySelector(`#conflicts li[data-ticket-id="${tid}"]`);
  }, t2.ticket_id, 45000);
  {
    const said = await text(door, `#conflicts li[data-ticket-id="${t2.ticket_id}"]`);
    log(`   "${said}"`);
    check(said.includes(`Ticket ${t2.seat_id} was admitted twice`) && /offline/.test(said) && /at Gate A/.test(said),
      `the conflict reads "${said}"`);
    check(await door.locator('#door-banner').isHidden(), 'the offline banner still shows after the upload');
    check(await door.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), 'the door page scrolls sideways at 390 px');
  }
  await shot(door, '04-conflict.png');

  step('the conflict stays listed after a reload');
  await door.reload();
  await waitFor(door, 'the conflict is still listed', (tid) => !!document.querySelector(`#conflicts li[data-ticket-id="${tid}"]`), t2.ticket_id);

  const camera = await launchCamera(ops, fan, t3);
  try {
    const cctx = await phoneContext(camera.browser);
    await cctx.grantPermissions(['camera'], { origin: BASE_URL });
    const c = watch('steward 2 (phone, camera)', await cctx.newPage());
    const cam = c.page;

    step('a second steward, not door staff yet, is told so on the door page');
    await cam.goto(doorUrl);
    await signInInPage(cam, steward2.email, steward2.password);
    await waitFor(cam, 'the page says the account is not door staff', () => !document.getElementById('not-staff').hidden, undefined, 30000);
    {
      const said = await text(cam, '#not-staff');
      check(/not door staff for this event; ask an operator/.test(said), `#not-staff says "${said}"`);
      await waitFor(cam, 'the page shows the user id to give the operator', (id) => document.getElementById('not-staff-id').textContent === id, steward2.userId);
      check(await cam.locator('#door').isHidden(), 'the door shows to someone who is not door staff');
    }
    await shot(cam, '05-not-staff.png');

    step('the operator (1280x900) sees the door on the dashboard, and makes the second steward door staff there');
    await ops.goto(`${BASE_URL}/ops/events/${eventId}`);
    await ops.fill('#ops-email', ADMIN_EMAIL);
    await ops.fill('#ops-password', ADMIN_PASSWORD);
    await ops.click('#ops-signin-button');
    await waitFor(ops, 'the Door card shows 2 inside of 3 sold, and the double entry of ticket 2', (tid) => {
      const v = (id) => document.getElementById(id).dataset.value;
      return v('door-inside') === '2' && v('door-sold') === '3' &&
        !!document.querySelector(`#door-conflicts tr[data-ticket-id="${tid}"][data-kind="double_entry"]`);
    }, t2.ticket_id, 30000);
    {
      const row = await text(ops, `#door-conflicts tr[data-ticket-id="${t2.ticket_id}"]`);
      log(`   conflict row: "${row.replace(/\s+/g, ' ')}"`);
      check(/Gate B/.test(row) && /Gate A/.test(row), `the conflict row reads "${row}", wanted both doors`);
      const floor = await ops.evaluate(() => {
        const tr = document.querySelector('#door-sections tr[data-section]');
        return tr ? `${tr.dataset.section}: ${tr.dataset.checkedIn}/${tr.dataset.sold}` : '';
      });
      log(`   per section: ${floor}`);
      check(floor, 'the Door card shows no section');
      const link = await ops.getAttribute('#door-link', 'href');
      check(link === `/checkin/${eventId}`, `the Door card links to ${link}`);
    }
    await ops.fill('#staff-user', steward2.userId);
    await ops.click('#staff-add');
    await waitFor(ops, 'the Door card says the steward is door staff', () => {
      const m = document.getElementById('staff-message');
      return m.dataset.kind === 'ok' || m.dataset.kind === 'error';
    });
    check((await ops.evaluate(() => document.getElementById('staff-message').dataset.kind)) === 'ok', `adding door staff: ${await text(ops, '#staff-message')}`);
    await ops.locator('#door-card').scrollIntoViewIfNeeded();
    await shot(ops, '06-ops-door.png');

    step('the second steward checks again ("Check again"), names the door "Gate C" and scans ticket 3 with the camera');
    /* the page also asks again by itself every few seconds: click only if it has not yet */
    await cam.evaluate(() => {
      const retry = document.getElementById('not-staff-retry');
      if (retry.offsetParent) retry.click();
    });
    await waitFor(cam, 'the door shows, with the keys', () => !document.getElementById('door').hidden && Number(document.getElementById('door-status').dataset.keys) >= 1, undefined, 30000);
    await cam.fill('#device-name', 'Gate C');
    const before = await cam.evaluate(() => Number(document.getElementById('result').dataset.scan || 0));
    await cam.click('#camera-toggle');
    await waitFor(cam, 'the camera runs', () => {
      const box = document.querySelector('.camera');
      return box.dataset.state === 'running' || box.dataset.state === 'error';
    }, undefined, 20000);
    const camState = await cam.evaluate(() => ({ state: document.querySelector('.camera').dataset.state, said: document.getElementById('camera-message').textContent }));
    check(camState.state === 'running', `the camera did not start: ${camState.said}`);
    log(`   ${camState.said}`);
    const seen = await doorAnswer(cam, before, 30000);
    log(`   ${JSON.stringify(seen)}`);
    check(seen.result === 'admitted' && seen.seat === seatWords(t3.seat_id) && !seen.offline,
      `the camera's scan of ticket 3 shows ${JSON.stringify(seen)}, wanted ${t3.seat_id} admitted`);
    await shot(cam, '07-camera.png');
    const recorded = await scanCode(steward, eventId, t3.code, { device: 'Gate A' });
    check(recorded.result === 'already_in' && recorded.first_device_id === 'Gate C',
      `after the camera's scan the API says ${JSON.stringify(recorded)}, wanted already in through Gate C`);
    await cam.click('#camera-toggle');
    await waitFor(ops, 'the Door card shows 3 inside', () => document.getElementById('door-inside').dataset.value === '3', undefined, 15000);
  } finally {
    await camera.browser.close().catch(() => {});
  }

  for (const w of pages) check(!w.errors.length, `${w.name} threw: ${w.errors.join(' | ')}`);
}

/**
 * A second Chromium whose fake camera films ticket `t`'s QR code: the QR as the
 * API draws it (GET /v1/tickets/{id}/qr.svg, as its fan), rendered in `page` into
 * a Y4M file that --use-file-for-fake-video-capture plays.
 */
async function launchCamera(page, fan, t) {
  step(`a second browser starts, its fake camera filming the QR code of ticket 3 (${t.seat_id})`);
  const svg = await call('GET', `/v1/tickets/${t.ticket_id}/qr.svg`, { token: fan.token, expect: [200] });
  check(typeof svg.data === 'string' && svg.data.includes('<svg'), `qr.svg answered ${String(svg.data).slice(0, 200)}`);
  check(/image\/svg\+xml/.test(svg.headers.get('content-type') || ''), `qr.svg's content type is ${svg.headers.get('content-type')}`);
  if (page.url() === 'about:blank') await page.goto(`${BASE_URL}/`);
  const file = path.join(SCREENSHOTS, 'ticket-3-qr.y4m');
  await qrVideo(page, svg.data, file);
  const browser = await launch([
    '--use-fake-ui-for-media-stream',
    '--use-fake-device-for-media-stream',
    `--use-file-for-fake-video-capture=${file}`,
  ]);
  return { browser };
}

run(main, { failureFile, reportOnPass: true });
