/* onsale: the operators' pages: the entry module of /ops (the upcoming on-sales,
 * each linking to its dashboard) and /ops/events/{event_id} (one sale: its figures,
 * the booking workers reading its line (the farm), its orders and the outbox
 * (payments), charts, seats left per section, the levers (open, pause, resume,
 * close, admission rate), the audit log, the door (check-in, conflicts and door
 * staff), and cancelling the show. It wires the page and decides what shows for
 * whoever signs in; the parts live beside it. */

import { onAccountChange } from '../api.js';
import { wireConfirm } from '../confirm.js';
import { $ } from '../dom.js';
import { accountBar, opsSignIn } from '../signin.js';
import { wireCancel } from './cancel.js';
import { statsPoller } from './dashboard.js';
import { wireDoor } from './door.js';
import { wireLevers } from './levers.js';
import { live } from './live.js';
import { enter, wireForbidden } from './session.js';
import { dash, route, session } from './state.js';

window.addEventListener('online', () => live.reconnectNow());
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible' && session.active && route.kind === 'event') {
    live.reconnectNow();
    statsPoller.kick();
  }
});

wireConfirm();
accountBar($('account'), { role: true });
opsSignIn($('ops-auth'));
wireForbidden();
wireLevers();
wireDoor();
wireCancel();
onAccountChange(() => enter());
enter();

/* for tests and the curious: what the page knows */
Object.defineProperty(window, 'onsaleOps', { value: { dash, session, live }, configurable: true });
