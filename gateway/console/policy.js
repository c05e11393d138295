// Policy view (operators): the effective policy per org, when it was loaded, its files and
// the last edit that was refused (kept the previous policy).

import { get } from './api.js';
import {
  h, fill, table, errorBox, empty, arr, num, str, obj, fmtInt, fmtDate, fmtDuration, timeEl,
} from './dom.js';

const FIELDS = [
  ['requests_per_minute', 'Requests/min'],
  ['burst', 'Burst'],
  ['user_requests_per_minute', 'Requests/min per user'],
  ['tokens_per_minute', 'Tokens/min'],
  ['max_concurrent_streams', 'Concurrent streams'],
  ['models', 'Models'],
  ['weight', 'Queue weight'],
  ['admin_roles', 'Admin roles'],
  ['quota', 'Quota'],
];
const KNOWN = new Set([...FIELDS.map(([k]) => k), 'users', 'keys']);

export function policyView(body) {
  let generation = 0;

  async function load() {
    const mine = ++generation;
    fill(body, empty('Loading…'));
    try {
      const p = obj(await get('/admin/api/policy'));
      if (mine === generation) fill(body, renderPolicy(p));
    } catch (e) {
      if (mine === generation) fill(body, errorBox(`The policy could not be loaded: ${e.message}`, 'policy-error'));
    }
  }
  return { show: load, hide() { generation += 1; }, reset() { generation += 1; body.replaceChildren(); } };
}

function renderPolicy(p) {
  const files = arr(p.files).map(str);
  const orgs = Object.entries(obj(p.orgs)).sort(([a], [b]) => a.localeCompare(b));
  const age = num(p.age_s);
  return h('div', { class: 'policy' },
    h('div', { class: 'card policy-summary' },
      h('dl', { class: 'kv' },
        h('dt', null, 'Loaded'),
        h('dd', { id: 'policy-loaded-at', 'data-testid': 'policy-loaded-at' },
          timeEl(p.loaded_at), age === null ? '' : ` (${fmtDuration(age)} ago)`),
        h('dt', null, 'Files'),
        h('dd', { 'data-testid': 'policy-files' }, files.length
          ? h('ul', { class: 'plain' }, files.map((f) => h('li', null, h('code', null, f))))
          : h('span', { class: 'muted' }, 'none')),
        h('dt', null, 'Last refused edit'),
        h('dd', { id: 'policy-last-error', 'data-testid': 'policy-last-error', class: p.last_error ? 'has-error' : '' },
          lastError(p.last_error)))),
    h('h2', null, 'Defaults'),
    h('div', { class: 'card' }, limits(obj(p.defaults), 'policy-defaults')),
    h('h2', null, `Orgs (${orgs.length})`),
    orgs.length
      ? h('div', { class: 'policy-orgs' }, orgs.map(([name, l]) => orgPolicy(name, obj(l))))
      : empty('No org has its own policy: the defaults apply to all.'));
}

function lastError(e) {
  if (!e || typeof e !== 'object') return h('span', { class: 'muted' }, 'none');
  const message = str(e.message);
  const m = /^(.+?:\d+(?::\d+)?):\s*([\s\S]*)$/.exec(message);
  return h('div', { class: 'refused', role: 'note' },
    h('p', { class: 'refused-msg' },
      m ? [h('mark', { 'data-testid': 'policy-error-location' }, m[1]), ': ', m[2]] : message || 'refused (no message)'),
    h('p', { class: 'muted small' }, e.at ? ['Refused ', timeEl(e.at), '. The previous policy is still in force.'] : 'The previous policy is still in force.'));
}

function orgPolicy(name, l) {
  const users = Object.entries(obj(l.users));
  const keys = Object.entries(obj(l.keys));
  return h('article', { class: 'card', 'data-testid': 'policy-org', dataset: { org: name } },
    h('h3', null, name),
    limits(l),
    overrides('Users', users, name),
    overrides('Keys', keys, name));
}

function overrides(title, entries, org) {
  if (!entries.length) return null;
  return h('div', null,
    h('h4', null, `${title} (${entries.length})`),
    table(`${title} overrides in ${org}`, [title === 'Users' ? 'User' : 'Key', 'Limits'],
      entries.sort(([a], [b]) => a.localeCompare(b)).map(([n, v]) => h('tr', null,
        h('th', { scope: 'row' }, h('code', null, n)),
        h('td', null, compact(obj(v)))))));
}

/** All limits of an org or the defaults, as a definition list. */
function limits(l, testid) {
  const rows = [];
  for (const [k, label] of FIELDS) {
    if (!(k in l)) continue;
    rows.push(h('div', null, h('dt', null, label), h('dd', null, value(k, l[k]))));
  }
  for (const [k, v] of Object.entries(l)) {
    if (KNOWN.has(k)) continue;
    rows.push(h('div', null, h('dt', null, k), h('dd', null, value(k, v))));
  }
  return rows.length ? h('dl', { class: 'limits', 'data-testid': testid }, rows) : empty('Nothing set.');
}

/** The fields an override sets, on one line. */
function compact(l) {
  const parts = Object.entries(l).map(([k, v]) => {
    const label = (FIELDS.find(([f]) => f === k) || [k, k])[1];
    return h('span', { class: 'pair' }, `${label}: `, value(k, v));
  });
  return parts.length ? h('div', { class: 'pairs' }, parts) : h('span', { class: 'muted' }, 'nothing set');
}

function value(key, v) {
  if (v === null || v === undefined) return h('span', { class: 'muted' }, 'no limit');
  if (key === 'models') {
    const list = arr(v).map(str);
    if (list.length === 1 && list[0] === '*') return 'any';
    return list.length ? h('span', null, list.map((m, i) => [i ? ', ' : '', h('code', null, m)])) : h('span', { class: 'muted' }, 'none');
  }
  if (key === 'quota') {
    const q = obj(v);
    const soft = num(q.soft_tokens);
    const hard = num(q.hard_tokens);
    const lim = (n) => (n ? fmtInt(n) : 'none');
    return `per ${str(q.period) || 'month'}: soft ${lim(soft)}, hard ${lim(hard)}`;
  }
  if (Array.isArray(v)) return v.length ? v.map(str).join(', ') : h('span', { class: 'muted' }, 'none');
  if (typeof v === 'number') return fmtInt(v) === '—' ? str(v) : (Number.isInteger(v) ? fmtInt(v) : str(v));
  if (typeof v === 'object') return h('code', null, JSON.stringify(v));
  if (typeof v === 'string' && /^\d{4}-\d\d-\d\dT/.test(v)) return fmtDate(v);
  return str(v);
}
