/*
 * Corral console: sign-in, navigation and the views' life cycle.
 *
 * Stable ids / data-testid for browser tests (TESTING.md has the same list, with notes):
 *   Sign-in   #signin-token (the one credential field; Enter submits), #signin-button, #signin-error
 *   Header    #nav-pool #nav-orgs #nav-keys #nav-policy (links to #pool …; hidden when the role
 *             can't see the view; aria-current="page" on the current one), #whoami, #signout,
 *             #status (aria-live toast)
 *   Views     #view-pool #view-orgs #view-keys #view-policy (sections, `hidden` unless current)
 *   Pool      [data-testid=pool-instance][data-url][data-healthy="true|false"]
 *               > [data-testid=instance-health] ("Healthy"/"Unhealthy"), [data-testid=instance-inflight],
 *                 [data-testid=loaded-model][data-model], [data-testid=available-model],
 *                 [data-testid=instance-event][data-kind]
 *             [data-testid=queue-depth|queue-rejected|queue-timeout], [data-testid=pool-error],
 *             [data-testid=chart-rps|chart-errors|chart-ttft], [data-testid=pool-updated]
 *   Orgs      [data-testid=org-usage][data-org]
 *               > [data-testid=org-usage-bar][data-level="ok|soft|hard"][data-used][data-soft][data-hard],
 *                 [data-testid=org-used|org-soft|org-hard|org-resets|org-requests|org-rate-limited|org-quota-refused],
 *                 [data-testid=org-model][data-model], [data-testid=org-top] > [data-testid=org-top-user],
 *                 [data-testid=org-top-key] or [data-testid=org-top-error], [data-testid=org-keys]
 *             #orgs-refresh, [data-testid=orgs-error]
 *   Keys      #keys-org (operator's org <select>), #keys-org-fixed (an org admin's org)
 *             [data-testid=key-row][data-key-name][data-key-id][data-state="active|expired|revoked"]
 *               > [data-testid=key-state], [data-testid=key-rotate-grace] (<select>, seconds:
 *                 0 | 3600 | 86400 | 604800), [data-testid=key-rotate], [data-testid=key-revoke]
 *             [data-testid=keys-more], #keys-error, [data-testid=keys-list-error]
 *             Create: #create-name, #create-role, #create-models (comma-separated),
 *                     #create-expires (<select>, days: "" never | 1 | 7 | 30 | 90 | 365),
 *                     #create-submit, #create-error
 *             #secret-panel > #secret-value (the one-time secret), #secret-copy, #secret-copied
 *             #audit-entry[data-action] > [data-testid=audit-action|audit-target|audit-error]
 *             #result-dismiss; #confirm-dialog (<dialog>) > #confirm-ok (revoke), #confirm-cancel
 *   Policy    #policy-loaded-at, #policy-last-error (text "none" when nothing was refused, else
 *             [data-testid=policy-error-location] holds the file:line), [data-testid=policy-files],
 *             [data-testid=policy-org][data-org], #policy-refresh, [data-testid=policy-error]
 */

import { get, credential, setCredential, whenUnauthorized } from './api.js';
import { $, str } from './dom.js';
import { poolView } from './pool.js';
import { orgsView } from './orgs.js';
import { keysView } from './keys.js';
import { policyView } from './policy.js';

const VIEWS = ['pool', 'orgs', 'keys', 'policy'];
let me = null;
let views = {};
let current = '';
let statusTimer = 0;

function announce(message) {
  const el = $('status');
  clearTimeout(statusTimer);
  el.textContent = '';
  // A fresh text node makes screen readers read a repeated message again.
  requestAnimationFrame(() => { el.textContent = message; });
  statusTimer = setTimeout(() => { el.textContent = ''; }, 8000);
}

function allowed(view) {
  if (!me) return false;
  if (me.operator === true) return true;
  return me.org_admin === true && (view === 'orgs' || view === 'keys');
}

function defaultView() {
  return me && me.operator === true ? 'pool' : 'orgs';
}

// ---- sign-in ----------------------------------------------------------------------------

