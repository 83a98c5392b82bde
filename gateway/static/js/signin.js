/* onsale: signing in, built here for every page. The account bar in the top bar
 * (#account: #signed-in-as, #sign-out, and on /ops #signed-in-role); the fans' sign-in
 * box (#auth: #auth-form, #auth-email, #auth-password, #sign-in, #register,
 * #auth-message), which also creates accounts; and the operators' (#ops-auth:
 * #ops-signin, #ops-email, #ops-password, #ops-signin-button, #ops-signin-message),
 * which only signs in. The pages hold the empty containers; this module fills them. */

import { email, onAccountChange, register, retryable, signIn, signOut, token } from './api.js';
import { $, h, say } from './dom.js';
import { message } from './format.js';
import { sleep } from './util.js';

/** Fills `bar` (#account); it shows while someone is signed in. */
export function accountBar(bar, { role = false } = {}) {
  const who = h('span', { class: 'account-who' }, 'Signed in as ', h('strong', { id: 'signed-in-as' }));
  if (role) who.append(h('span', { id: 'signed-in-role', class: 'role-tag' }));
  const out = h('button', { type: 'button', id: 'sign-out', class: 'button-link' }, 'Sign out');
  bar.replaceChildren(who, out);
  out.addEventListener('click', () => signOut('signed_out'));

  function render() {
    const signedIn = !!token();
    bar.hidden = !signedIn;
    $('signed-in-as').textContent = signedIn ? email() : '';
  }
  onAccountChange(render);
  render();
}

/**
 * Fills `box` (#auth) with the fans' sign-in box, headed `title`: sign in, or
 * create an account and sign in. It shows while nobody is signed in.
 */
export function fanSignIn(box, title) {
  const password = input('auth-password', {
    name: 'password',
    type: 'password',
    autocomplete: 'current-password',
    minlength: 10,
    maxlength: 128,
    required: true,
    'aria-describedby': 'auth-password-hint',
  });
  const signInButton = h('button', { type: 'submit', id: 'sign-in', class: 'button button-primary' }, 'Sign in');
  const registerButton = h('button', { type: 'button', id: 'register', class: 'button button-secondary' }, 'Create account');
  const form = h(
    'form',
    { id: 'auth-form', novalidate: true },
    field('auth-email', 'Email', emailInput('auth-email', 'email')),
    field('auth-password', 'Password', password, h('p', { id: 'auth-password-hint', class: 'hint' }, '10 to 128 characters.')),
    h('div', { class: 'actions' }, signInButton, registerButton),
    h('p', { id: 'auth-message', class: 'form-message', 'aria-live': 'polite' })
  );
  box.replaceChildren(
    h('h2', { id: 'auth-title' }, title),
    h('p', { class: 'muted small' }, 'New here? Enter an email and a password, then choose “Create account”.'),
    form
  );

  const submit = wire(form, {
    message: 'auth-message',
    say: put,
    buttons: [registerButton, signInButton],
    passwordProblem: (v) => (v.length < 10 || v.length > 128 ? 'The password must be 10 to 128 characters.' : null),
  });
  registerButton.addEventListener('click', () => submit('register'));

  function render() {
    box.hidden = !!token();
  }
  onAccountChange((next, why) => {
    render();
    if (!next && why === 'expired') put('auth-message', 'Your session has ended. Please sign in again.', 'error');
  });
  render();
}

/**
 * Fills `box` (#ops-auth) with the operators' sign-in box: signing in only. The
 * page decides when it shows.
 */
export function opsSignIn(box) {
  const button = h('button', { type: 'submit', id: 'ops-signin-button', class: 'button button-primary' }, 'Sign in');
  const password = input('ops-password', {
    name: 'password',
    type: 'password',
    autocomplete: 'current-password',
    required: true,
    maxlength: 128,
  });
  const form = h(
    'form',
    { id: 'ops-signin', novalidate: true },
    field('ops-email', 'Email', emailInput('ops-email', 'username')),
    field('ops-password', 'Password', password),
    h('div', { class: 'actions' }, button),
    h('p', { id: 'ops-signin-message', class: 'form-message', role: 'status', 'aria-live': 'polite' })
  );
  box.replaceChildren(
    h('h2', { id: 'ops-auth-title' }, 'Sign in to run on-sales'),
    h('p', { class: 'muted small' }, 'For operators and admins. Fans buy tickets on the ', h('a', { href: '/' }, 'event pages'), '.'),
    form
  );

  wire(form, {
    message: 'ops-signin-message',
    say,
    buttons: [button],
    passwordProblem: (v) => (v ? null : 'Enter your password.'),
    signedIn: () => $('main').focus(),
    refused: () => password.focus(),
  });
  onAccountChange((next, why) => {
    if (!next && why === 'expired') say('ops-signin-message', 'Your session has ended. Please sign in again.', 'error');
  });
}

/* ---------- the parts both boxes share ---------- */

function input(id, attrs) {
  return h('input', { id, ...attrs });
}

function emailInput(id, autocomplete) {
  return input(id, { name: 'email', type: 'email', autocomplete, required: true, spellcheck: 'false' });
}

function field(id, label, control, ...after) {
  return h('div', { class: 'field' }, h('label', { for: id }, label), control, ...after);
}

/** Like `say`, but writes the text even when it is the same (the fans' box does). */
function put(id, text, kind) {
  const msg = $(id);
  if (!msg) return;
  msg.textContent = text || '';
  msg.dataset.kind = kind || '';
}

/**
 * Wires a box's form: it checks the fields, then signs in (or registers), retrying
 * what is worth retrying. Answers `submit(kind)` ('login' or 'register'), which
 * the form's own submit calls with 'login'.
 */
function wire(form, { message: msgId, say: tell, buttons, passwordProblem, signedIn, refused }) {
  const mail = form.querySelector('input[type="email"]');
  const password = form.querySelector('input[type="password"]');

  function validate() {
    const problems = [];
    mail.removeAttribute('aria-invalid');
    password.removeAttribute('aria-invalid');
    if (!mail.value.trim() || !mail.checkValidity()) {
      mail.setAttribute('aria-invalid', 'true');
      problems.push('Enter a valid email address.');
    }
    const problem = passwordProblem(password.value);
    if (problem) {
      password.setAttribute('aria-invalid', 'true');
      problems.push(problem);
    }
    return problems;
  }

  async function submit(kind) {
    const problems = validate();
    if (problems.length) {
      tell(msgId, problems.join(' '), 'error');
      (mail.getAttribute('aria-invalid') ? mail : password).focus();
      return;
    }
    for (const b of buttons) b.disabled = true;
    tell(msgId, kind === 'register' ? 'Creating your account…' : 'Signing in…', 'info');
    try {
      let r;
      for (let tries = 0; tries < 4; tries++) {
        r = kind === 'register'
          ? await register(mail.value.trim(), password.value)
          : await signIn(mail.value.trim(), password.value);
        /* register may have succeeded before a busy login: sign in, not register, again */
        if (!r.ok && kind === 'register' && r.error.code === 'email_taken' && tries > 0) kind = 'login';
        if (r.ok || !retryable(r)) break;
        const wait = r.retryAfter != null ? r.retryAfter : 1 + tries;
        tell(msgId, `${message(r.error)} Retrying in ${wait} s…`, 'info');
        await sleep(wait * 1000);
      }
      if (r.ok) {
        tell(msgId, '', '');
        password.value = '';
        if (signedIn) signedIn();
      } else {
        tell(msgId, message(r.error), 'error');
        if (refused) refused();
      }
    } finally {
      for (const b of buttons) b.disabled = false;
    }
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    submit('login');
  });
  return submit;
}
