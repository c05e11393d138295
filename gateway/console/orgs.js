// Orgs view: tokens this period against the soft and hard limits, counters by model, and the
// top users and keys from the backend's usage report.

import { get, seg } from './api.js';
import {
  h, fill, table, errorBox, empty, arr, num, str, obj,
  fmtInt, fmtDate, fmtRelative, fmtNum, parseTime,
} from './dom.js';

const TOP = 5;

/** ok | soft | hard: red from 90 % of the hard limit, amber past the soft one. */
export function usageLevel(used, soft, hard) {
  const u = num(used) ?? 0;
  const s = num(soft) ?? 0;
  const hd = num(hard) ?? 0;
  if (hd > 0 && u >= 0.9 * hd) return 'hard';
  if (s > 0 && u > s) return 'soft';
  return 'ok';
}

export function orgsView(body, { canManageKeys, openKeys }) {
  let generation = 0;

  async function load() {
    const mine = ++generation;
    fill(body, empty('Loading…'));
    let data;
    try {
      data = obj(await get('/admin/api/orgs'));
    } catch (e) {
      if (mine === generation) fill(body, errorBox(`The orgs could not be loaded: ${e.message}`, 'orgs-error'));
      return;
    }
    if (mine !== generation) return;
    const orgs = arr(data.orgs).map(obj).filter((o) => str(o.org))
      .sort((a, b) => str(a.org).localeCompare(str(b.org)));
    if (!orgs.length) {
      fill(body, empty('No org has a policy or has made requests yet.'));
      return;
    }
    const cards = orgs.map((o) => orgCard(o));
    fill(body, h('div', { class: 'orgs' }, cards.map((c) => c.el)));
    cards.forEach((c) => c.loadTop(() => mine === generation));
  }

  function orgCard(o) {
    const org = str(o.org);
    const topBox = h('div', { class: 'org-top', 'data-testid': 'org-top' }, empty('Loading top users and keys…'));
    const el = h('article', { class: 'card org', 'data-testid': 'org-usage', dataset: { org }, 'aria-label': `Org ${org}` },
      h('div', { class: 'org-head' },
        h('h2', null, org),
        canManageKeys(org)
          ? h('button', { type: 'button', class: 'btn ghost small', 'data-testid': 'org-keys', onclick: () => openKeys(org) }, 'Keys')
          : null),
      usageBar(o),
      h('dl', { class: 'counters' },
        counter('Requests', fmtInt(o.requests), 'org-requests'),
        counter('Rate-limited', fmtInt(o.rate_limited), 'org-rate-limited'),
        counter('Quota-refused', fmtInt(o.quota_refused), 'org-quota-refused')),
      h('p', { class: 'muted small' }, parseTime(o.since)
        ? `Counters of this gateway process since ${fmtDate(o.since)}.` : 'Counters of this gateway process.'),
      h('div', { class: 'org-detail' }, byModel(o), topBox));
    return {
      el,
      async loadTop(current) {
        try {
          const report = obj(await get(`/api/orgs/${seg(org)}/usage`));
          const names = await keyNames(org, report);
          if (current()) fill(topBox, topTables(org, report, names));
        } catch (e) {
          if (current()) fill(topBox, errorBox(`Top users and keys could not be loaded: ${e.message}`, 'org-top-error'));
        }
      },
    };
  }

  return { show: load, hide() { generation += 1; }, reset() { generation += 1; body.replaceChildren(); } };
}

/** Key id → name, to show the top keys by name; empty when the list cannot be read. */
async function keyNames(org, report) {
  const names = new Map();
  if (!arr(report.by_key).some((k) => obj(k).key_id)) return names;
  try {
    const page = obj(await get(`/api/orgs/${seg(org)}/keys?limit=100`));
    for (const k of arr(page.items).map(obj)) names.set(str(k.id), str(k.name));
  } catch { /* ids are shown instead */ }
  return names;
}

function counter(label, value, testid) {
  return h('div', null, h('dt', null, label), h('dd', { 'data-testid': testid }, value));
}

