// The operator's dashboard, in a real browser, beside a fan's waiting room.
//
//   cd gateway/tests/browser && npm ci
//   BASE_URL=http://127.0.0.1:8080 ADMIN_EMAIL=admin@example.com ADMIN_PASSWORD=... \
//   SCREENSHOTS=/tmp/shots node ops.mjs
//
// Setup goes through the REST API as the bootstrap admin (a venue, an event on sale
// a few seconds later at 2 admissions a second). The sale itself is driven by the
// load generator (`loadgen sale`, path in LOADGEN): its fans arrive in waves, join,
// and pay for, decline or let run out their holds while the operator watches.
// The operator (1280x900) uses only /ops/events/{event_id}; one fan (390x844) uses
// only /e/{event_id}. Debian's chromium is driven by playwright-core (CHROMIUM
// overrides its path). Exit 0 when every step held, 1 otherwise.
//
// Needs a gateway with a booking worker, the draw scheduler and the per-second stats
// sampler running, and LOADGEN (the loadgen binary). Optional: TIMEOUT_SECONDS (150),
// ONSALE_DELAY_SECONDS (5), FANS (30: the load generator's fans), PAYERS_PER_10 (6:
// of every 10 of its fans, how many pay, so sales and the Payments panel move; with
// 0 the "#stat-paid reaches 1" step is skipped), HEADFUL=1.

import {
  BASE_URL, ADMIN_EMAIL, ADMIN_PASSWORD, TIMEOUT_S, createSale, log, step, check, pages, watch, shot, run, begin, withBrowser,
  phoneContext, desktopContext, waitFor, text, visible, registerInPage, opsSignIn, call, login, registerFan, pool,
  failureFile,
} from './lib.mjs';
import crypto from 'node:crypto';
import { spawn } from 'node:child_process';

const ONSALE_DELAY_S = Number(process.env.ONSALE_DELAY_SECONDS || 5);
const FANS = Number(process.env.FANS || 30);
const PAYERS_PER_10 = Number(process.env.PAYERS_PER_10 ?? 6);
const LOADGEN = process.env.LOADGEN;

/**
 * The load generator's simulated sale on `eventId`, as a child process. Its progress
 * lines (`sale: joined 12/30 held 4 paid 2 ...`, one a second) are parsed as they
 * come; `until(field, n)` waits for a figure, `stop()` ends it (SIGTERM) and resolves
 * with its JSON summary.
 */
function startLoadgen(eventId) {
  check(LOADGEN, 'set LOADGEN to the loadgen binary (the Rust harness does)');
  const args = ['sale', '--gateway', BASE_URL, '--event', eventId, '--fans', String(FANS),
    '--payers-per-10', String(PAYERS_PER_10), '--wave', '5', '--wave-ms', '700', '--seconds', String(TIMEOUT_S)];
  log(`   ${LOADGEN} ${args.join(' ')}`);
  const child = spawn(LOADGEN, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: 'warn' } });
  const figures = { joined: 0, held: 0, paid: 0, declined: 0, ended: 0, refused: 0, errors: 0 };
  let out = '';
  let err = '';
  let exited = null;
  const waiters = new Set();
  const wake = () => { for (const w of Array.from(waiters)) w(); };
  child.stdout.on('data', (chunk) => {
    out += chunk;
    const lines = out.split('\n');
    out = lines.pop();
    for (const line of lines) {
      const m = /^sale: joined (\d+)\/\d+ held (\d+) paid (\d+) declined (\d+) ended (\d+) refused (\d+) errors (\d+)/.exec(line);
      if (m) {
        [figures.joined, figures.held, figures.paid, figures.declined, figures.ended, figures.refused, figures.errors] = m.slice(1).map(Number);
      } else {
        summary.push(line);
      }
    }
    wake();
  });
  child.stderr.on('data', (chunk) => { err += chunk; });
  const summary = [];
  const done = new Promise((resolve) => child.on('exit', (code, signal) => { exited = { code, signal }; wake(); resolve(); }));
  return {
    figures,
    async until(field, atLeast, timeoutMs = 30000) {
      const deadline = Date.now() + timeoutMs;
      while (figures[field] < atLeast) {
        check(!exited, `loadgen sale exited (${JSON.stringify(exited)}) with ${field} ${figures[field]} < ${atLeast}: ${err.slice(-2000)}`);
        check(Date.now() < deadline, `loadgen sale: ${field} stayed at ${figures[field]} (< ${atLeast}) for ${timeoutMs} ms; stderr: ${err.slice(-2000)}`);
        await new Promise((resolve) => { const w = () => { waiters.delete(w); resolve(); }; waiters.add(w); setTimeout(w, 500); });
      }
    },
    async stop() {
      if (!exited) child.kill('SIGTERM');
      await done;
      check(figures.errors === 0, `loadgen sale's fans met errors: ${err.slice(-2000)}`);
      return summary.join('\n');
    },
  };
}

