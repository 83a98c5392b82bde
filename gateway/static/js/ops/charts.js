/* onsale: the dashboard's charts of the last minutes, drawn here as small inline
 * SVG: queue length; arrivals, admissions and the rate set per second; seats held
 * and sold. Each has a text alternative, and spans when the sale was paused are
 * shaded. */

import { now as serverNow } from '../clock.js';
import { $, setText, show } from '../dom.js';
import { fmtSpan, num, rate } from './format.js';
import { GAP_MS, RATE_SMOOTH_MS, WINDOW_MAX_S, WINDOW_MIN_S, dash, saleState } from './state.js';

const SVG = 'http://www.w3.org/2000/svg';
let chartsFrame = 0;

export function scheduleCharts() {
  if (chartsFrame) return;
  chartsFrame = requestAnimationFrame(() => {
    chartsFrame = 0;
    renderCharts();
  });
}

function el(name, attrs, text) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text != null) e.textContent = text;
  return e;
}

/** The smallest of 1, 2, 4, 5 × 10^k that is at least `v` (its half is as round). */
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 4, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

/** Smoothed per-second rates of `field` over RATE_SMOOTH_MS, never across gaps. */
function ratesOf(samples, field) {
  const out = [];
  let segStart = 0;
  let j = 0;
  for (let i = 0; i < samples.length; i++) {
    if (i > 0 && samples[i].t - samples[i - 1].t > GAP_MS) {
      segStart = i;
      j = i;
      out.push(null); // a break in the line
    }
    if (i === segStart) continue;
    while (j < i - 1 && samples[i].t - samples[j].t > RATE_SMOOTH_MS) j++;
    if (j < segStart) j = segStart;
    const dt = (samples[i].t - samples[j].t) / 1000;
    if (dt <= 0) continue;
    out.push([samples[i].t, Math.max(0, samples[i][field] - samples[j][field]) / dt]);
  }
  return out;
}

/** The admission rate set over time, as steps, from the audit log's changes. */
function rateSteps(t0, t1) {
  const current = dash.sale.admission_per_second;
  const changes = dash.audit
    .filter((a) => a.action === 'admission' && a.to != null)
    .map((a) => ({ t: Date.parse(a.at), from: Number(a.from), to: Number(a.to) }))
    .filter((c) => !Number.isNaN(c.t))
    .sort((a, b) => a.t - b.t);
  const before = changes.filter((c) => c.t <= t0);
  const after = changes.filter((c) => c.t > t0);
  let v = before.length ? before[before.length - 1].to : after.length && Number.isFinite(after[0].from) ? after[0].from : current;
  if (v == null) return [];
  const pts = [[t0, v]];
  for (const c of after) {
    if (c.t > t1) break;
    pts.push([c.t, v]);
    v = c.to;
    pts.push([c.t, v]);
  }
  pts.push([t1, v]);
  if (current != null && current !== v) pts.push([t1, current]);
  return pts;
}

/** When the sale was paused, from the audit log: [[from, to], ...] within [t0, t1]. */
function pausedSpans(t0, t1) {
  const evs = dash.audit
    .filter((a) => a.action === 'pause' || a.action === 'resume' || a.action === 'close')
    .map((a) => ({ t: Date.parse(a.at), action: a.action }))
    .filter((e) => !Number.isNaN(e.t))
    .sort((a, b) => a.t - b.t);
  const spans = [];
  let start = null;
  for (const e of evs) {
    if (e.action === 'pause') start = start == null ? e.t : start;
    else if (start != null) {
      spans.push([start, e.t]);
      start = null;
    }
  }
  if (start != null && saleState() === 'paused') spans.push([start, t1]);
  return spans.filter(([a, b]) => b > t0 && a < t1).map(([a, b]) => [Math.max(a, t0), Math.min(b, t1)]);
}

