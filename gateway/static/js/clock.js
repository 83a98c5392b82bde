/* onsale: the server's clock.
 *
 * Countdowns run on the server's time: a fan whose clock is a minute off must not
 * see the sale open a minute early. The offset comes from the Date header (1 s
 * resolution), so it is only applied when it is clearly more than that. */

let clockOffset = 0;

/** Takes a response's Date header, read between `sentAt` and `receivedAt` (ms). */
export function noteServerDate(header, sentAt, receivedAt) {
  const server = Date.parse(header || '');
  if (Number.isNaN(server)) return;
  const local = (sentAt + receivedAt) / 2;
  const offset = server + 500 - local; // the header truncates to the second
  clockOffset = Math.abs(offset) > 1500 ? offset : 0;
}

/** The server's time now, in ms since the epoch. */
export function now() {
  return Date.now() + clockOffset;
}