/** A figure's raw value (data-value), or null when the page shows none. */
async function figure(page, id) {
  return page.evaluate((i) => {
    const v = document.getElementById(i).dataset.value;
    return v === '' || v === undefined ? null : Number(v);
  }, id);
}

/** Opens the confirmation step with `open`, checks what it says, and confirms. */
async function confirmStep(page, open, expectText) {
  await open();
  await waitFor(page, 'the confirmation dialog opens (#confirm-dialog)', () => document.getElementById('confirm-dialog').open);
  const said = `${await text(page, '#confirm-title')} ${await text(page, '#confirm-text')}`;
  if (expectText) check(expectText.test(said), `the confirmation says "${said}", wanted ${expectText}`);
  log(`   the dialog asks: "${said}"`);
  await page.click('#confirm-yes');
  await waitFor(page, 'the confirmation dialog closes', () => !document.getElementById('confirm-dialog').open);
  return said;
}

async function opsState(page) {
  return page.evaluate(() => document.getElementById('ops-state').dataset.state);
}

// ---------------------------------------------------------------------------

async function main() {
  await begin();

  step('the admin signs in (REST)');
  const admin = await login(ADMIN_EMAIL, ADMIN_PASSWORD);

  step('two bystander fans register and sign in, for the refusals (REST)');
  const fans = await pool([1, 2], 2, (i) => registerFan(i, 'opsfan'));

  await withBrowser((browser) => scenario(browser, admin, fans), failureFile);
}

async function scenario(browser, admin, fans) {
  const phone = await phoneContext(browser);
  const desktop = await desktopContext(browser);
  const f = watch('fan (phone)', await phone.newPage());
  const o = watch('operator (desktop)', await desktop.newPage());
  const fan = f.page;
  const ops = o.page;

  step('the fan (390x844) registers on the home page, before the event exists');
  await fan.goto(`${BASE_URL}/`);
  await registerInPage(fan, 'ops-fan');

  step(`the admin creates a venue and an event on sale in ${ONSALE_DELAY_S} s at 2 admissions a second (REST)`);
  const { eventId, eventName, onsaleAt } = await createSale(admin, {
    venueName: 'Harbour Hall',
    eventName: 'Ops Night',
    onsaleDelayS: ONSALE_DELAY_S,
  });
  const opsUrl = `${BASE_URL}/ops/events/${eventId}`;

  step(`the load generator's ${FANS} fans arrive in waves and join, 1 seat each (loadgen sale)`);
  const sale = startLoadgen(eventId);
  try {
    await sale.until('joined', Math.min(10, FANS));
    log(`   ${sale.figures.joined} joined so far, ${sale.figures.refused} refused`);
    const evNow = (await call('GET', `/v1/events/${eventId}`, { expect: [200] })).data;
    if (evNow.admission_per_second !== 2) {
      log(`   admission is ${evNow.admission_per_second}/s; setting 2/s`);
      await call('PUT', `/v1/ops/events/${eventId}/admission`, { token: admin, key: crypto.randomUUID(), body: { per_second: 2 }, expect: [200] });
    }
    await dashboardScenario({ ops, fan, admin, fans, eventId, eventName, opsUrl, onsaleAt, sale });
  } finally {
    const summary = await sale.stop();
    log(`   loadgen sale: ${JSON.stringify(sale.figures)}`);
    log(summary.split('\n').map((l) => `   | ${l}`).join('\n'));
  }

  for (const w of pages) check(!w.errors.length, `${w.name} threw: ${w.errors.join(' | ')}`);
}