function renderCharts() {
  const samples = dash.samples;
  const now = samples.length ? Math.max(samples[samples.length - 1].t, serverNow() - 1500) : serverNow();
  const first = samples.length ? samples[0].t : now;
  const span = Math.min(WINDOW_MAX_S, Math.max(WINDOW_MIN_S, Math.ceil((now - first) / 1000)));
  const t0 = now - span * 1000;
  const t1 = now;
  const inWindow = samples.filter((s) => s.t >= t0 - 6000);
  show($('charts-empty'), dash.historyLoaded && !samples.length);
  setText($('charts-span'), samples.length ? `Last ${fmtSpan(span)}` : '');

  const queue = inWindow.map((s) => [s.t, Math.max(0, s.next - s.served)]);
  const gapsBroken = (pts) => {
    const out = [];
    for (let i = 0; i < pts.length; i++) {
      if (i > 0 && pts[i][0] - pts[i - 1][0] > GAP_MS) out.push(null);
      out.push(pts[i]);
    }
    return out;
  };
  const last = samples.length ? samples[samples.length - 1] : null;
  const paused = pausedSpans(t0, t1);
  show($('charts-paused'), paused.length > 0);
  const q = gapsBroken(queue);
  drawChart($('chart-queue'), {
    id: 'queue',
    t0,
    t1,
    paused,
    series: [{ key: 'queue', label: 'Fans in line', points: q, area: true }],
    summary: summaryOf('Fans in line', q, (v) => num(Math.round(v))),
    fmt: (v) => num(v),
  });

  const arrivals = ratesOf(inWindow, 'next');
  const admitted = ratesOf(inWindow, 'served');
  const steps = samples.length ? rateSteps(Math.max(t0, first), t1) : [];
  drawChart($('chart-rates'), {
    id: 'rates',
    t0,
    t1,
    paused,
    series: [
      { key: 'rate', label: 'Admission rate set', points: steps, step: true },
      { key: 'arrivals', label: 'Arrivals per second', points: arrivals },
      { key: 'admitted', label: 'Admitted per second', points: admitted },
    ],
    summary: [
      summaryOf('Arrivals per second', arrivals, rate),
      summaryOf('Admitted per second', admitted, rate),
      steps.length ? `Admission rate set: ${num(steps[steps.length - 1][1])} per second.` : '',
    ].join(' '),
    fmt: (v) => rate(v),
  });

  const held = gapsBroken(inWindow.map((s) => [s.t, s.held]));
  const sold = gapsBroken(inWindow.map((s) => [s.t, s.sold]));
  drawChart($('chart-sales'), {
    id: 'sales',
    t0,
    t1,
    paused,
    series: [
      { key: 'held', label: 'Seats held', points: held },
      { key: 'sold', label: 'Seats sold', points: sold },
    ],
    summary: `${summaryOf('Seats held', held, num)} ${summaryOf('Seats sold', sold, num)}`,
    fmt: (v) => num(v),
  });
  if (last) $('chart-queue').dataset.last = String(Math.max(0, last.next - last.served));
}

function summaryOf(label, pts, fmt) {
  const vals = pts.filter(Boolean).map((p) => p[1]);
  if (!vals.length) return `${label}: no samples yet.`;
  return `${label}: now ${fmt(vals[vals.length - 1])}, highest ${fmt(Math.max(...vals))}, lowest ${fmt(Math.min(...vals))}.`;
}

