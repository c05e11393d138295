// Pool view (operators): instances, queue, charts. Polls /admin/api/pool every 2 s while the
// view is shown and the tab is visible; never more than once a second.

import { get } from './api.js';
import { lineChart } from './charts.js';
import {
  h, setAttrs, fill, table, errorBox, empty, arr, num, str, obj,
  fmtInt, fmtNum, fmtBytes, fmtClock, fmtDuration, timeEl,
} from './dom.js';

const EVERY_MS = 2000;
const MIN_GAP_MS = 1000;
const RETRY_MS = 5000;

export function poolView(body, announce) {
  let active = false;
  let timer = 0;
  let controller = null;
  let lastStart = 0;
  let lastData = null;
  let lastOkAt = null;
  let failing = false;

  function schedule(ms) {
    clearTimeout(timer);
    timer = setTimeout(tick, Math.max(ms, MIN_GAP_MS - (Date.now() - lastStart), 0));
  }

  async function tick() {
    clearTimeout(timer);
    if (!active || document.hidden || controller) return;
    lastStart = Date.now();
    controller = new AbortController();
    const mine = controller;
    let next = EVERY_MS;
    try {
      const data = await get('/admin/api/pool', { signal: mine.signal });
      if (!active || mine.signal.aborted) return;
      lastData = obj(data);
      lastOkAt = new Date();
      if (failing) announce('Pool data is live again.');
      failing = false;
      render(null);
    } catch (e) {
      if (mine.signal.aborted || (e && e.name === 'AbortError') || !active) return;
      failing = true;
      render(e);
      if (e.status === 401 || e.status === 403) next = 0; // stop: signing in again is needed
      else next = RETRY_MS;
    } finally {
      if (controller === mine) controller = null;
    }
    if (active && next) schedule(next);
  }

  function render(err) {
    const parts = [];
    if (err) {
      parts.push(errorBox(lastData
        ? `Refreshing failed: ${err.message} (showing data from ${fmtClock(lastOkAt)}).`
        : `The pool could not be loaded: ${err.message}`, 'pool-error'));
    }
    if (lastData) parts.push(renderPool(lastData, lastOkAt));
    else if (!err) parts.push(empty('Loading…'));
    // Every refresh rebuilds the view: keep inner scroll positions and keyboard focus.
    const kept = [...body.querySelectorAll('[data-keep]')].map((el) => ({
      key: el.dataset.keep, left: el.scrollLeft, top: el.scrollTop, focused: el === document.activeElement,
    }));
    fill(body, parts);
    for (const k of kept) {
      const el = [...body.querySelectorAll('[data-keep]')].find((e) => e.dataset.keep === k.key);
      if (!el) continue;
      el.scrollLeft = k.left;
      el.scrollTop = k.top;
      if (k.focused) el.focus({ preventScroll: true });
    }
  }

  function onVisibility() {
    if (!active) return;
    if (document.hidden) {
      clearTimeout(timer);
    } else {
      schedule(0);
    }
  }
  document.addEventListener('visibilitychange', onVisibility);

  return {
    show() {
      if (active) return;
      active = true;
      if (!lastData) fill(body, empty('Loading…'));
      schedule(0);
    },
    hide() {
      active = false;
      clearTimeout(timer);
      if (controller) controller.abort();
      controller = null;
    },
    reset() {
      this.hide();
      lastData = null;
      lastOkAt = null;
      failing = false;
      body.replaceChildren();
    },
  };
}

function renderPool(p, at) {
  const queue = obj(p.queue);
  const instances = arr(p.instances);
  const healthy = instances.filter((i) => i && i.healthy === true).length;
  const waiting = num(queue.waiting) ?? 0;
  const capacity = num(queue.capacity) ?? 0;

  const stats = h('div', { class: 'stats' },
    stat('Instances', `${healthy} / ${instances.length} healthy`, 'pool-healthy-count'),
    stat('Queue', `${fmtInt(waiting)} / ${fmtInt(capacity)} waiting`, 'queue-depth',
      meter(waiting, capacity, 'Queue depth')),
    stat('Rejected from queue', fmtInt(queue.rejected_total), 'queue-rejected'),
    stat('Queue timeout', num(queue.timeout_ms) === null ? '—' : fmtDuration(queue.timeout_ms / 1000), 'queue-timeout'),
    stat('Balancing', str(p.balance) || '—', 'pool-balance'));

  return h('div', { class: 'pool' },
    stats,
    charts(obj(p.series)),
    h('h2', null, 'Instances'),
    instances.length
      ? h('div', { class: 'instances' }, instances.map((i) => instance(obj(i))))
      : empty('No instances are configured.'),
    h('p', { class: 'muted small', 'data-testid': 'pool-updated' },
      `Updated ${fmtClock(at)} · refreshes every ${EVERY_MS / 1000} s while this tab is visible`));
}

function stat(label, value, testid, extra) {
  return h('div', { class: 'stat' },
    h('div', { class: 'stat-label' }, label),
    h('div', { class: 'stat-value', 'data-testid': testid }, value),
    extra);
}

