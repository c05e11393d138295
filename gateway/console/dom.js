// Small DOM and formatting helpers. Text always goes in as text (never as HTML).

/**
 * h('div', {class: 'card', dataset: {org: 'acme'}}, 'text', child, [more])
 * Attributes set with setAttribute; `on*` keys become listeners; null/false are skipped.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

export function setAttrs(el, attrs) {
  if (!attrs) return el;
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'dataset') {
      for (const [dk, dv] of Object.entries(v)) if (dv !== null && dv !== undefined) el.dataset[dk] = String(dv);
    } else if (k.startsWith('on') && typeof v === 'function') {
      el.addEventListener(k.slice(2).toLowerCase(), v);
    } else if (k === 'class') {
      el.className = v;
    } else if (k === 'text') {
      el.textContent = String(v);
    } else {
      el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  return el;
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Replaces everything inside `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

export const $ = (id) => document.getElementById(id);

/**
 * A table inside its own horizontally scrolling container. Each cell gets its column's name in
 * data-label, so a `stack` table can show its rows as cards on narrow screens.
 */
export function table(caption, headers, rows, cls = '') {
  const body = h('tbody', null, rows);
  labelCells(body, headers);
  return h('div', { class: `table-wrap ${cls}`, tabindex: '0', role: 'region', 'aria-label': caption, dataset: { headers: headers.join('\u001f') } },
    h('table', null,
      h('caption', { class: 'sr-only' }, caption),
      h('thead', null, h('tr', null, headers.map((t) => h('th', { scope: 'col' }, t)))),
      body));
}

/** Sets data-label on the cells of rows added later to a table() body. */
export function labelCells(body, headers) {
  const names = headers || str(body.closest('.table-wrap')?.dataset.headers).split('\u001f');
  for (const tr of body.children) [...tr.children].forEach((cell, i) => { cell.dataset.label = names[i] || ''; });
}

export function errorBox(message, testid) {
  return h('p', { class: 'error', 'data-testid': testid || 'error' }, String(message || 'Something went wrong.'));
}

export function empty(text) {
  return h('p', { class: 'muted empty' }, text);
}

// ---- values that may be missing -------------------------------------------------------

export const arr = (v) => (Array.isArray(v) ? v : []);
export const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
export const str = (v) => (v === null || v === undefined ? '' : String(v));
export const obj = (v) => (v && typeof v === 'object' && !Array.isArray(v) ? v : {});

// ---- formatting ----------------------------------------------------------------------

const intFmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const decFmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });

export function fmtInt(v) {
  const n = num(v);
  return n === null ? '—' : intFmt.format(n);
}

export function fmtNum(v, digits = 2) {
  const n = num(v);
  if (n === null) return '—';
  return digits === 2 ? decFmt.format(n) : n.toFixed(digits);
}

/** 1536 → "1.5 KiB". */
export function fmtBytes(v) {
  const n = num(v);
  if (n === null) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let x = n;
  let i = 0;
  while (Math.abs(x) >= 1024 && i < units.length - 1) { x /= 1024; i += 1; }
  return `${i === 0 ? x : x.toFixed(x < 10 ? 1 : 0)} ${units[i]}`;
}

export function parseTime(v) {
  if (!v) return null;
  const d = new Date(v);
  return Number.isNaN(d.getTime()) ? null : d;
}

const dateFmt = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
});
const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });

export function fmtDate(v) {
  const d = parseTime(v);
  return d ? dateFmt.format(d) : '—';
}

export function fmtClock(v) {
  const d = v instanceof Date ? v : parseTime(v);
  return d ? timeFmt.format(d) : '—';
}

/** Seconds → "45 s", "12 min", "3 h 5 min", "2 d 4 h". */
export function fmtDuration(seconds) {
  const s = num(seconds);
  if (s === null) return '—';
  const a = Math.abs(Math.round(s));
  if (a < 60) return `${a} s`;
  if (a < 3600) return `${Math.floor(a / 60)} min`;
  if (a < 86400) {
    const m = Math.floor((a % 3600) / 60);
    return `${Math.floor(a / 3600)} h${m ? ` ${m} min` : ''}`;
  }
  const hr = Math.floor((a % 86400) / 3600);
  return `${Math.floor(a / 86400)} d${hr ? ` ${hr} h` : ''}`;
}

/** "in 3 h" / "5 min ago" relative to now; "—" when missing. */
export function fmtRelative(v) {
  const d = parseTime(v);
  if (!d) return '—';
  const diff = (d.getTime() - Date.now()) / 1000;
  if (Math.abs(diff) < 5) return 'now';
  return diff > 0 ? `in ${fmtDuration(diff)}` : `${fmtDuration(-diff)} ago`;
}

const dayFmt = new Intl.DateTimeFormat(undefined, { year: 'numeric', month: 'short', day: 'numeric' });

/** A <time>: the date (or relative, or the day only when short), the rest in its title. */
export function timeEl(v, { relative = false, short = false } = {}) {
  const d = parseTime(v);
  if (!d) return h('span', { class: 'muted' }, '—');
  const text = relative ? fmtRelative(d) : short ? dayFmt.format(d) : fmtDate(d);
  const title = relative ? fmtDate(d) : `${fmtDate(d)} (${fmtRelative(d)})`;
  return h('time', { datetime: d.toISOString(), title }, text);
}
