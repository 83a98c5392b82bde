/* onsale: the door, at /checkin/{event_id}: the page's entry module. Door staff
 * sign in (the shared box), name the door and choose entry or exit, then scan
 * with the camera or paste codes. Each scan goes to the server at once (POST
 * /v1/events/{id}/scans, one scan per call, its scan_id made here); when the server
 * cannot be reached (a network error, 4 s without an answer, a 5xx) the same scan
 * is judged on this phone and kept for the upload. The parts live beside it:
 * camera (and decoder), offline (the store and the judgement), sync, ui. */

import { api, email, onAccountChange, token } from '../api.js';
import { now } from '../clock.js';
import { $, pageError, setText, show } from '../dom.js';
import { message } from '../format.js';
import { accountBar, fanSignIn } from '../signin.js';
import { enc, uuid } from '../util.js';
import { camera } from './camera.js';
import { door, ed25519Supported, eventId, judge, loadLocal, noteResult, queueScan, saveLocal, setMeta } from './offline.js';
import { link, onSync, setNotStaff, setOnline, startSync, stopSync, syncNow, timeout, unreachable } from './sync.js';
import { announceConflicts, renderConflicts, renderHead, renderStatus, showChecking, showProblem, showResult } from './ui.js';

const ONLINE_WAIT_MS = 4000;
const DEVICE_KEY = 'onsale.door.device';
const DIRECTION_KEY = 'onsale.door.direction';
const CAMERA_KEY = 'onsale.door.camera';

/* ---------- one scan ---------- */

let queue = Promise.resolve(); // scans are judged one after the other, in order

function submit(code) {
  const text = String(code || '').trim();
  if (!text) return;
  queue = queue.then(() => scanOne(text)).catch((e) => {
    console.error(e);
    showProblem('Something went wrong', 'This scan was not recorded. Scan the ticket again.');
  });
}

async function scanOne(code) {
  const device = $('device-name').value.trim();
  if (!device) {
    showProblem('Name this door first', 'Type a name for this door (for example “Gate B”) below, then scan again.');
    $('device-name').focus();
    return;
  }
  const scan = {
    scan_id: uuid(),
    code,
    direction: $('direction-exit').checked ? 'exit' : 'entry',
    scanned_at: new Date(now()).toISOString(),
    device_id: device,
    offline: false,
  };
  if (link.online && navigator.onLine !== false) {
    showChecking();
    const r = await api('POST', `/v1/events/${enc(eventId)}/scans`, {
      body: { scans: [scan] },
      signal: timeout(ONLINE_WAIT_MS),
    });
    const result = r.ok && r.data && Array.isArray(r.data.results) ? r.data.results[0] : null;
    if (result) {
      setOnline(true);
      noteResult(scan, result);
      showResult(result, scan, false);
      renderStatus();
      return;
    }
    if (r.status === 403) {
      setNotStaff(true);
      return;
    }
    if (r.status === 401) {
      showProblem('Signed out', 'Sign in again to go on scanning.');
      return;
    }
    /* too busy to answer now: the door keeps moving, judging here */
    const busy = r.status === 429;
    if (r.ok || !(unreachable(r) || busy)) {
      showProblem('The server refused this scan', `${message(r.error)} (${r.status || 'no answer'})`);
      return;
    }
    if (!busy) setOnline(false); // the same scan, judged here
  }
  await judgeHere(scan);
}

/** Offline: this phone decides, and keeps what changed something for the upload. */
async function judgeHere(scan) {
  const local = await judge(scan);
  const changed = (scan.direction === 'entry' && local.result === 'admitted') || (scan.direction === 'exit' && local.verified);
  if (changed) {
    const kept = { ...scan, offline: true };
    queueScan(kept, local);
    noteResult(kept, local);
  }
  showResult(local, scan, true);
  renderStatus();
}

/* ---------- the controls ---------- */