function showSignIn(message) {
  $('signin-view').hidden = false;
  $('nav').hidden = true;
  $('who').hidden = true;
  for (const v of VIEWS) $(`view-${v}`).hidden = true;
  const err = $('signin-error');
  err.textContent = message || '';
  err.hidden = !message;
  const field = $('signin-token');
  field.value = '';
  field.setAttribute('aria-invalid', message ? 'true' : 'false');
  field.focus();
}

function signInMessage(e) {
  if (e.status === 401) return `This key or token was not accepted: ${e.message}`;
  if (e.status === 403) return e.message;
  return `Signing in failed: ${e.message}`;
}

async function signIn(token) {
  const button = $('signin-button');
  button.disabled = true;
  $('signin-error').hidden = true;
  try {
    const who = await get('/admin/api/me', { token });
    if (!who || (who.operator !== true && who.org_admin !== true)) {
      setCredential('');
      showSignIn('The console is for operators and org admins: this credential is neither.');
      return;
    }
    setCredential(token);
    enter(who);
  } catch (e) {
    setCredential('');
    showSignIn(signInMessage(e));
  } finally {
    button.disabled = false;
  }
}

function signOut(message) {
  setCredential('');
  for (const v of Object.values(views)) v.reset();
  views = {};
  me = null;
  current = '';
  $('whoami').textContent = '';
  showSignIn(message);
  if (!message) announce('Signed out.');
}

// ---- signed in --------------------------------------------------------------------------

function enter(who) {
  me = who;
  $('signin-view').hidden = true;
  $('signin-token').value = '';
  const role = me.operator === true ? 'operator' : 'org admin';
  const key = me.key && me.key.name ? ` · key ${str(me.key.name)}` : '';
  $('whoami').textContent = `${str(me.user) || 'unknown user'} · ${str(me.org) || 'no org'} · ${role}${key}`;
  $('who').hidden = false;
  $('nav').hidden = false;
  for (const v of VIEWS) $(`nav-${v}`).hidden = !allowed(v);

  views = {
    pool: poolView($('pool-body'), announce),
    orgs: orgsView($('orgs-body'), {
      canManageKeys: (org) => me.operator === true || (me.org_admin === true && org === str(me.org)),
      openKeys: (org) => {
        views.keys.setOrg(org);
        if (current === 'keys') { views.keys.hide(); views.keys.show(); } else location.hash = '#keys';
      },
    }),
    keys: keysView({ me, announce }),
    policy: policyView($('policy-body')),
  };
  route(true);
}

function route(focus = true) {
  if (!me) return;
  let view = location.hash.replace(/^#/, '');
  if (!VIEWS.includes(view) || !allowed(view)) {
    view = defaultView();
    history.replaceState(null, '', `#${view}`);
  }
  if (view === current) return;
  if (current && views[current]) views[current].hide();
  current = view;
  for (const v of VIEWS) {
    $(`view-${v}`).hidden = v !== view;
    const link = $(`nav-${v}`);
    if (v === view) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  views[view].show();
  if (focus) {
    const heading = $(`view-${view}`).querySelector('h1');
    if (heading) { heading.tabIndex = -1; heading.focus({ preventScroll: true }); }
  }
  document.title = `${view[0].toUpperCase()}${view.slice(1)} · Corral console`;
}

// ---- wiring -----------------------------------------------------------------------------

function start() {
  whenUnauthorized((e) => { if (me) signOut(`This key or token was not accepted: ${e.message}`); });

  $('signin-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const token = $('signin-token').value.trim().replace(/^Bearer\s+/i, '');
    if (!token) {
      showSignIn('Paste an API key (crl_…) or a token first.');
      return;
    }
    signIn(token);
  });
  $('signout').addEventListener('click', () => signOut(''));
  $('orgs-refresh').addEventListener('click', () => views.orgs && views.orgs.show());
  $('policy-refresh').addEventListener('click', () => views.policy && views.policy.show());
  window.addEventListener('hashchange', () => route(true));

  const saved = credential();
  if (saved) signIn(saved);
  else showSignIn('');
}

start();
