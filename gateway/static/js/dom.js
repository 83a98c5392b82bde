/* onsale: DOM helpers every page shares: finding elements, changing text and
 * visibility only when they differ, form messages, the page's error banner, and
 * building elements. */

export const $ = (id) => document.getElementById(id);

export function setText(el, text) {
  if (el && el.textContent !== text) el.textContent = text;
}

export function show(el, visible) {
  if (el && el.hidden === !!visible) el.hidden = !visible;
}

/** A message in element `id`; `kind` (error, info, ok, …) goes to data-kind. */
export function say(id, text, kind) {
  const el = $(id);
  if (!el) return;
  setText(el, text || '');
  el.dataset.kind = kind || '';
}

let pageErrorTimer = null;

/** The banner #page-error: shown for 15 s, or until replaced when `sticky`. */
export function pageError(text, sticky) {
  const el = $('page-error');
  setText(el, text || '');
  show(el, !!text);
  clearTimeout(pageErrorTimer);
  if (text && !sticky) pageErrorTimer = setTimeout(() => show(el, false), 15000);
}

/**
 * An element: `attrs` are attributes (true sets an empty one, null or false none),
 * `children` are nodes or strings.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    el.setAttribute(k, v === true ? '' : String(v));
  }
  el.append(...children);
  return el;
}