function drawChart(box, { id, t0, t1, series, summary, fmt, paused }) {
  if (!box) return;
  const W = Math.max(220, Math.round(box.clientWidth || 480));
  const H = W < 420 ? 120 : 140;
  const m = { l: 44, r: 10, t: 10, b: 22 };
  const iw = W - m.l - m.r;
  const ih = H - m.t - m.b;
  let max = 0;
  let count = 0;
  for (const s of series) {
    for (const p of s.points) {
      if (!p || p[0] < t0 - 6000) continue;
      count++;
      if (p[1] > max) max = p[1];
    }
  }
  const top = niceMax(max * 1.05);
  const x = (t) => m.l + Math.max(0, Math.min(1, (t - t0) / (t1 - t0 || 1))) * iw;
  const y = (v) => m.t + ih - (v / top) * ih;

  const svg = el('svg', {
    viewBox: `0 0 ${W} ${H}`,
    width: W,
    height: H,
    role: 'img',
    'aria-labelledby': `chart-${id}-title chart-${id}-desc`,
    class: 'chart-svg',
  });
  svg.append(el('title', { id: `chart-${id}-title` }, series.map((s) => s.label).join(', ') + ` over the last ${fmtSpan((t1 - t0) / 1000)}`));
  const pausedNote = paused && paused.length ? ` The sale was paused during ${paused.length === 1 ? 'the shaded span' : `${paused.length} shaded spans`}.` : '';
  svg.append(el('desc', { id: `chart-${id}-desc` }, summary + pausedNote));

  const grid = el('g', { class: 'grid', 'aria-hidden': 'true' });
  for (const [a, b] of paused || []) {
    grid.append(el('rect', { x: x(a).toFixed(1), y: m.t, width: Math.max(1, x(b) - x(a)).toFixed(1), height: ih, class: 'paused-span' }));
  }
  for (const f of [0, 0.5, 1]) {
    const v = top * f;
    const yy = Math.round(y(v)) + 0.5;
    grid.append(el('line', { x1: m.l, x2: W - m.r, y1: yy, y2: yy, class: f === 0 ? 'axis' : 'gridline' }));
    grid.append(el('text', { x: m.l - 6, y: yy + 4, 'text-anchor': 'end', class: 'tick' }, fmt(v)));
  }
  /* time ticks at round seconds back from now: at most 5 gaps, fewer on a phone */
  const spanS = (t1 - t0) / 1000;
  const most = W < 420 ? 3 : 5;
  const stepS = [10, 15, 20, 30, 60, 120, 300].find((st) => spanS / st <= most) || 300;
  for (let ago = 0; ago <= spanS + 0.5; ago += stepS) {
    const xx = x(t1 - ago * 1000);
    if (ago > 0 && xx - m.l < 14) break; // too close to the left edge to read
    const label = ago === 0 ? 'now' : ago % 60 === 0 ? `−${ago / 60} min` : `−${ago} s`;
    grid.append(el('line', { x1: xx, x2: xx, y1: m.t + ih, y2: m.t + ih + 4, class: 'axis' }));
    grid.append(el('text', { x: xx, y: H - 6, 'text-anchor': ago === 0 ? 'end' : 'middle', class: 'tick' }, label));
  }
  svg.append(grid);

  const plot = el('g', { 'aria-hidden': 'true' });
  for (const s of series) {
    const segs = [];
    let cur = [];
    for (const p of s.points) {
      if (!p) {
        if (cur.length) segs.push(cur);
        cur = [];
        continue;
      }
      if (p[0] < t0 - 6000) continue;
      cur.push(p);
    }
    if (cur.length) segs.push(cur);
    let d = '';
    let area = '';
    for (const seg of segs) {
      const pts = seg.map((p) => [x(p[0]).toFixed(1), y(p[1]).toFixed(1)]);
      d += `M${pts.map((p) => p.join(' ')).join('L')}`;
      if (seg.length === 1) d += `h1`;
      if (s.area && seg.length > 1) {
        area += `M${pts[0][0]} ${y(0).toFixed(1)}L${pts.map((p) => p.join(' ')).join('L')}L${pts[pts.length - 1][0]} ${y(0).toFixed(1)}Z`;
      }
    }
    if (area) plot.append(el('path', { d: area, class: `area area-${s.key}` }));
    if (d) plot.append(el('path', { d, class: `line line-${s.key}`, 'data-series': s.key, 'data-points': segs.reduce((n, g) => n + g.length, 0) }));
    const lastSeg = segs[segs.length - 1];
    if (lastSeg && !s.step) {
      const p = lastSeg[lastSeg.length - 1];
      plot.append(el('circle', { cx: x(p[0]).toFixed(1), cy: y(p[1]).toFixed(1), r: 3, class: `dot dot-${s.key}` }));
    }
  }
  svg.append(plot);
  if (!count) {
    svg.append(el('text', { x: m.l + iw / 2, y: m.t + ih / 2, 'text-anchor': 'middle', class: 'empty' }, 'No samples yet'));
  }
  box.replaceChildren(svg);
}