const scanner = camera({
  video: $('camera-video'),
  canvas: $('camera-canvas'),
  onCode: submit,
  onState(state, text) {
    const button = $('camera-toggle');
    const on = state === 'running' || state === 'starting';
    button.setAttribute('aria-pressed', String(on));
    setText(button, on ? 'Stop the camera' : 'Start the camera');
    show($('camera-video'), on);
    const msg = $('camera-message');
    msg.textContent = text || '';
    msg.dataset.kind = state === 'error' ? 'error' : 'info';
    $('camera-video').closest('.camera').dataset.state = state;
    if (state === 'running') saveLocal(CAMERA_KEY, 'on');
    if (state === 'stopped') saveLocal(CAMERA_KEY, 'off');
  },
});

function wireControls() {
  const device = $('device-name');
  device.value = loadLocal(DEVICE_KEY, '') || '';
  device.addEventListener('input', () => saveLocal(DEVICE_KEY, device.value.trim() || null));
  const direction = loadLocal(DIRECTION_KEY, 'entry');
  $(direction === 'exit' ? 'direction-exit' : 'direction-entry').checked = true;
  for (const r of document.querySelectorAll('input[name="direction"]')) {
    r.addEventListener('change', () => saveLocal(DIRECTION_KEY, r.value));
  }
  $('manual-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const input = $('manual-code');
    const code = input.value;
    input.value = '';
    if (!code.trim()) {
      showProblem('No code', 'Paste or type the code the QR holds, then press Enter.');
      input.focus();
      return;
    }
    submit(code);
    input.focus();
  });
  $('camera-toggle').addEventListener('click', () => (scanner.running() ? scanner.stop() : scanner.start()));
  $('not-staff-retry').addEventListener('click', () => {
    setText($('not-staff-retry'), 'Checking…');
    syncNow().finally(() => setText($('not-staff-retry'), 'Check again'));
  });
}

/* ---------- who is signed in ---------- */

async function notStaff() {
  scanner.stop();
  show($('door'), false);
  const box = $('not-staff');
  show(box, true);
  setText($('not-staff-who'), email() || '');
  box.focus();
  const me = await api('GET', '/v1/auth/me');
  if (me.ok && me.data) setText($('not-staff-id'), me.data.user_id || '…');
}

async function loadEvent() {
  renderHead(door.meta);
  if (!eventId) {
    setText($('door-title'), 'No event given');
    return;
  }
  const r = await api('GET', `/v1/events/${enc(eventId)}`, { auth: false, signal: timeout(8000) });
  if (r.ok && r.data) {
    setMeta({ name: r.data.name, starts_at: r.data.starts_at });
    renderHead(door.meta);
  } else if (r.status === 404) {
    setText($('door-title'), 'Event not found');
    setText($('door-meta'), 'This event does not exist, or the door’s link is wrong.');
  }
}

function enter() {
  const signedIn = !!token();
  show($('auth'), !signedIn);
  show($('not-staff'), false);
  link.notStaff = false;
  if (!signedIn) {
    stopSync();
    scanner.stop();
    show($('door'), false);
    return;
  }
  show($('door'), !!eventId);
  if (!eventId) return;
  renderStatus();
  renderConflicts();
  startSync();
  if (loadLocal(CAMERA_KEY, 'off') === 'on' && !scanner.running()) scanner.start();
}

onSync({
  changed() {
    renderStatus();
    if (!link.notStaff && token() && eventId && $('door').hidden && $('not-staff').hidden === false) {
      show($('not-staff'), false);
      show($('door'), true);
    }
  },
  notStaff,
  conflicts: announceConflicts,
});

accountBar($('account'));
fanSignIn($('auth'), 'Sign in with your door staff account');
wireControls();
onAccountChange(enter);
window.addEventListener('online', () => setOnline(true));
window.addEventListener('offline', () => setOnline(false));
ed25519Supported().then((yes) => {
  if (!yes) pageError('This browser cannot check ticket signatures by itself, so it cannot admit anyone while offline. Use a current Chrome, Safari or Firefox.', true);
});
loadEvent();
enter();

/* for the browser test and for debugging: what the door knows */
Object.defineProperty(window, 'onsaleDoor', { value: { door, link }, configurable: true });