function usageBar(o) {
  const used = num(o.used) ?? 0;
  const soft = num(o.soft_tokens) ?? 0;
  const hard = num(o.hard_tokens) ?? 0;
  const level = usageLevel(used, soft, hard);
  const scale = hard > 0 ? hard : soft > 0 ? soft / 0.8 : 0;
  const ratio = scale > 0 ? Math.min(1, used / scale) : 0;

  const fillEl = h('span', { class: 'bar-fill' });
  fillEl.style.width = `${(ratio * 100).toFixed(2)}%`;
  const marks = [];
  if (soft > 0 && scale > 0 && soft < scale) {
    const m = h('span', { class: 'bar-mark', title: `soft limit ${fmtInt(soft)}`, 'aria-hidden': 'true' });
    m.style.left = `${((soft / scale) * 100).toFixed(2)}%`;
    marks.push(m);
  }
  const pct = scale > 0 && hard > 0 ? ` (${fmtNum((used / hard) * 100, 2)}% of hard)` : '';
  const levelText = { ok: 'within limits', soft: 'past the soft limit', hard: used >= hard ? 'at or past the hard limit' : 'near the hard limit' }[level];
  const period = str(o.period) || 'period';

  return h('div', { class: 'usage' },
    h('div', { class: 'usage-line' },
      h('span', null, h('strong', { 'data-testid': 'org-used' }, fmtInt(used)), ` tokens this ${period}${pct}`),
      h('span', { class: `tag ${level === 'ok' ? 'ok' : level === 'soft' ? 'warn' : 'bad'}`, 'data-testid': 'org-level' }, levelText)),
    h('div', {
      class: 'bar', 'data-testid': 'org-usage-bar', role: 'meter',
      'aria-label': `Tokens used by ${str(o.org)} this ${period}`,
      'aria-valuemin': '0', 'aria-valuemax': String(scale || used), 'aria-valuenow': String(used),
      'aria-valuetext': `${fmtInt(used)} tokens, ${levelText}`,
      dataset: { level, used: String(used), soft: String(soft), hard: String(hard) },
    }, fillEl, marks),
    h('div', { class: 'usage-limits muted small' },
      h('span', { 'data-testid': 'org-soft' }, `Soft limit: ${soft > 0 ? fmtInt(soft) : 'none'}`),
      h('span', { 'data-testid': 'org-hard' }, `Hard limit: ${hard > 0 ? fmtInt(hard) : 'none'}`),
      h('span', { 'data-testid': 'org-resets' }, parseTime(o.resets_at)
        ? `Resets ${fmtDate(o.resets_at)} (${fmtRelative(o.resets_at)})` : 'Reset time unknown')));
}

function byModel(o) {
  const rows = arr(o.by_model).map(obj);
  return h('div', null,
    h('h3', null, 'By model'),
    rows.length
      ? table(`Requests and tokens by model for ${str(o.org)}`, ['Model', 'Requests', 'Prompt tok.', 'Completion tok.'],
        rows.map((m) => h('tr', { 'data-testid': 'org-model', dataset: { model: str(m.model) } },
          h('td', null, h('code', null, str(m.model) || '—')),
          h('td', { class: 'num' }, fmtInt(m.requests)),
          h('td', { class: 'num' }, fmtInt(m.prompt_tokens)),
          h('td', { class: 'num' }, fmtInt(m.completion_tokens)))))
      : empty('No requests since the gateway started.'));
}

function topTables(org, report, names) {
  const users = arr(report.by_user).map(obj).slice(0, TOP);
  const keys = arr(report.by_key).map(obj).slice(0, TOP);
  const periodLabel = str(obj(report.period).label);
  const row = (testid, name) => (r) => h('tr', { 'data-testid': testid },
    h('td', null, name(r)),
    h('td', { class: 'num' }, fmtInt(r.requests)),
    h('td', { class: 'num' }, fmtInt(r.total_tokens)));
  return [
    h('div', null,
      h('h3', null, `Top users${periodLabel ? ` (${periodLabel})` : ''}`),
      users.length
        ? table(`Top users of ${org}`, ['User', 'Requests', 'Tokens'],
          users.map(row('org-top-user', (r) => (r.user_id ? h('code', null, str(r.user_id)) : h('span', { class: 'muted' }, '(none)')))))
        : empty('No usage recorded this period.')),
    h('div', null,
      h('h3', null, `Top keys${periodLabel ? ` (${periodLabel})` : ''}`),
      keys.length
        ? table(`Top keys of ${org}`, ['Key', 'Requests', 'Tokens'],
          keys.map(row('org-top-key', (r) => {
            if (!r.key_id) return h('span', { class: 'muted' }, '(JWT, no key)');
            const name = names.get(str(r.key_id));
            return name ? h('span', { title: `key id ${str(r.key_id)}` }, name) : h('code', null, str(r.key_id));
          })))
        : empty('No usage recorded this period.')),
  ];
}
