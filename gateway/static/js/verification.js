/* onsale: confirming the account's email address, shared by /verify and the
 * event page: sending the confirmation link again, and picking up a confirmation
 * made elsewhere (a refreshed token says the address is confirmed). */

import { api, refreshSession, token } from './api.js';
import { message } from './format.js';

/**
 * Asks for another confirmation link for the signed-in account. Answers
 * `{ok, verified, text}`: `verified` when the address turned out to be confirmed
 * already (then the token is refreshed, so it says so too).
 */
export async function resendLink() {
  if (!token()) return { ok: false, verified: false, text: 'Please sign in first.' };
  const r = await api('POST', '/v1/auth/verify-email/resend');
  if (r.ok && r.data && r.data.email_verified) {
    await refreshSession();
    return { ok: true, verified: true, text: 'Your email address is already confirmed.' };
  }
  if (r.ok) {
    return { ok: true, verified: false, text: 'A new link is on its way: check your inbox (and the spam folder).' };
  }
  if (r.status === 429) {
    const wait = r.retryAfter != null ? Math.ceil(r.retryAfter / 60) : null;
    return {
      ok: false,
      verified: false,
      text: wait
        ? `We sent several links within the hour. The next one can go in about ${wait} min: check your inbox for the earlier ones.`
        : 'We sent several links within the hour: check your inbox for the earlier ones.',
    };
  }
  return { ok: false, verified: false, text: message(r.error) };
}
