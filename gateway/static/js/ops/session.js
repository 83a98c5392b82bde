/* onsale: who is using the operators' pages: deciding, for whoever is signed in
 * (or nobody), whether the page shows the sign-in box, the refusal for a fan's
 * account, or an operator's views (the events, or one sale's dashboard). */

import { api, email, signOut, token } from '../api.js';
import { $, pageError, setText, show } from '../dom.js';
import { message } from '../format.js';
import { sleep } from '../util.js';
import { startDashboard, stopDashboard } from './dashboard.js';
import { startList } from './list.js';
import { backoff, route, session } from './state.js';

function isOperator(me) {
  return !!me && (me.role === 'operator' || me.role === 'admin');
}

/** Decides what the page shows for whoever is signed in (or nobody). */
export async function enter() {
  const ticket = ++session.checking;
  leave();
  show($('ops-forbidden'), false);
  if (!token()) {
    session.me = null;
    showSignIn(true);
    return;
  }
  showSignIn(false);
  for (let attempt = 0; ; attempt++) {
    const r = await api('GET', '/v1/auth/me');
    if (ticket !== session.checking) return;
    if (r.ok && r.data) {
      session.me = r.data;
      break;
    }
    if (r.status === 401) {
      /* the client signed out; onAccountChange comes back here */
      showSignIn(true);
      return;
    }
    pageError(`Could not check your account: ${message(r.error)} Retrying…`);
    await sleep(backoff(attempt));
    if (ticket !== session.checking) return;
  }
  pageError('');
  setText($('signed-in-role'), session.me.role ? ` (${session.me.role})` : '');
  if (!isOperator(session.me)) {
    forbidden();
    return;
  }
  session.active = true;
  if (route.kind === 'event') startDashboard();
  else startList();
}

function leave() {
  session.active = false;
  stopDashboard();
  show($('ops-list'), false);
  show($('dashboard'), false);
  setText($('signed-in-role'), '');
}

function showSignIn(visible) {
  show($('ops-auth'), visible);
  if (visible) {
    show($('dashboard'), false);
    show($('ops-list'), false);
    setText($('ops-title'), route.kind === 'event' ? 'Sale dashboard' : 'Operations');
    setText($('ops-meta'), 'Sign in with an operator’s or admin’s account.');
  }
}

/** The signed-in account may not run on-sales: says so, and offers to sign out. */
export function forbidden() {
  leave();
  session.active = false;
  show($('ops-auth'), false);
  setText($('ops-forbidden-who'), (session.me && session.me.email) || email() || '');
  setText($('ops-forbidden-role'), (session.me && session.me.role) || 'fan');
  setText($('ops-title'), 'Operations');
  setText($('ops-meta'), '');
  const box = $('ops-forbidden');
  show(box, true);
  box.focus();
}

export function wireForbidden() {
  $('ops-forbidden-signout').addEventListener('click', () => {
    signOut('signed_out');
    $('ops-email').focus();
  });
}