/** A thin bar for "x of y" (in-flight / cap, queue depth / capacity). */
function meter(value, max, label) {
  const v = num(value) ?? 0;
  const m = num(max) ?? 0;
  const ratio = m > 0 ? Math.min(1, v / m) : 0;
  const fill = h('span', { class: 'meter-fill' });
  fill.style.width = `${(ratio * 100).toFixed(1)}%`;
  const level = ratio >= 1 ? 'hard' : ratio >= 0.75 ? 'soft' : 'ok';
  return h('span', {
    class: 'meter', role: 'meter', 'aria-label': label, 'aria-valuemin': '0',
    'aria-valuemax': String(m), 'aria-valuenow': String(v), 'data-level': level,
  }, fill);
}

function charts(series) {
  const step = num(series.step_s) && series.step_s > 0 ? series.step_s : 10;
  const points = arr(series.points).map(obj).filter((pt) => num(pt.t) !== null);
  const t1 = points.length ? points[points.length - 1].t : Math.floor(Date.now() / 1000);
  const t0 = t1 - 15 * 60;
  const rps = points.map((pt) => ({ t: pt.t, v: (num(pt.requests) ?? 0) / step }));
  const ratio = points.map((pt) => {
    const r = num(pt.requests) ?? 0;
    return { t: pt.t, v: r > 0 ? (num(pt.errors) ?? 0) / r : null };
  });
  const p50 = points.map((pt) => ({ t: pt.t, v: num(pt.ttft_p50_ms) }));
  const p99 = points.map((pt) => ({ t: pt.t, v: num(pt.ttft_p99_ms) }));
  const ms = (v, tick) => (num(v) === null ? '—' : v >= 1000 ? `${fmtNum(v / 1000)}${tick ? '' : ' '}s` : `${Math.round(v)}${tick ? '' : ' '}ms`);
  return h('div', { class: 'charts', 'data-testid': 'pool-charts' },
    lineChart({
      title: 'Requests/s', testid: 'chart-rps', t0, t1,
      lines: [{ name: 'req/s', points: rps }],
      fmt: (v) => (num(v) === null ? '—' : fmtNum(v)),
    }),
    lineChart({
      title: 'Error ratio (5xx)', testid: 'chart-errors', t0, t1, minMax: 0.01,
      lines: [{ name: 'errors', points: ratio, cls: 'l3' }],
      fmt: (v) => (num(v) === null ? '—' : `${fmtNum(v * 100)}%`),
    }),
    lineChart({
      title: 'Time to first token', testid: 'chart-ttft', t0, t1, minMax: 100,
      lines: [{ name: 'p50', points: p50 }, { name: 'p99', points: p99, cls: 'l2' }],
      fmt: ms,
    }));
}

function instance(i) {
  const url = str(i.url);
  const ok = i.healthy === true;
  const loaded = arr(i.loaded).map(obj);
  const available = arr(i.available).map(str).filter(Boolean);
  const events = arr(i.events).map(obj);
  const inFlight = num(i.in_flight) ?? 0;
  const cap = num(i.cap);

  return h('article', {
    class: `card instance ${ok ? 'is-ok' : 'is-bad'}`, 'data-testid': 'pool-instance',
    dataset: { url, healthy: String(ok) }, 'aria-label': `Instance ${url}`,
  },
  h('div', { class: 'instance-head' },
    h('h3', { class: 'instance-url' }, url || '(no url)'),
    h('span', { class: `badge ${ok ? 'ok' : 'bad'}`, 'data-testid': 'instance-health' },
      h('span', { class: 'dot', 'aria-hidden': 'true' }), ok ? 'Healthy' : 'Unhealthy')),
  h('div', { class: 'instance-meta' },
    h('span', { 'data-testid': 'instance-inflight' },
      'In flight ', h('strong', null, `${fmtInt(inFlight)} / ${cap === null ? '∞' : fmtInt(cap)}`)),
    cap ? meter(inFlight, cap, `In flight on ${url}`) : null,
    h('span', { class: 'muted' }, num(i.last_check_ms_ago) === null
      ? 'not checked yet' : `checked ${fmtDuration(i.last_check_ms_ago / 1000)} ago`)),
  h('h4', null, `Loaded models (${loaded.length})`),
  loaded.length
    ? setAttrs(table(`Models loaded on ${url}`, ['Model', 'Size', 'VRAM', 'Expires'], loaded.map((m) => h('tr', {
      'data-testid': 'loaded-model', dataset: { model: str(m.name) },
    },
    h('td', null, h('code', null, str(m.name) || '—')),
    h('td', { class: 'num' }, fmtBytes(m.size)),
    h('td', { class: 'num' }, fmtBytes(m.size_vram)),
    h('td', null, timeEl(m.expires_at, { relative: true }))))), { dataset: { keep: `loaded ${url}` } })
    : empty('None loaded.'),
  h('h4', null, `Available (${available.length})`),
  available.length
    ? h('ul', { class: 'chips' }, available.map((m) => h('li', { 'data-testid': 'available-model' }, m)))
    : empty('None reported.'),
  h('h4', null, 'Recent events'),
  events.length
    ? h('ul', { class: 'events', dataset: { keep: `events ${url}` } }, events.map((e) => h('li', {
      'data-testid': 'instance-event', dataset: { kind: str(e.kind) },
    },
    timeEl(e.at, { relative: true }),
    h('span', { class: `tag ${kindClass(e.kind)}` }, str(e.kind) || 'event'),
    h('span', { class: 'msg' }, str(e.message)))))
    : empty('No recent events.'));
}

function kindClass(kind) {
  if (kind === 'admitted') return 'ok';
  if (kind === 'ejected') return 'bad';
  return 'warn';
}
