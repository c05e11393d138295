// Keys view: list, create, rotate and revoke an org's API keys. A new secret is shown once;
// every change shows the audit entry it wrote.

import { get, post, del, seg, uuid } from './api.js';
import {
  $, h, fill, table, labelCells, errorBox, empty, arr, str, obj, timeEl, fmtDate,
} from './dom.js';

const GRACES = [
  ['0', 'Grace: none'],
  ['3600', 'Grace: 1 h'],
  ['86400', 'Grace: 24 h'],
  ['604800', 'Grace: 7 d'],
];
const DEFAULT_GRACE = '86400';
const PAGE = 100;

export function keysView({ me, announce }) {
  const body = $('keys-body');
  const picker = $('keys-org');
  const pickWrap = $('keys-org-pick');
  const fixed = $('keys-org-fixed');
  const form = $('create-form');
  const createError = $('create-error');
  const createSubmit = $('create-submit');
  const result = $('keys-result');
  const secretPanel = $('secret-panel');
  const secretValue = $('secret-value');
  const secretCopied = $('secret-copied');
  const auditBox = $('audit-entry');
  const dialog = $('confirm-dialog');

  const operator = me.operator === true;
  let org = operator ? '' : str(me.org);
  let generation = 0;
  let pendingCreate = null; // {body, key}: the same body retried keeps its Idempotency-Key
  let confirmAction = null;
  const listeners = [];
  const on = (el, type, fn) => { el.addEventListener(type, fn); listeners.push([el, type, fn]); };

  const actionError = h('p', { class: 'error', id: 'keys-error', 'data-testid': 'keys-error', role: 'alert', hidden: true });
  const listBox = h('div', { class: 'keys-list' });
  fill(body, actionError, listBox);

  function showActionError(message) {
    actionError.textContent = message;
    actionError.hidden = !message;
    if (message) announce(message);
  }

  // ---- org ------------------------------------------------------------------------------

  async function setUpOrg() {
    if (!operator) {
      pickWrap.hidden = true;
      fixed.hidden = false;
      fixed.textContent = `Org: ${org}`;
      return;
    }
    fixed.hidden = true;
    pickWrap.hidden = false;
    let names = [];
    try {
      names = arr(obj(await get('/admin/api/orgs')).orgs).map((o) => str(obj(o).org)).filter(Boolean);
    } catch (e) {
      showActionError(`The list of orgs could not be loaded: ${e.message}`);
    }
    if (me.org && !names.includes(str(me.org))) names.push(str(me.org));
    if (org && !names.includes(org)) names.push(org);
    names.sort((a, b) => a.localeCompare(b));
    if (!org) org = names.includes(str(me.org)) ? str(me.org) : (names[0] || '');
    fill(picker, names.map((n) => h('option', { value: n, selected: n === org }, n)));
    picker.value = org;
  }

  on(picker, 'change', () => {
    org = picker.value;
    clearResult();
    showActionError('');
    loadList();
  });

  // ---- list -----------------------------------------------------------------------------

  async function loadList(cursor) {
    const mine = cursor ? generation : ++generation;
    if (!org) {
      fill(listBox, empty('No org to show.'));
      form.hidden = true;
      return;
    }
    form.hidden = false;
    if (!cursor) fill(listBox, empty('Loading keys…'));
    let page;
    try {
      const q = `limit=${PAGE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
      page = obj(await get(`/api/orgs/${seg(org)}/keys?${q}`));
    } catch (e) {
      if (mine === generation) fill(listBox, errorBox(`The keys of ${org} could not be loaded: ${e.message}`, 'keys-list-error'));
      return;
    }
    if (mine !== generation) return;
    const items = arr(page.items).map(obj);
    let tbody = listBox.querySelector('tbody');
    if (!cursor || !tbody) {
      if (!items.length) {
        fill(listBox, empty(`${org} has no API keys yet.`));
        return;
      }
      const t = table(`API keys of ${org}`,
        ['Name', 'Key', 'Role', 'Models', 'Created', 'Expires', 'Last used', 'State', 'Actions'], [], 'keys-table stack');
      fill(listBox, h('h2', null, `Keys of ${org}`), t);
      tbody = t.querySelector('tbody');
    }
    tbody.append(...items.map(keyRow));
    labelCells(tbody);
    listBox.querySelector('.more')?.remove();
    if (page.next_cursor) {
      listBox.append(h('button', {
        type: 'button', class: 'btn more', 'data-testid': 'keys-more',
        onclick: () => loadList(str(page.next_cursor)),
      }, 'Load more'));
    }
  }

  function keyRow(k) {
    const name = str(k.name);
    const id = str(k.id);
    const state = str(k.state) || 'active';
    const models = arr(k.models).map(str);
    const graceId = `grace-${id}`;
    const grace = h('select', { id: graceId, class: 'grace', 'data-testid': 'key-rotate-grace' },
      GRACES.map(([v, text]) => h('option', { value: v, selected: v === DEFAULT_GRACE }, text)));
    const actions = [];
    if (state === 'active' && id) {
      actions.push(h('span', { class: 'rotate' },
        h('label', { for: graceId, class: 'sr-only' }, `Grace period for the old secret of ${name}`),
        grace,
        h('button', {
          type: 'button', class: 'btn small', 'data-testid': 'key-rotate',
          'aria-label': `Rotate ${name}`, onclick: (ev) => rotate(k, grace.value, ev.currentTarget),
        }, 'Rotate')));
    }
    if (state !== 'revoked' && id) {
      actions.push(h('button', {
        type: 'button', class: 'btn small danger-ghost', 'data-testid': 'key-revoke',
        'aria-label': `Revoke ${name}`, onclick: (ev) => askRevoke(k, ev.currentTarget),
      }, 'Revoke'));
    }
    const prev = k.previous_valid_until ? h('div', { class: 'muted small' }, 'old secret until ', timeEl(k.previous_valid_until)) : null;
    return h('tr', { 'data-testid': 'key-row', dataset: { keyName: name, keyId: id, state } },
      h('th', { scope: 'row' }, name || '—'),
      h('td', null, h('div', null, h('code', { class: 'nowrap' }, `${str(k.prefix)}…${str(k.last_four)}`), prev)),
      h('td', null, str(k.role) || h('span', { class: 'muted' }, 'default')),
      h('td', null, models.length ? models.join(', ') : h('span', { class: 'muted' }, "org's own")),
      h('td', null, timeEl(k.created_at, { short: true })),
      h('td', null, k.expires_at ? timeEl(k.expires_at, { short: true }) : h('span', { class: 'muted' }, 'never')),
      h('td', null, k.last_used_at ? timeEl(k.last_used_at, { relative: true }) : h('span', { class: 'muted' }, 'never')),
      h('td', null, h('span', { class: `tag ${state === 'active' ? 'ok' : state === 'revoked' ? 'bad' : 'warn'}`, 'data-testid': 'key-state' }, state)),
      h('td', { class: 'actions-cell' }, actions.length ? h('div', { class: 'row-actions' }, actions) : h('span', { class: 'muted' }, '—')));
  }

  // ---- results: the secret once, the audit entry ----------------------------------------

  function clearResult() {
    secretValue.textContent = '';
    secretCopied.textContent = '';
    secretPanel.hidden = true;
    auditBox.replaceChildren();
    auditBox.hidden = true;
    result.hidden = true;
  }

  function showResult({ secret, audit, auditError, note }) {
    clearResult();
    result.hidden = false;
    if (secret) {
      secretPanel.hidden = false;
      secretValue.textContent = secret;
    }
    auditBox.hidden = false;
    if (note) auditBox.append(h('p', { class: 'note' }, note));
    if (audit) auditBox.append(auditEntry(obj(audit)));
    else auditBox.append(errorBox(`The audit entry could not be shown: ${auditError || 'none returned'}`, 'audit-error'));
    result.scrollIntoView({ block: 'nearest' });
    (secret ? secretValue : auditBox).focus?.();
  }

  function auditEntry(a) {
    auditBox.dataset.action = str(a.action);
    const detail = a.detail && typeof a.detail === 'object' && Object.keys(a.detail).length ? JSON.stringify(a.detail) : '';
    return h('div', { class: 'audit-body' },
      h('h3', null, 'Audit entry'),
      h('dl', { class: 'kv' },
        h('dt', null, 'Action'), h('dd', { 'data-testid': 'audit-action' }, h('code', null, str(a.action) || '—')),
        h('dt', null, 'Target'), h('dd', { 'data-testid': 'audit-target' }, h('code', null, str(a.target) || '—')),
        h('dt', null, 'By'), h('dd', null, str(a.actor) || '—'),
        h('dt', null, 'At'), h('dd', null, timeEl(a.at)),
        a.ip ? [h('dt', null, 'From'), h('dd', null, str(a.ip))] : null,
        detail ? [h('dt', null, 'Detail'), h('dd', null, h('code', null, detail))] : null,
        a.id !== undefined && a.id !== null ? [h('dt', null, 'Entry'), h('dd', null, `#${str(a.id)}`)] : null));
  }

  on($('result-dismiss'), 'click', () => { clearResult(); form.querySelector('input')?.focus(); });

  on($('secret-copy'), 'click', async () => {
    const text = secretValue.textContent || '';
    let copied = false;
    if (navigator.clipboard && window.isSecureContext) {
      try { await navigator.clipboard.writeText(text); copied = true; } catch { copied = false; }
    }
    if (copied) {
      secretCopied.textContent = 'Copied to the clipboard.';
    } else {
      selectSecret();
      secretCopied.textContent = 'Selected: press Ctrl+C (⌘C) to copy.';
    }
    announce(secretCopied.textContent);
  });

  function selectSecret() {
    const range = document.createRange();
    range.selectNodeContents(secretValue);
    const sel = window.getSelection();
    if (sel) { sel.removeAllRanges(); sel.addRange(range); }
    secretValue.focus();
  }

  // ---- create ---------------------------------------------------------------------------

  on(form, 'submit', async (ev) => {
    ev.preventDefault();
    createError.hidden = true;
    const name = $('create-name').value.trim();
    const role = $('create-role').value.trim();
    const models = $('create-models').value.split(',').map((m) => m.trim()).filter(Boolean);
    const days = Number($('create-expires').value || 0);
    const problem = !name ? 'Name: give the key a name.'
      : !/^[A-Za-z0-9_-]{1,64}$/.test(name) ? 'Name: only letters, digits, - and _ (at most 64).'
        : '';
    if (problem) {
      createError.textContent = problem;
      createError.hidden = false;
      $('create-name').focus();
      return;
    }
    const payload = { name };
    if (role) payload.role = role;
    if (models.length) payload.models = models;
    if (days > 0) payload.expires_at = new Date(Date.now() + days * 86400000).toISOString().replace(/\.\d+Z$/, 'Z');
    // A retry of the same request (without the expiry's clock) keeps its Idempotency-Key.
    const same = JSON.stringify({ ...payload, expires_at: days, org });
    if (!pendingCreate || pendingCreate.same !== same) pendingCreate = { same, key: uuid() };
    createSubmit.disabled = true;
    const forOrg = org;
    try {
      const minted = obj(await post(`/api/orgs/${seg(forOrg)}/keys`, payload, { headers: { 'Idempotency-Key': pendingCreate.key } }));
      pendingCreate = null;
      form.reset();
      showResult({ secret: str(minted.key), audit: minted.audit, note: `Created key ${str(minted.name) || name} in ${forOrg}.` });
      announce(`Key ${name} created. Copy its secret now: it will not be shown again.`);
    } catch (e) {
      createError.textContent = `The key could not be created: ${e.message}`;
      createError.hidden = false;
      announce(createError.textContent);
    } finally {
      createSubmit.disabled = false;
    }
    if (forOrg === org) loadList();
  });

  // ---- rotate ---------------------------------------------------------------------------

  async function rotate(k, graceValue, button) {
    showActionError('');
    const grace = Number(graceValue);
    const name = str(k.name);
    if (button) button.disabled = true;
    try {
      const minted = obj(await post(`/api/orgs/${seg(org)}/keys/${seg(k.id)}/rotate`, { grace_s: grace },
        { headers: { 'Idempotency-Key': uuid() } }));
      const until = minted.old_valid_until ? ` The old secret works until ${fmtDate(minted.old_valid_until)}.` : ' The old secret no longer works.';
      showResult({ secret: str(minted.key), audit: minted.audit, note: `Rotated ${name}.${until}` });
      announce(`Key ${name} rotated. Copy the new secret now: it will not be shown again.`);
    } catch (e) {
      showActionError(`${name} could not be rotated: ${e.message}`);
    }
    loadList();
  }

  // ---- revoke ---------------------------------------------------------------------------

  function askRevoke(k, button) {
    showActionError('');
    $('confirm-text').textContent = `Revoke the key "${str(k.name)}" (${str(k.prefix)}…${str(k.last_four)}) of ${org}? `
      + 'Every secret of it is refused from now on. This cannot be undone.';
    confirmAction = { k, button, org };
    dialog.showModal();
    $('confirm-cancel').focus();
  }

  on($('confirm-cancel'), 'click', () => dialog.close('cancel'));
  on(dialog, 'close', () => {
    const pending = confirmAction;
    confirmAction = null;
    if (pending && dialog.returnValue === 'ok') revoke(pending);
    else if (pending && pending.button && pending.button.isConnected) pending.button.focus();
    dialog.returnValue = '';
  });
  on($('confirm-ok'), 'click', () => dialog.close('ok'));

  async function revoke({ k, org: forOrg }) {
    const name = str(k.name);
    try {
      await del(`/api/orgs/${seg(forOrg)}/keys/${seg(k.id)}`);
    } catch (e) {
      showActionError(`${name} could not be revoked: ${e.message}`);
      loadList();
      return;
    }
    announce(`Key ${name} revoked.`);
    let audit = null;
    let auditError = '';
    try {
      audit = arr(obj(await get(`/api/orgs/${seg(forOrg)}/audit?limit=1`)).items)[0] || null;
      if (!audit) auditError = 'the audit log is empty';
    } catch (e) {
      auditError = e.message;
    }
    showResult({ audit, auditError, note: `Revoked ${name} in ${forOrg}.` });
    loadList();
  }

  return {
    async show() {
      await setUpOrg();
      loadList();
    },
    hide() { generation += 1; clearResult(); if (dialog.open) { confirmAction = null; dialog.close(); } },
    setOrg(next) { if (operator && next) org = str(next); },
    reset() {
      this.hide();
      form.reset();
      createError.hidden = true;
      showActionError('');
      listBox.replaceChildren();
      for (const [el, type, fn] of listeners) el.removeEventListener(type, fn);
    },
  };
}
