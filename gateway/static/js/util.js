/* onsale: small helpers every page shares: random ids, what a tab remembers
 * (sessionStorage), waiting, and path segments. */

/** A random UUID v4; crypto.randomUUID exists only in secure contexts. */
export function uuid() {
  if (window.crypto && typeof window.crypto.randomUUID === 'function') {
    return window.crypto.randomUUID();
  }
  const b = new Uint8Array(16);
  window.crypto.getRandomValues(b);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/* ---------- storage ---------- */

export function load(key) {
  try {
    const raw = window.sessionStorage.getItem(key);
    return raw == null ? null : JSON.parse(raw);
  } catch (_) {
    return null;
  }
}

export function save(key, value) {
  try {
    if (value == null) window.sessionStorage.removeItem(key);
    else window.sessionStorage.setItem(key, JSON.stringify(value));
  } catch (_) {
    /* storage full or disabled: the page still works for this visit */
  }
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A path segment, escaped. */
export const enc = encodeURIComponent;
