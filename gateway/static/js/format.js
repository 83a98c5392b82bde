/* onsale: human words for the API's error codes, and human formats for numbers,
 * money, dates, times of day, clocks, waits and seats. */

/* Prices carry no currency on the event; orders say theirs (and win when known). */
const DEFAULT_CURRENCY = 'EUR';
const locale = undefined; // the browser's

const numberFormat = new Intl.NumberFormat(locale);

const MESSAGES = {
  network: 'The server could not be reached. Check your connection and try again.',
  invalid_credentials: 'Wrong email or password.',
  email_taken: 'An account with this email already exists. Sign in instead.',
  unauthenticated: 'Please sign in first.',
  invalid_token: 'Your session has ended. Please sign in again.',
  forbidden: 'You are not allowed to do that.',
  already_in_line: 'You are already in line for this event; here is your place.',
  sold_out: 'Sorry, this event is sold out.',
  sale_closed: 'The sale is closed: no more requests are taken.',
  sale_not_found: 'The sale for this event is not set up yet.',
  over_limit: 'That is more tickets than one fan may buy for this event.',
  unknown_seat: 'One of those seats does not exist at this venue. Reload the seat map and pick again.',
  unknown_section: 'There is no such section at this venue.',
  unknown_price_tier: 'There is no such price tier at this venue.',
  seat_unavailable: 'One of your seats was taken by someone else.',
  no_adjacent_seats: 'There were not enough seats together for your request.',
  event_not_found: 'We could not find this event.',
  request_not_found: 'We could not find your request.',
  request_not_held: 'Your request does not hold seats right now.',
  hold_ended: 'Your hold has ended; the seats went back on sale.',
  already_paid: 'These seats are already paid for.',
  payment_in_flight: 'A payment for these seats is already in progress; waiting for its outcome.',
  invalid_card_number: 'That card number is not valid.',
  invalid_expiry: 'Enter the expiry date as MM/YY.',
  card_expired: 'That card has expired.',
  invalid_cvc: 'The security code is 3 or 4 digits.',
  card_declined: 'Your card was declined; try another card before the hold runs out.',
  rate_limited: 'Too many requests.',
  overloaded: 'The service is very busy right now.',
  service_unavailable: 'The service is briefly unavailable.',
  internal: 'Something went wrong on our side.',
  payload_too_large: 'That request is too large.',
  idempotency_key_reused: 'That attempt was already used for something else; please try again.',
  idempotency_key_in_flight: 'Your previous attempt is still being processed.',
  conflict: 'Your request conflicted with another one of yours.',
  ticket_checked_in: 'This ticket has already been scanned in at the door, so it cannot be reissued.',
  ticket_void: 'This ticket is void (refunded or replaced), so it cannot be reissued.',
  ticket_not_found: 'We could not find this ticket.',
  order_not_found: 'We could not find this order.',
  refund_not_found: 'We could not find this refund.',
  invoice_not_found: 'This order has no invoice: it was not paid.',
  refunds_not_offered: 'Tickets for this event cannot be refunded on request.',
  refund_window_closed: 'The time to ask for a refund has passed.',
  ticket_not_refundable: 'One of those tickets cannot be refunded: it is void already, or not this order’s.',
  event_cancelled: 'The event is cancelled: every order is being refunded in full.',
  user_not_found: 'There is no account with that user id.',
  email_unverified: 'Please confirm your email address first: open the link in the email we sent you.',
  verification_token_invalid: 'This confirmation link is not valid. Copy the whole link from the email.',
  verification_token_expired: 'This confirmation link has expired. Sign in and ask for a new one.',
  verification_token_used: 'This confirmation link was used already: your email address is confirmed.',
};

/** What an API error means, in words for a fan. */
export function message(error) {
  if (!error) return '';
  if (error.code === 'invalid_request' && error.message) return `Please check your input: ${error.message}`;
  return MESSAGES[error.code] || error.message || 'Something went wrong.';
}

export function fmtNumber(n) {
  return numberFormat.format(n);
}

export function fmtMoney(cents, currency) {
  try {
    return new Intl.NumberFormat(locale, { style: 'currency', currency: currency || DEFAULT_CURRENCY }).format(
      cents / 100
    );
  } catch (_) {
    return `${(cents / 100).toFixed(2)} ${currency || DEFAULT_CURRENCY}`;
  }
}

const dateTimeFormat = new Intl.DateTimeFormat(locale, {
  weekday: 'short',
  day: 'numeric',
  month: 'short',
  year: 'numeric',
  hour: '2-digit',
  minute: '2-digit',
});

export function fmtDateTime(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? '' : dateTimeFormat.format(d);
}

const timeOfDayFormat = new Intl.DateTimeFormat(locale, { hour: '2-digit', minute: '2-digit' });

/** The local time of day, "19:42" (or "07:42 PM", as the browser's locale has it). */
export function fmtTimeOfDay(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? '' : timeOfDayFormat.format(d);
}

/** A seat id ("Floor-A-1": section, row and number never hold a dash) in words: "Floor · row A · seat 1". */
export function fmtSeat(seatId) {
  const parts = String(seatId || '').split('-');
  if (parts.length !== 3 || !parts[0] || !parts[1] || !parts[2]) return String(seatId || '');
  return `${parts[0]} · row ${parts[1]} · seat ${parts[2]}`;
}

/** The same, for a screen reader or an alt text: "Floor, row A, seat 1". */
export function fmtSeatSpoken(seatId) {
  return fmtSeat(seatId).replace(/ · /g, ', ');
}

/** "1:05:09", "4:09", "0:07"; a day or more gets "2 d 03:04:05". */
export function fmtClock(ms) {
  let s = Math.max(0, Math.ceil(ms / 1000));
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  const pad = (x) => String(x).padStart(2, '0');
  if (d > 0) return `${d} d ${pad(h)}:${pad(m)}:${pad(s)}`;
  if (h > 0) return `${h}:${pad(m)}:${pad(s)}`;
  return `${m}:${pad(s)}`;
}

/** "less than a minute", "about 2 min", "about 1 h 20 min". */
export function fmtWait(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return '';
  if (seconds < 60) return 'less than a minute';
  const minutes = Math.round(seconds / 60);
  if (minutes < 90) return `about ${minutes} min`;
  const h = Math.floor(minutes / 60);
  const m = minutes % 60;
  return m ? `about ${h} h ${m} min` : `about ${h} h`;
}

export function plural(n, one, many) {
  return `${fmtNumber(n)} ${n === 1 ? one : many}`;
}
