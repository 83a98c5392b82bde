/* onsale: confirming an email address, at /verify#token=…: the page's entry
 * module. The token comes in the link's fragment (never sent to any server but in
 * this call's body); the page takes it out of the address bar at once, confirms
 * it, and says plainly how that went. */

import { api, refreshSession, token } from './api.js';
import { $, say, show } from './dom.js';
import { message } from './format.js';
import { accountBar } from './signin.js';
import { sleep } from './util.js';
import { resendLink } from './verification.js';

function tokenFromFragment() {
  const params = new URLSearchParams(window.location.hash.replace(/^#/, ''));
  const value = params.get('token');
  if (window.location.hash) {
    /* out of the address bar and the history: the link works once anyway */
    window.history.replaceState(null, '', window.location.pathname);
  }
  return value ? value.trim() : '';
}

/** Shows the outcome: `kind` is ok or error; a new link is offered to an account signed in here. */
function outcome(kind, title, text, offerResend) {
  show($('verify-working'), false);
  const box = $('verify-outcome');
  box.className = kind === 'ok' ? 'card card-success' : 'card card-danger';
  $('verify-title').textContent = title;
  $('verify-text').textContent = text;
  show(box, true);
  show($('resend-box'), !!offerResend && !!token());
  box.focus();
}

async function confirm(value) {
  for (let attempt = 0; attempt < 5; attempt++) {
    const r = await api('POST', '/v1/auth/verify-email', { body: { token: value }, auth: false });
    if (r.ok || (r.error && r.error.code === 'verification_token_used')) {
      /* a token signed in here says so only once it is refreshed */
      if (token()) await refreshSession();
      const again = !r.ok;
      outcome(
        'ok',
        'Your email address is confirmed',
        again
          ? 'This link was used already, so your address is confirmed. You can join the line for any event.'
          : token()
            ? 'Thank you. Go back to the event’s page and join the line: it knows you are confirmed.'
            : 'Thank you. Sign in on the event’s page and join the line.',
        false
      );
      return;
    }
    if (r.status === 0 || r.status === 429 || r.status >= 500) {
      await sleep(Math.min(8, 2 ** attempt) * 1000);
      continue;
    }
    const expired = r.error.code === 'verification_token_expired';
    outcome('error', expired ? 'This link has expired' : 'This link did not work', message(r.error), expired);
    return;
  }
  outcome('error', 'We could not confirm your address right now', 'The service did not answer. Open the link again in a minute.', false);
}

async function resend() {
  const button = $('resend-button');
  /* aria-disabled keeps the keyboard's focus on the button */
  if (button.getAttribute('aria-disabled') === 'true') return;
  button.setAttribute('aria-disabled', 'true');
  say('resend-message', 'Sending…', 'info');
  const r = await resendLink();
  say('resend-message', r.text, r.ok ? 'ok' : 'error');
  button.removeAttribute('aria-disabled');
}

accountBar($('account'));
$('resend-button').addEventListener('click', resend);
const value = tokenFromFragment();
if (value) {
  confirm(value);
} else {
  outcome(
    'error',
    'No confirmation link here',
    'Open this page with the link from the confirmation email; copy all of it if your email app split it.',
    true
  );
}
