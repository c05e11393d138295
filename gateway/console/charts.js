// Hand-drawn SVG line charts (no library). Attributes only, never inline styles.

import { h } from './dom.js';

const NS = 'http://www.w3.org/2000/svg';
const W = 320;
const H = 120;
const PAD = { l: 36, r: 8, t: 8, b: 18 };

function s(tag, attrs, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  for (const c of children) if (c) el.append(c);
  return el;
}

/** A round upper bound for the y axis: 0.37 → 0.4, 7 → 8, 130 → 150. */
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

/**
 * A line chart of one or more series sharing an axis.
 *   title: 'Requests/s'; lines: [{name, points: [{t, v|null}], cls: 'l1'|'l2'}]
 *   t0..t1: the time window (unix seconds); fmt: value → text; minMax: the y axis' least top.
 */
export function lineChart({ title, testid, lines, t0, t1, fmt, minMax = 0 }) {
  const all = lines.flatMap((l) => l.points.map((p) => p.v)).filter((v) => typeof v === 'number' && Number.isFinite(v));
  const top = niceMax(Math.max(minMax, ...all, 0));
  const span = Math.max(1, t1 - t0);
  const x = (t) => PAD.l + ((t - t0) / span) * (W - PAD.l - PAD.r);
  const y = (v) => PAD.t + (1 - v / top) * (H - PAD.t - PAD.b);

  const svg = s('svg', {
    viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', focusable: 'false',
    'aria-label': `${title}, last 15 minutes: ${lines.map((l) => `${l.name} latest ${fmt(latest(l.points))}, highest ${fmt(highest(l.points))}`).join('; ')}`,
  });
  // Grid: 0, half, top.
  for (const f of [0, 0.5, 1]) {
    const yy = y(top * f);
    svg.append(s('line', { x1: PAD.l, x2: W - PAD.r, y1: yy, y2: yy, class: f === 0 ? 'axis' : 'grid' }));
    const label = s('text', { x: PAD.l - 4, y: yy + 3, class: 'tick', 'text-anchor': 'end' });
    label.textContent = fmt(top * f, true);
    svg.append(label);
  }
  for (const [t, text] of [[t0, '−15 min'], [t0 + span / 2, '−7.5'], [t1, 'now']]) {
    const anchor = t === t0 ? 'start' : t === t1 ? 'end' : 'middle';
    const label = s('text', { x: x(t), y: H - 4, class: 'tick', 'text-anchor': anchor });
    label.textContent = text;
    svg.append(label);
  }
  lines.forEach((line, i) => {
    const segs = segments(line.points);
    const cls = line.cls || `l${i + 1}`;
    for (const seg of segs) {
      if (seg.length === 1) {
        svg.append(s('circle', { cx: x(seg[0].t), cy: y(seg[0].v), r: 2, class: `dot ${cls}` }));
        continue;
      }
      const d = seg.map((p, j) => `${j ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join('');
      if (i === 0) {
        const area = `${d}L${x(seg[seg.length - 1].t).toFixed(1)},${y(0)}L${x(seg[0].t).toFixed(1)},${y(0)}Z`;
        svg.append(s('path', { d: area, class: `area ${cls}` }));
      }
      svg.append(s('path', { d, class: `line ${cls}`, 'vector-effect': 'non-scaling-stroke' }));
    }
  });

  const legend = h('div', { class: 'legend' }, lines.map((l, i) => h('span', { class: `key ${l.cls || `l${i + 1}`}` },
    h('span', { class: 'swatch', 'aria-hidden': 'true' }), `${l.name} `, h('strong', null, fmt(latest(l.points))))));
  return h('figure', { class: 'chart-card', 'data-testid': testid },
    h('figcaption', null, h('span', { class: 'chart-title' }, title), legend),
    svg);
}

function segments(points) {
  const out = [];
  let cur = [];
  for (const p of points) {
    if (typeof p.v === 'number' && Number.isFinite(p.v)) cur.push(p);
    else if (cur.length) { out.push(cur); cur = []; }
  }
  if (cur.length) out.push(cur);
  return out;
}

function latest(points) {
  for (let i = points.length - 1; i >= 0; i -= 1) {
    const v = points[i].v;
    if (typeof v === 'number' && Number.isFinite(v)) return v;
  }
  return null;
}

function highest(points) {
  const vs = points.map((p) => p.v).filter((v) => typeof v === 'number' && Number.isFinite(v));
  return vs.length ? Math.max(...vs) : null;
}