async function dashboardScenario({ ops, fan, admin, fans, eventId, eventName, opsUrl, onsaleAt, sale }) {
  step('the operator (1280x900) opens the dashboard and signs in through #ops-signin');
  await ops.goto(opsUrl);
  check(!(await visible(ops, '#dashboard')), 'the dashboard shows before anyone signed in');
  await opsSignIn(ops, ADMIN_EMAIL, ADMIN_PASSWORD);
  await waitFor(
    ops,
    `the dashboard of "${eventName}" shows, signed in as ${ADMIN_EMAIL}`,
    ([name, mail]) => {
      const msg = document.getElementById('ops-signin-message');
      if (msg && msg.dataset.kind === 'error' && msg.textContent) return true; // fail fast below
      const dash = document.getElementById('dashboard');
      return (
        dash && !dash.hidden &&
        document.getElementById('ops-title').textContent === name &&
        document.getElementById('signed-in-as').textContent === mail
      );
    },
    [eventName, ADMIN_EMAIL],
    30000
  );
  {
    const error = await ops.evaluate(() => {
      const msg = document.getElementById('ops-signin-message');
      return msg && msg.dataset.kind === 'error' ? msg.textContent : '';
    });
    check(!error, `the admin could not sign in on the dashboard: ${error}`);
  }
  check(!(await visible(ops, '#ops-signin')), 'the sign-in box is still shown after signing in');
  await waitFor(ops, 'the live connection is up (#connection data-state=live)', () => document.getElementById('connection').dataset.state === 'live');
  await waitFor(ops, '#stat-rate shows the 2 admissions a second the event was created with', () => document.getElementById('stat-rate').textContent.trim() === '2');
  log(`   #ops-state: ${await opsState(ops)} ("${await text(ops, '#ops-state')}")`);

  step('the sale opens: the dashboard says so');
  const untilOpen = Math.max(0, onsaleAt.getTime() - Date.now()) + 30000;
  await waitFor(ops, '#ops-state data-state=open', () => document.getElementById('ops-state').dataset.state === 'open', undefined, untilOpen);
  await waitFor(ops, '#lever-pause is enabled and #lever-resume is not', () =>
    !document.getElementById('lever-pause').disabled && document.getElementById('lever-resume').disabled && document.getElementById('lever-open').disabled
  );
  log(`   "${await text(ops, '#ops-state')}"`);

  step('the fan (390x844) joins after the draw, behind the drawn cohort');
  await fan.goto(`${BASE_URL}/e/${eventId}`);
  await waitFor(fan, "the fan's page shows the event's name", (n) => document.getElementById('event-name').textContent === n, eventName);
  await waitFor(fan, 'the fan sees the sale open', () => document.getElementById('sale-state').dataset.state === 'open');
  await waitFor(fan, 'the join form is shown', () => !document.getElementById('join').hidden);
  await fan.check('#mode-best');
  await fan.fill('#best-quantity', '1');
  await fan.click('#join-button');
  await waitFor(
    fan,
    'the fan sees a place in line (#position shows a number)',
    () => {
      const stats = document.getElementById('line-stats');
      return stats && !stats.hidden && /\d/.test(document.getElementById('position').textContent);
    },
    undefined,
    20000
  );
  log(`   the fan is in line: #position ${await text(fan, '#position')}, #eta "${await text(fan, '#eta')}"`);

  step('the figures move while the booking worker drains the line at 2 a second');
  await waitFor(ops, '#stat-served and #stat-queue show numbers', () =>
    ['stat-served', 'stat-queue'].every((id) => document.getElementById(id).dataset.value !== '')
  );
  const served0 = await figure(ops, 'stat-served');
  const queue0 = await figure(ops, 'stat-queue');
  log(`   now: #stat-served ${served0}, #stat-queue ${queue0}`);
  check(queue0 > 0, `#stat-queue is ${queue0} with ${sale.figures.joined + 1} fans in line`);
  await waitFor(
    ops,
    `#stat-served grows past ${served0} and #stat-queue falls below ${queue0}`,
    ([s0, q0]) => {
      const v = (id) => Number(document.getElementById(id).dataset.value);
      return v('stat-served') > s0 && v('stat-queue') < q0;
    },
    [served0, queue0],
    20000
  );
  await waitFor(ops, '#stat-admitted shows admissions (> 0 a second)', () => Number(document.getElementById('stat-admitted').dataset.value) > 0, undefined, 20000);
  await waitFor(ops, '#stat-holds shows holds being made', () => Number(document.getElementById('stat-holds').dataset.value) > 0, undefined, 20000);
  await waitFor(ops, '#stat-eta shows the expected wait', () => /^\d+:\d{2}/.test(document.getElementById('stat-eta').textContent.trim()));
  await waitFor(ops, 'available + held + sold is the 50 seats', () => {
    const v = (id) => Number(document.getElementById(id).dataset.value);
    return v('stat-available') + v('stat-held') + v('stat-sold') === 50;
  });
  await waitFor(ops, 'the charts draw lines from the sampled seconds', () =>
    ['#chart-queue path[data-series="queue"]', '#chart-rates path[data-series="admitted"]', '#chart-rates path[data-series="arrivals"]', '#chart-sales path[data-series="held"]'].every((sel) => {
      const p = document.querySelector(sel);
      return p && Number(p.dataset.points) >= 2;
    })
  );
  for (const id of ['chart-queue', 'chart-rates', 'chart-sales']) {
    const label = await ops.evaluate((i) => {
      const svg = document.querySelector(`#${i} svg`);
      return svg && svg.getAttribute('role') === 'img' ? svg.querySelector('desc').textContent : '';
    }, id);
    check(label, `#${id} has no text alternative`);
    log(`   #${id}: ${label}`);
  }
  await waitFor(ops, '#sections lists the Floor (30 seats) and the Balcony (20 seats)', () => {
    const row = (s) => document.querySelector(`#sections tr[data-section="${s}"]`);
    return row('Floor') && row('Balcony') && row('Floor').dataset.total === '30' && row('Balcony').dataset.total === '20';
  });
  {
    const sections = await ops.evaluate(() =>
      Array.from(document.querySelectorAll('#sections tr[data-section]')).map((r) => `${r.dataset.section}: ${r.dataset.available} left, ${r.dataset.held} held, ${r.dataset.sold} sold`)
    );
    log(`   #sections: ${sections.join('; ')}`);
  }

  step('the farm and payments panels: the booking worker, no dead letters, the orders');
  await waitFor(ops, '#stat-workers lists at least one booking worker (a row with data-worker)', () => document.querySelectorAll('#stat-workers tr[data-worker]').length >= 1, undefined, 20000);
  await waitFor(ops, '#stat-dead-letters and #stat-paid show numbers', () =>
    ['stat-dead-letters', 'stat-paid'].every((id) => document.getElementById(id).dataset.value !== '')
  );
  {
    const dead = await ops.evaluate(() => document.getElementById('stat-dead-letters').dataset.value);
    check(dead === '0', `#stat-dead-letters data-value is "${dead}", wanted "0": entries of the line were set aside`);
    const paid = await figure(ops, 'stat-paid');
    check(Number.isInteger(paid) && paid >= 0, `#stat-paid data-value is ${paid}, wanted a whole number ≥ 0`);
    const workers = await ops.evaluate(() =>
      Array.from(document.querySelectorAll('#stat-workers tr[data-worker]')).map((r) => `${r.dataset.worker} (pending ${r.dataset.pending}, idle ${r.dataset.idleMs} ms)`)
    );
    log(`   #stat-workers: ${workers.join('; ')}`);
    const shown = {};
    for (const id of ['line-lag', 'line-pending', 'dead-letters', 'paid', 'declined', 'pending-orders', 'refunded', 'revenue', 'outbox', 'outbox-lag']) {
      shown[id] = await text(ops, `#stat-${id}`);
    }
    log(`   ${Object.entries(shown).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  }

  const figures = {};
  for (const id of ['queue', 'served', 'arrivals', 'admitted', 'rate', 'eta', 'holds', 'sold', 'available']) {
    figures[id] = await text(ops, `#stat-${id}`);
  }
  log(`   figures: ${Object.entries(figures).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  await shot(ops, '01-dashboard.png');

  step('the operator pauses the sale (#lever-pause, then confirms)');
  check(
    (await fan.evaluate(() => window.onsaleState.request.state)) === 'queued',
    'the fan left the line before the pause; the line drained faster than expected'
  );
  await confirmStep(ops, () => ops.click('#lever-pause'), /Pause the sale\?.*Fans keep their place; nobody is admitted until you resume/);
  await waitFor(ops, '#ops-state data-state=paused', () => document.getElementById('ops-state').dataset.state === 'paused');
  await waitFor(ops, '#lever-message says the sale is paused', () => {
    const m = document.getElementById('lever-message');
    return m.dataset.kind === 'ok' && /paused/i.test(m.textContent);
  });
  check(!(await ops.isDisabled('#lever-resume')) && (await ops.isDisabled('#lever-pause')), 'after the pause, Resume must be enabled and Pause not');
  await waitFor(ops, '#stat-eta shows no wait while paused', () => document.getElementById('stat-eta').dataset.value === '');
  log(`   "${await text(ops, '#ops-state')}"; #lever-message "${await text(ops, '#lever-message')}"`);

  await waitFor(fan, 'the fan sees the paused banner', () => {
    const el = document.getElementById('sale-state');
    return el.dataset.state === 'paused' && /paused/i.test(el.textContent);
  });
  {
    const s = await fan.evaluate(() => window.onsaleState.request.state);
    check(s === 'queued', `the fan was ${s} when the pause landed, not in line`);
    check(await visible(fan, '#position'), "the fan's #position is not visible while paused");
    const shown = await text(fan, '#position');
    check(/^\d[\d,.\s]*$/.test(shown), `the fan's #position shows "${shown}" while paused, not a number`);
    log(`   the fan sees "${await text(fan, '#sale-state')}" and still #position ${shown}`);
  }
  await shot(ops, '02-paused.png');
  await shot(fan, '02-paused-fan.png');

  step('the operator sets the admission rate to 5 (#rate-input, #rate-button, then confirms)');
  await ops.fill('#rate-input', '5');
  await confirmStep(ops, () => ops.click('#rate-button'), /admission rate.*From 2 to 5/is);
  await waitFor(ops, '#stat-rate shows 5', () => document.getElementById('stat-rate').textContent.trim() === '5');
  await waitFor(ops, '#lever-message says the rate is 5', () => {
    const m = document.getElementById('lever-message');
    return m.dataset.kind === 'ok' && /\b5\b/.test(m.textContent);
  });
  log(`   #lever-message "${await text(ops, '#lever-message')}"`);

  step('an invalid rate (0) gets a clear message in the form and changes nothing');
  await ops.fill('#rate-input', '0');
  await ops.click('#rate-button');
  await waitFor(ops, '#rate-error explains the rate', () => document.getElementById('rate-error').textContent.trim() !== '');
  {
    const msg = await text(ops, '#rate-error');
    check(/at least 1/i.test(msg), `#rate-error says "${msg}"`);
    check(!(await ops.evaluate(() => document.getElementById('confirm-dialog').open)), 'an invalid rate opened the confirmation');
    check((await ops.getAttribute('#rate-input', 'aria-invalid')) === 'true', '#rate-input is not marked aria-invalid');
    check((await text(ops, '#stat-rate')) === '5', `#stat-rate changed to ${await text(ops, '#stat-rate')}`);
    log(`   #rate-error "${msg}"; #stat-rate still 5`);
  }

  step('the operator resumes the sale (#lever-resume, then confirms)');
  await confirmStep(ops, () => ops.click('#lever-resume'), /Resume the sale\?/);
  await waitFor(ops, '#ops-state data-state=open', () => document.getElementById('ops-state').dataset.state === 'open');
  await waitFor(fan, 'the fan sees the sale open again', () => document.getElementById('sale-state').dataset.state === 'open');
  log(`   "${await text(ops, '#ops-state')}"`);

  step('the audit log lists resume, admission and pause, newest first, by the admin');
  await waitFor(
    ops,
    '#audit starts with resume, admission, pause, each by the admin',
    (mail) => {
      const rows = Array.from(document.querySelectorAll('#audit tbody tr')).slice(0, 3);
      return (
        rows.map((r) => r.dataset.action).join(',') === 'resume,admission,pause' &&
        rows.every((r) => r.textContent.includes(mail))
      );
    },
    ADMIN_EMAIL,
    15000
  );
  {
    const rows = await ops.evaluate(() =>
      Array.from(document.querySelectorAll('#audit tbody tr')).map((r) => Array.from(r.cells).map((c) => c.textContent.trim()).join(' | '))
    );
    for (const r of rows) log(`   ${r}`);
    check(/2\s*→\s*5/.test(rows[1]), `the admission row says "${rows[1]}", wanted 2 → 5`);
    check(/open\s*→\s*paused/.test(rows[2]), `the pause row says "${rows[2]}", wanted open → paused`);
    check(/paused\s*→\s*open/.test(rows[0]), `the resume row says "${rows[0]}", wanted paused → open`);
  }
  await ops.evaluate(() => window.scrollTo(0, 0)); // the levers' card is sticky: photograph it in place
  await shot(ops, '03-audit.png');

  step('the API stays the judge: a Resume forced while open is refused, and the page says why');
  await confirmStep(ops, () =>
    ops.evaluate(() => {
      const b = document.getElementById('lever-resume');
      b.disabled = false;
      b.click();
    })
  );
  await waitFor(ops, '#lever-message shows the refusal', () => document.getElementById('lever-message').dataset.kind === 'error');
  {
    const msg = await text(ops, '#lever-message');
    check(/409/.test(msg) && /invalid_transition/.test(msg), `#lever-message says "${msg}", wanted 409 invalid_transition`);
    check((await opsState(ops)) === 'open', `the sale is ${await opsState(ops)} after a refused lever`);
    log(`   #lever-message "${msg}"`);
  }

  step("a fan's token gets 403 from the operators' API");
  {
    const r = await call('GET', `/v1/ops/events/${eventId}/stats`, { token: fans[0].token });
    check(r.status === 403, `GET /v1/ops/events/{id}/stats with a fan's token answered ${r.status}, wanted 403`);
    const a = await call('GET', `/v1/ops/events/${eventId}/stats`, { token: admin, expect: [200] });
    log(`   fan: 403 ${r.data && r.data.code}; the admin: 200, state ${a.data.state}, rate ${a.data.admission_per_second}`);
    check(a.data.admission_per_second === 5, `the API says the rate is ${a.data.admission_per_second}, wanted 5`);
  }

  step('a fan who signs in on the dashboard is told the page is for operators');
  {
    const ctx = await desktopContext(ops.context().browser());
    const w = watch('fan on /ops (desktop)', await ctx.newPage());
    await w.page.goto(`${BASE_URL}/ops/events/${eventId}`);
    await opsSignIn(w.page, fans[1].email, fans[1].password);
    await waitFor(w.page, '#ops-forbidden is shown', () => !document.getElementById('ops-forbidden').hidden, undefined, 20000);
    const said = await text(w.page, '#ops-forbidden');
    check(/for operators/i.test(said), `#ops-forbidden says "${said}"`);
    check(!(await visible(w.page, '#dashboard')), 'a fan sees the dashboard');
    log(`   "${said.replace(/\s+/g, ' ').slice(0, 120)}…"`);
    await shot(w.page, '04-fan-refused.png');
  }

  if (PAYERS_PER_10 > 0) {
    step(`the load generator's payments show: #stat-paid reaches at least 1 (and at least the ${sale.figures.paid} its fans paid so far)`);
    await waitFor(
      ops,
      '#stat-paid counts the paid orders',
      (atLeast) => Number(document.getElementById('stat-paid').dataset.value) >= atLeast,
      Math.max(1, sale.figures.paid),
      30000
    );
    log(`   #stat-paid ${await text(ops, '#stat-paid')}, #stat-revenue ${await text(ops, '#stat-revenue')}, #stat-outbox ${await text(ops, '#stat-outbox')} (oldest ${await text(ops, '#stat-outbox-lag')})`);
  }

  log(`   at the end: #stat-served ${await text(ops, '#stat-served')}, #stat-sold ${await text(ops, '#stat-sold')}, #stat-held ${await text(ops, '#stat-held')}, #stat-paid ${await text(ops, '#stat-paid')}`);
}

// ---------------------------------------------------------------------------

run(main, { failureFile, reportOnPass: true });
