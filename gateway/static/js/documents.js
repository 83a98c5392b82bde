/* onsale: links to the PDFs the API keeps behind the account's token (an order's
 * invoice, GET /v1/orders/{id}/invoice.pdf; a refund's credit note, GET
 * /v1/refunds/{id}/credit-note.pdf). A plain link cannot send the token, so a click
 * fetches the file with it and hands it to the browser through a blob: URL, saved
 * as "{number}.pdf"; each file is fetched once per page. */

import { api, retryable } from './api.js';
import { h } from './dom.js';
import { message } from './format.js';
import { sleep } from './util.js';

/* API path -> Promise<{url} | {error}>; a failed fetch is forgotten */
const files = new Map();

function fetchPdf(path) {
  let p = files.get(path);
  if (!p) {
    p = (async () => {
      let r;
      for (let attempt = 0; attempt < 4; attempt++) {
        r = await api('GET', path, { blob: true, headers: { Accept: 'application/pdf' } });
        if (r.ok && r.data) return { url: URL.createObjectURL(r.data) };
        if (!retryable(r)) break;
        await sleep((r.retryAfter != null ? Math.max(1, r.retryAfter) : 1 + attempt) * 1000);
      }
      files.delete(path);
      return { error: message(r.error) };
    })();
    files.set(path, p);
  }
  return p;
}

/**
 * A link to the PDF at API `path`, reading `label`, saved as `{number}.pdf`;
 * `say(text, kind)` reports progress and failures (an aria-live line of the page's).
 */
export function pdfLink(path, label, number, say) {
  const a = h('a', { href: path, class: 'doc-link', 'data-pdf': path, 'data-number': number }, label);
  a.append(h('span', { class: 'doc-kind' }, ' (PDF)'));
  a.addEventListener('click', async (e) => {
    e.preventDefault();
    if (a.getAttribute('aria-busy') === 'true') return;
    a.setAttribute('aria-busy', 'true');
    say(`Getting ${number}…`, 'info');
    const file = await fetchPdf(path);
    a.removeAttribute('aria-busy');
    if (file.error) {
      say(`${number} could not be downloaded. ${file.error}`, 'error');
      return;
    }
    /* a link of its own for the saving: this one keeps its API path and its handler */
    const save = h('a', { href: file.url, download: `${number}.pdf`, hidden: true });
    document.body.append(save);
    save.click();
    save.remove();
    say(`Downloading ${number}.pdf.`, 'info');
  });
  return a;
}
