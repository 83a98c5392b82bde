/* onsale: the confirmation step a page takes before an action that cannot be
 * undone (the dashboard's levers, admission rate and cancelling the show; a reissue
 * or a refund on /orders): its <dialog id="confirm-dialog"> (#confirm-title,
 * #confirm-text, #confirm-note, #confirm-no, #confirm-yes, as ops.html and
 * orders.html hold it) filled and shown modally. Escape or a click on the backdrop
 * answers no. */

import { $, setText, show } from './dom.js';

/**
 * Asks; resolves true only when confirmed. `no` names the way out ("Cancel" unless
 * said). The focus goes back to `opener` on a no.
 */
export function confirmStep({ title, text, note, yes, no, danger }, opener) {
  const dialog = $('confirm-dialog');
  setText($('confirm-title'), title);
  setText($('confirm-text'), text);
  setText($('confirm-note'), note || '');
  show($('confirm-note'), !!note);
  const yesButton = $('confirm-yes');
  setText(yesButton, yes);
  setText($('confirm-no'), no || 'Cancel');
  yesButton.className = `button ${danger ? 'button-danger-solid' : 'button-primary'}`;
  dialog.returnValue = '';
  return new Promise((resolve) => {
    const done = () => {
      dialog.removeEventListener('close', done);
      const yesChosen = dialog.returnValue === 'yes';
      if (!yesChosen && opener && !opener.disabled && opener.isConnected) opener.focus();
      resolve(yesChosen);
    };
    dialog.addEventListener('close', done);
    if (typeof dialog.showModal === 'function') {
      dialog.showModal();
      $('confirm-no').focus();
    } else {
      /* no <dialog> support: the browser's own confirmation */
      dialog.returnValue = window.confirm(`${title}\n\n${text}`) ? 'yes' : '';
      done();
    }
  });
}

/** A click on the dialog's backdrop closes it as "no". */
export function wireConfirm() {
  $('confirm-dialog').addEventListener('click', (e) => {
    if (e.target !== e.currentTarget) return;
    const r = e.currentTarget.getBoundingClientRect();
    const inside = e.clientX >= r.left && e.clientX <= r.right && e.clientY >= r.top && e.clientY <= r.bottom;
    if (!inside) e.currentTarget.close('');
  });
}
