/* onsale: the dashboard's levers: open, pause, resume and close, and the admission
 * rate, each asked in the confirmation dialog (#confirm-dialog) and sent once with
 * its own Idempotency-Key; which levers apply in which state (the API stays the
 * judge), and where the keyboard goes after each. */

import { api, retryable } from '../api.js';
import { confirmStep } from '../confirm.js';
import { $, say, setText } from '../dom.js';
import { fmtClock, message, plural } from '../format.js';
import { sleep, uuid } from '../util.js';
import { adoptSale, auditPoller, statsPoller } from './dashboard.js';
import { renderFigures } from './figures.js';
import { num } from './format.js';
import { RATE_MAX, RATE_MIN, dash, opsPath, saleState, session } from './state.js';

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

export function renderLevers() {
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
  const perText = per != null ? plural(per, 'fan', 'fans') + ' per second' : 'the rate set';
  const queue = dash.stats && !dash.noSale ? dash.stats.queue_length : null;
  const inLine = queue != null ? plural(queue, 'fan is', 'fans are') : '';
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

/** Sends one confirmed action with its own Idempotency-Key; retries keep the key. */
async function send(method, path, body) {
  const key = uuid();
  let r;
  for (let tries = 0; tries < 4; tries++) {
    r = await api(method, path, { body, idempotencyKey: key });
    if (r.ok || !retryable(r)) break;
    const wait = r.retryAfter != null ? r.retryAfter : 1 + tries;
    say('lever-message', `${message(r.error)} Trying again in ${wait} s…`, 'info');
    await sleep(wait * 1000);
  }
  return r;
}

function refusal(r) {
  const e = r.error || {};
  const status = r.status ? `${r.status} ` : '';
  return `Refused (${status}${e.code || 'error'}): ${e.message || message(e)}`;
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
    rateError(`The rate is already ${plural(per, 'fan', 'fans')} per second: nothing to change.`);
    input.focus();
    return;
  }
  rateError('');
  const queue = dash.stats && !dash.noSale ? dash.stats.queue_length : null;
  const s = saleState();
  let note = '';
  if (queue != null && queue > 0) note = `At this rate the ${plural(queue, 'fan', 'fans')} in line now would all be admitted in about ${fmtClock(Math.ceil(queue / per) * 1000)}.`;
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
    say('lever-message', `The admission rate is now ${plural(dash.sale.admission_per_second, 'fan', 'fans')} per second.`, 'ok');
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

export function wireLevers() {
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
