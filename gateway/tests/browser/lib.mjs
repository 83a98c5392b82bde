// What the browser scenarios share: progress lines, failures, the pages watched
// for console errors, screenshots, and the REST API as the admin and background
// fans use it. BASE_URL, SCREENSHOTS and CHROMIUM come from the environment.

import crypto from 'node:crypto';
import os from 'node:os';
import path from 'node:path';

export const BASE_URL = (process.env.BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
export const SCREENSHOTS = path.resolve(process.env.SCREENSHOTS || path.join(os.tmpdir(), 'onsale-browser-screenshots'));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

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
  const w = { name, page, console: [], errors: [] };
  page.on('console', (msg) => {
    if (msg.type() === 'error' || msg.type() === 'warning') {
      w.console.push(`${msg.type()}: ${msg.text()}`);
    }
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

async function shot(page, file) {
  const to = path.join(SCREENSHOTS, file);
  await page.screenshot({ path: to, fullPage: true });
  log(`   screenshot ${to}`);
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
  return { email, password, token: await login(email, password) };
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

export { CHROMIUM, RUN, T0, log, step, Failure, fail, check, sleep, pages, watch, shot, call, login, registerFan, pool };
