// AuroraQ live status page. Vanilla ES2020, no dependencies, no build step.
// Server data is only ever written with textContent / setAttribute, never innerHTML.
'use strict';
(() => {
const KEY_STORE = 'auroraq_key';
const MAX_POINTS = 240, MAX_HEADLINES = 50, MAX_ALERTS = 20;
const BACKOFF_MIN = 1000, BACKOFF_MAX = 30000, FETCH_TIMEOUT = 15000;
const SVG_NS = 'http://www.w3.org/2000/svg';
const AUTH_RE = /auth|token|key|credential|unauthori[sz]ed|forbidden|expired/i;

const $ = (id) => document.getElementById(id);
const body = () => document.body;

// ---------- state ----------
const newState = () => ({
  key: null,
  fused: new Map(), // asset -> { signal, history: [[ms, score], ...] }
  headlines: [], // newest first
  alerts: [], // newest first
  portfolios: new Map(), // account -> portfolio
  prices: new Map(), // symbol -> { last, bid, ask }
  meta: {},
});
let state = newState();
let gen = 0; // session generation; bumped on logout / auth failure / new login
let ws = null, retryTimer = 0, backoff = BACKOFF_MIN;

// ---------- small helpers ----------
const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const entries = (v) => Object.entries(isObj(v) ? v : {});
const asArray = (v) => (Array.isArray(v) ? v : isObj(v) ? Object.values(v) : []);
const str = (v) => (v == null ? '' : String(v));
const errMsg = (e) => (e && e.message ? e.message : str(e) || 'unknown error');

const fin = Number.isFinite;
const num = (v) => (typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : NaN);
const dash = (v) => (v == null || v === '' ? '—' : str(v));

// Timestamps arrive as µs since the epoch; accept ms, s and ISO strings too.
function tsMs(v) {
  const n = num(v);
  if (fin(n)) {
    const a = Math.abs(n);
    return a > 1e14 ? n / 1000 : a > 1e11 ? n : n * 1000;
  }
  return typeof v === 'string' && v ? Date.parse(v) : NaN;
}
function toDate(v) {
  const ms = tsMs(v);
  const d = fin(ms) ? new Date(ms) : null;
  return d && fin(d.getTime()) ? d : null;
}
const fmtTime = (v) => { const d = toDate(v); return d ? d.toISOString().slice(0, 16).replace('T', ' ') : '—'; };
const isoAttr = (v) => { const d = toDate(v); return d ? d.toISOString() : null; };
const clock = (ms) => new Date(ms).toISOString().slice(11, 19);

const money = new Intl.NumberFormat('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const fmtFixed = (v, d) => { const n = num(v); return fin(n) ? n.toFixed(d) : '—'; };
const fmtMoney = (v) => { const n = num(v); return fin(n) ? money.format(n) : dash(v); };
const fmtSigned = (v) => { const n = num(v); return fin(n) ? (n > 0 ? '+' : '') + money.format(n) : dash(v); };
const fmtPct = (v) => { const n = num(v); return fin(n) ? (n * 100).toFixed(2) + '%' : '—'; };
function fmtQty(v) {
  const s = str(v).trim();
  return !s ? '—' : /^-?\d+\.\d+$/.test(s) ? s.replace(/0+$/, '').replace(/\.$/, '') : s;
}
function fmtPrice(v) {
  const n = num(v);
  if (!fin(n)) return dash(v);
  const a = Math.abs(n);
  return n.toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: a >= 1000 ? 2 : a >= 1 ? 4 : 6 });
}
function fmtDuration(secs) {
  const s = Math.floor(num(secs));
  if (!fin(s) || s < 0) return '—';
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : m ? `${m}m ${s % 60}s` : `${s}s`;
}
const signClass = (v) => { const n = num(v); return !fin(n) ? 'na' : n > 0 ? 'pos' : n < 0 ? 'neg' : 'zero'; };
function normLabel(l) {
  const s = str(l).toLowerCase();
  if (s.startsWith('pos') || s === 'bullish') return 'positive';
  if (s.startsWith('neg') || s === 'bearish') return 'negative';
  return 'neutral';
}
const normSeverity = (s) => str(s).toLowerCase().replace(/[^a-z0-9_-]/g, '') || 'info';
function trendInfo(t) {
  const s = str(t).toLowerCase();
  return /^(ris|up|incr|bull|impr)/.test(s) ? ['up', '▲']
    : /^(fall|down|decr|bear|decl|wors)/.test(s) ? ['down', '▼']
      : /^(flat|stab|stead|side|neut|unch)/.test(s) ? ['flat', '▶'] : ['unknown', '•'];
}
function safeUrl(u) {
  if (typeof u !== 'string' || !u) return null;
  try {
    const p = new URL(u, location.href);
    return p.protocol === 'http:' || p.protocol === 'https:' ? p.href : null;
  } catch {
    return null;
  }
}

// DOM builders: attributes via setAttribute, text via text nodes.
function build(n, attrs, kids) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === 'text') n.textContent = str(v);
    else n.setAttribute(k, v === true ? '' : str(v));
  }
  for (const k of kids.flat(Infinity)) {
    if (k != null && k !== false) n.append(k instanceof Node ? k : document.createTextNode(str(k)));
  }
  return n;
}
const el = (tag, attrs, ...kids) => build(document.createElement(tag), attrs, kids);
const sv = (tag, attrs, ...kids) => build(document.createElementNS(SVG_NS, tag), attrs, kids);

// ---------- credential ----------
// sessionStorage may be unavailable (privacy modes): then the key lives only in memory.
const storeKey = (k) => { try { sessionStorage.setItem(KEY_STORE, k); } catch { /* unavailable */ } };
const loadKey = () => { try { return sessionStorage.getItem(KEY_STORE); } catch { return null; } };
const clearKey = () => { try { sessionStorage.removeItem(KEY_STORE); } catch { /* unavailable */ } };
// `#key=<key>`: read it, then drop the fragment from the address bar. Parsed by hand so that
// a `+` in a key is not turned into a space (URLSearchParams would).
function keyFromFragment() {
  const h = location.hash;
  if (!h || h.length < 2) return null;
  let key = null;
  for (const part of h.slice(1).split('&')) {
    if (part.startsWith('key=')) {
      const raw = part.slice(4);
      try { key = decodeURIComponent(raw); } catch { key = raw; }
    }
  }
  if (key === null) return null;
  try { history.replaceState(history.state, '', location.pathname + location.search); } catch { /* ignore */ }
  return key.trim() || null;
}

// ---------- status line / views ----------
function setConn(name, detail) {
  const c = $('conn');
  c.textContent = name;
  c.setAttribute('data-state', name);
  $('conn-detail').textContent = detail || '';
}
function showError(msg) {
  const b = $('error');
  b.textContent = msg || '';
  b.hidden = !msg;
}
const clearError = () => showError('');
function showView(login, msg) {
  $('dashboard').hidden = $('logout').hidden = login;
  $('login').hidden = !login;
  $('login-error').textContent = msg || '';
}
function showLogin(msg) {
  showView(true, msg);
  setConn('disconnected');
  $('api-key').focus();
}

// ---------- model updates ----------
function pushPoint(hist, t, s) {
  if (!fin(t) || !fin(s) || (hist.length && t <= hist[hist.length - 1][0])) return; // not newer: ignore
  hist.push([t, s]);
  if (hist.length > MAX_POINTS) hist.splice(0, hist.length - MAX_POINTS);
}
function cleanHistory(h) {
  const pts = [];
  for (const p of asArray(h)) {
    const t = Array.isArray(p) ? tsMs(p[0]) : NaN;
    const v = Array.isArray(p) ? num(p[1]) : NaN;
    if (fin(t) && fin(v)) pts.push([t, v]);
  }
  pts.sort((a, b) => a[0] - b[0]);
  const out = [];
  for (const p of pts) {
    if (out.length && p[0] <= out[out.length - 1][0]) out[out.length - 1] = p;
    else out.push(p);
  }
  return out.slice(-MAX_POINTS);
}

const hlKey = (h) => (h.article_id != null ? 'id:' + h.article_id : 'x:' + [h.source, h.ts, h.title].join('|'));
const alertKey = (a) => [a.severity, a.kind, a.subject, a.ts_event, a.message].join('|');
function mergeNewest(fresh, old, keyOf, max, tsField) {
  const seen = new Set();
  const out = [];
  for (const x of fresh.concat(old)) {
    if (!isObj(x)) continue;
    const k = keyOf(x);
    if (seen.has(k)) continue;
    seen.add(k);
    out.push(x);
  }
  const t = (x) => { const v = tsMs(x[tsField]); return fin(v) ? v : -Infinity; };
  out.sort((a, b) => t(b) - t(a));
  return out.slice(0, max);
}

function applySnapshot(snap) {
  state.meta = { model: snap.model_version, uptime: snap.uptime_secs, clients: snap.ws_clients, updated: Date.now() };

  const next = new Map();
  for (const [k, sig] of entries(snap.fused)) {
    if (!isObj(sig)) continue;
    const asset = str(k || sig.asset).toUpperCase();
    if (!asset) continue;
    const hist = cleanHistory(sig.history);
    pushPoint(hist, tsMs(sig.window_end), num(sig.fused_score));
    let signal = sig;
    const prev = state.fused.get(asset);
    if (prev) {
      for (const p of prev.history) pushPoint(hist, p[0], p[1]); // live points newer than the snapshot
      if (tsMs(prev.signal.window_end) > tsMs(sig.window_end)) signal = prev.signal;
    }
    next.set(asset, { signal, history: hist });
  }
  for (const [a, e] of state.fused) if (!next.has(a)) next.set(a, e);
  state.fused = next;

  state.headlines = mergeNewest(asArray(snap.headlines), state.headlines, hlKey, MAX_HEADLINES, 'ts');
  state.alerts = mergeNewest(asArray(snap.alerts), state.alerts, alertKey, MAX_ALERTS, 'ts_event');

  for (const [k, p] of entries(snap.portfolios)) {
    if (!isObj(p)) continue;
    const acct = str(k || p.account);
    if (!acct) continue;
    const prev = state.portfolios.get(acct);
    if (!prev || !(tsMs(prev.ts_event) > tsMs(p.ts_event))) state.portfolios.set(acct, p);
  }
}

function onFused(key, d) {
  const asset = str(key || d.asset).toUpperCase();
  if (!asset) return;
  let e = state.fused.get(asset);
  if (!e) state.fused.set(asset, (e = { signal: {}, history: [] }));
  const t = tsMs(d.window_end);
  if (t < tsMs(e.signal.window_end)) return; // an older window than the one shown: ignore
  e.signal = d;
  const h = e.history;
  const s = num(d.fused_score);
  if (h.length && t === h[h.length - 1][0] && fin(s)) h[h.length - 1] = [t, s]; // revised window
  else pushPoint(h, t, s);
  dirty('assets');
}
function prepend(list, d, max) {
  list.unshift(d);
  if (list.length > max) list.length = max;
}
function onHeadline(d) {
  const k = hlKey(d);
  if (state.headlines.some((h) => hlKey(h) === k)) return; // duplicate article_id
  prepend(state.headlines, d, MAX_HEADLINES);
  dirty('headlines');
}
function onPortfolio(key, d) {
  const acct = str(key || d.account);
  if (!acct) return;
  state.portfolios.set(acct, d);
  dirty('portfolios');
}
function onAlert(d) {
  prepend(state.alerts, d, MAX_ALERTS);
  dirty('alerts');
}
function onMarket(type, key, d) {
  const sym = str(d.symbol || key).toUpperCase();
  if (!sym) return;
  const e = state.prices.get(sym) || {};
  if (type === 'trade') e.last = d.price;
  else if (type === 'bar') e.last = d.close;
  else if (type === 'quote') {
    e.bid = d.bid_price;
    e.ask = d.ask_price;
    if (e.last == null) {
      const mid = (num(d.bid_price) + num(d.ask_price)) / 2;
      if (fin(mid)) e.last = mid;
    }
  }
  state.prices.set(sym, e);
  dirty('prices');
}

function handleMessage(raw) {
  let msg;
  try { msg = JSON.parse(raw); } catch { return; }
  if (!isObj(msg)) return;
  const type = str(msg.type).toLowerCase();
  const key = msg.key;
  const d = msg.data;
  if (!isObj(d)) return;
  switch (type) {
    case 'fused': onFused(key, d); break;
    case 'headline': onHeadline(d); break;
    case 'portfolio': onPortfolio(key, d); break;
    case 'alert': onAlert(d); break;
    case 'trade': case 'bar': case 'quote': onMarket(type, key, d); break;
    default: return; // decision / order / unknown: ignored
  }
  state.meta.updated = Date.now();
  dirty('meta');
}

// ---------- rendering ----------
function sparkline(hist, asset) {
  const W = 160, H = 40, P = 3, n = hist.length;
  const svg = sv('svg', {
    class: 'sparkline', viewBox: `0 0 ${W} ${H}`, 'data-points': n, role: 'img', focusable: 'false',
    'aria-label': `${asset} fused score history, ${n} point${n === 1 ? '' : 's'}`,
  });
  if (!n) return build(svg, null, [sv('polyline', { class: 'line', points: '' })]);
  const vals = hist.map((p) => p[1]);
  let lo = Math.min(...vals), hi = Math.max(...vals);
  if (hi - lo < 0.1) { const m = (hi + lo) / 2; lo = m - 0.05; hi = m + 0.05; } // keep a flat line readable
  const t0 = hist[0][0], t1 = hist[n - 1][0];
  const x = (t, i) => (n === 1 ? W - P : P + (W - 2 * P) * (t1 > t0 ? (t - t0) / (t1 - t0) : i / (n - 1)));
  const y = (s) => P + (H - 2 * P) * (1 - (s - lo) / (hi - lo));
  const f = (v) => v.toFixed(1);
  if (lo < 0 && hi > 0) svg.append(sv('line', { class: 'zero', x1: 0, x2: W, y1: f(y(0)), y2: f(y(0)) }));
  const last = hist[n - 1];
  const pts = n === 1
    ? `${P},${f(y(last[1]))} ${W - P},${f(y(last[1]))}`
    : hist.map((p, i) => `${f(x(p[0], i))},${f(y(p[1]))}`).join(' ');
  const c = signClass(last[1]);
  return build(svg, null, [sv('polyline', { class: 'line ' + c, points: pts }),
    sv('circle', { class: 'dot ' + c, cx: f(x(last[0], n - 1)), cy: f(y(last[1])), r: 2.5 })]);
}

const stat = (label, value) => el('div', { class: 'stat' }, el('dt', { text: label }), el('dd', { text: value }));

const QUOTES = ['USDT', 'USD', 'USDC', 'FDUSD', 'BUSD', '-USD', '/USD', 'EUR'];
function priceFor(asset) {
  for (const q of QUOTES) {
    const e = state.prices.get(asset + q);
    if (e) return [asset + q, e];
  }
  const e = state.prices.get(asset);
  return e ? [asset, e] : null;
}
function priceLine(asset) {
  const hit = priceFor(asset);
  if (!hit) return el('p', { class: 'last-price muted', text: 'last price: —' });
  return el('p', { class: 'last-price', 'data-symbol': hit[0] }, `${hit[0]} `, el('span', { class: 'mono', text: fmtPrice(hit[1].last) }));
}

function assetCard(asset, e) {
  const s = isObj(e.signal) ? e.signal : {};
  const trend = str(s.trend).toLowerCase() || 'unknown';
  const [tcls, arrow] = trendInfo(trend);
  const weights = entries(s.weights_used);
  const used = num(s.scores_used);
  return el('article', { class: 'asset card', 'data-asset': asset, 'aria-labelledby': `asset-${asset}` },
    el('header', { class: 'asset-head' },
      el('h3', { class: 'asset-name', id: `asset-${asset}`, text: asset }),
      el('span', { class: `trend trend-${tcls}`, 'data-trend': trend, title: `trend: ${trend}` },
        el('span', { class: 'arrow', 'aria-hidden': 'true', text: arrow }), ' ', trend)),
    el('div', { class: `fused-value ${signClass(s.fused_score)}`, title: 'fused sentiment score', text: fmtFixed(s.fused_score, 3) }),
    sparkline(e.history, asset),
    el('dl', { class: 'asset-stats' },
      stat('confidence', fmtFixed(s.confidence, 2)),
      stat('scores', fin(used) ? String(used) : '—'),
      stat('window end', fmtTime(s.window_end))),
    weights.length
      ? el('p', { class: 'weights muted', text: 'weights: ' + weights.map(([k, v]) => `${k} ${fmtFixed(v, 2)}`).join(' · ') })
      : null,
    priceLine(asset));
}
// Replaces root's children with make(item) for each item, or a "no data yet" placeholder.
function fill(root, items, make, empty = 'li') {
  if (typeof empty === 'string') empty = el(empty, { class: 'empty', text: 'no data yet' });
  root.replaceChildren(...(items.length ? items.map(make) : [empty]));
}
const sortedKeys = (m) => [...m.keys()].sort();
const renderAssets = () => fill($('assets'), sortedKeys(state.fused), (a) => assetCard(a, state.fused.get(a)), 'p');

function headlineItem(h) {
  const label = normLabel(h.label);
  const url = safeUrl(h.url);
  const title = str(h.title) || '(untitled)';
  const assets = asArray(h.assets).map(str).filter(Boolean);
  const conf = num(h.confidence);
  return el('li', { class: 'headline', 'data-label': label, 'data-article-id': h.article_id ?? null },
    el('div', { class: 'hl-top' },
      el('span', { class: `badge label-${label}`, text: label }),
      el('span', { class: `score ${label}`, title: 'sentiment score', text: fmtFixed(h.sentiment_score, 3) }),
      url
        ? el('a', { class: 'title', href: url, target: '_blank', rel: 'noopener noreferrer', text: title })
        : el('span', { class: 'title', text: title })),
    el('div', { class: 'hl-meta muted' },
      el('span', { class: 'source', text: str(h.source) || 'unknown source' }),
      el('time', { class: 'time', datetime: isoAttr(h.ts), text: fmtTime(h.ts) }),
      assets.length ? el('span', { class: 'assets', text: assets.join(', ') }) : null,
      fin(conf) ? el('span', { class: 'conf', text: 'conf ' + conf.toFixed(2) }) : null));
}
const renderHeadlines = () => fill($('headlines'), state.headlines, headlineItem);

function alertItem(a) {
  const sev = normSeverity(a.severity);
  const attrs = entries(a.attributes);
  const show = (v) => (typeof v === 'object' && v !== null ? JSON.stringify(v) : str(v));
  return el('li', { class: `alert sev-${sev}`, 'data-severity': sev },
    el('div', { class: 'al-top' },
      el('span', { class: 'badge sev', text: sev }),
      el('strong', { class: 'kind', text: str(a.kind) || 'alert' }),
      a.subject != null && a.subject !== '' ? el('span', { class: 'subject muted', text: str(a.subject) }) : null,
      el('time', { class: 'time muted', datetime: isoAttr(a.ts_event), text: fmtTime(a.ts_event) })),
    a.message ? el('p', { class: 'message', text: str(a.message) }) : null,
    attrs.length ? el('p', { class: 'attrs muted mono', text: attrs.map(([k, v]) => `${k}=${show(v)}`).join('  ') }) : null);
}
const renderAlerts = () => fill($('alerts'), state.alerts, alertItem);

const td = (cls, text) => el('td', { class: cls, text });
function positionItem(q) {
  const sym = str(q.symbol) || '?';
  const upnl = q.unrealized_pnl;
  return el('li', { class: 'position', 'data-symbol': sym },
    el('span', { class: 'pos-symbol', text: sym }), ' ',
    el('span', { class: 'pos-qty mono', text: fmtQty(q.quantity) }),
    el('span', { class: 'pos-detail muted' },
      q.avg_price != null ? ` @ ${fmtPrice(q.avg_price)}` : '',
      q.market_price != null ? ` → ${fmtPrice(q.market_price)}` : ''),
    upnl != null ? el('span', { class: `pos-pnl ${signClass(upnl)}`, text: ` ${fmtSigned(upnl)}` }) : null);
}
function portfolioRow(acct, p) {
  const perf = isObj(p.performance) ? p.performance : {};
  const positions = asArray(p.positions).filter(isObj);
  return el('tr', { 'data-agent': acct },
    el('th', { scope: 'row', class: 'agent', text: acct }),
    td('equity num', fmtMoney(p.equity)),
    td('cash num', fmtMoney(p.cash)),
    td(`realized num ${signClass(p.realized_pnl)}`, fmtSigned(p.realized_pnl)),
    td(`unrealized num ${signClass(p.unrealized_pnl)}`, fmtSigned(p.unrealized_pnl)),
    td(`return num ${signClass(perf.total_return)}`, fmtPct(perf.total_return)),
    td('sharpe num', fmtFixed(perf.sharpe, 2)),
    td('drawdown num', fmtPct(perf.max_drawdown)),
    el('td', { class: 'positions' },
      positions.length
        ? el('ul', { class: 'pos-list' }, positions.map(positionItem))
        : el('span', { class: 'muted', text: 'flat' })),
    td('time', fmtTime(p.ts_event)));
}
const renderPortfolios = () => fill($('portfolios').tBodies[0], sortedKeys(state.portfolios),
  (a) => portfolioRow(a, state.portfolios.get(a)),
  el('tr', { class: 'empty' }, el('td', { colspan: 10, text: 'no data yet' })));

function priceItem(sym) {
  const e = state.prices.get(sym);
  const quote = e.bid != null || e.ask != null;
  return el('li', { class: 'price', 'data-symbol': sym },
    el('span', { class: 'sym', text: sym }),
    el('span', { class: 'px mono', text: fmtPrice(e.last) }),
    quote ? el('span', { class: 'spread muted mono', title: 'bid / ask', text: `${fmtPrice(e.bid)} / ${fmtPrice(e.ask)}` }) : null);
}
function renderPrices() {
  fill($('prices'), sortedKeys(state.prices), priceItem);
  // Refresh the price line of each asset card in place.
  for (const card of document.querySelectorAll('#assets .asset[data-asset]')) {
    const old = card.querySelector('.last-price');
    if (old) old.replaceWith(priceLine(card.getAttribute('data-asset')));
  }
}

function renderMeta() {
  const m = state.meta;
  const model = $('model');
  model.textContent = str(m.model) || '—';
  model.title = str(m.model);
  const c = num(m.clients);
  $('uptime').textContent = [fin(num(m.uptime)) && `up ${fmtDuration(m.uptime)}`,
    fin(c) && `${c} ws client${c === 1 ? '' : 's'}`].filter(Boolean).join(' · ');
  $('updated').textContent = m.updated ? `updated ${clock(m.updated)} UTC` : '';
}

// Render order matters: prices refresh the price line of cards drawn by assets.
const RENDER = { meta: renderMeta, assets: renderAssets, headlines: renderHeadlines, alerts: renderAlerts, portfolios: renderPortfolios, prices: renderPrices };
const dirtySet = new Set();
let flushTimer = 0;
function dirty(...parts) {
  for (const p of parts) dirtySet.add(p);
  if (!flushTimer) flushTimer = setTimeout(() => flush(false), 50);
}
const dirtyAll = () => Object.keys(RENDER).forEach((p) => dirtySet.add(p));
// Renders what changed. strict: rethrow the first render error (the snapshot path reports it).
function flush(strict) {
  clearTimeout(flushTimer);
  flushTimer = 0;
  const parts = Object.keys(RENDER).filter((p) => dirtySet.has(p));
  dirtySet.clear();
  let first = null;
  for (const p of parts) {
    try { RENDER[p](); } catch (e) { first = first || e; }
  }
  if (first) {
    if (strict) throw first;
    showError('render error: ' + errMsg(first));
  }
}

// ---------- networking ----------
// The message of an error answer: {"error": {"code", "message"}} or plain text.
async function errorText(res) {
  const t = await res.text().catch(() => '');
  try {
    const j = JSON.parse(t);
    const m = j && ((j.error && (j.error.message || j.error)) || j.message);
    if (m) return typeof m === 'string' ? m : JSON.stringify(m);
  } catch { /* not JSON */ }
  return t.trim().slice(0, 200);
}

// Sets (or with no message clears) body[data-error] and the banner.
function setFailure(msg) {
  if (msg) body().setAttribute('data-error', msg);
  else body().removeAttribute('data-error');
  showError(msg);
}

// Returns 'ok' | 'auth' | 'network' | 'error' | 'stale'.
async function loadSnapshot(g) {
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), FETCH_TIMEOUT);
  try {
    let res;
    try {
      res = await fetch('/api/v1/status', {
        headers: { Authorization: 'Bearer ' + state.key, Accept: 'application/json' },
        cache: 'no-store',
        signal: ctrl.signal,
      });
    } catch (e) {
      if (g !== gen) return 'stale';
      setFailure('cannot reach the API: ' + (e && e.name === 'AbortError' ? 'timed out' : errMsg(e)));
      return 'network';
    }
    if (res.status === 401 || res.status === 403) {
      const m = await errorText(res);
      if (g !== gen) return 'stale';
      authFailed(`${res.status === 401 ? 'Unauthorized' : 'Forbidden'}${m ? ': ' + m : ''}`);
      return 'auth';
    }
    if (!res.ok) {
      const m = await errorText(res);
      throw new Error(`HTTP ${res.status}${m ? ': ' + m : ''}`);
    }
    const snap = await res.json();
    if (g !== gen) return 'stale';
    if (!isObj(snap)) throw new Error('unexpected snapshot format');
    applySnapshot(snap);
    dirtyAll();
    flush(true);
    setFailure('');
    body().setAttribute('data-loaded', 'true');
    return 'ok';
  } catch (e) {
    if (g !== gen) return 'stale';
    setFailure('failed to load status: ' + errMsg(e));
    return 'error';
  } finally {
    clearTimeout(timer);
  }
}

function closeSocket() {
  const s = ws;
  ws = null;
  if (!s) return;
  s.onopen = s.onmessage = s.onerror = s.onclose = null;
  try { s.close(1000, 'client closing'); } catch { /* ignore */ }
}

function scheduleCycle(g, why) {
  if (g !== gen) return;
  const delay = backoff;
  backoff = Math.min(backoff * 2, BACKOFF_MAX);
  setConn('disconnected', `${why ? why + '; ' : ''}retrying in ${Math.round(delay / 1000)} s`);
  clearTimeout(retryTimer);
  retryTimer = setTimeout(() => { cycle(g).catch(swallow); }, delay);
}

// One connection attempt: (re)load the snapshot (also checks the key), then open the socket.
async function cycle(g) {
  if (g !== gen) return;
  setConn('connecting', 'loading snapshot');
  const r = await loadSnapshot(g);
  if (g !== gen || r === 'auth' || r === 'stale') return;
  if (r === 'network') {
    scheduleCycle(g, 'server unreachable');
    return;
  }
  openSocket(g);
}

function openSocket(g) {
  if (g !== gen) return;
  closeSocket();
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const url = `${proto}//${location.host}/ws/status?access_token=${encodeURIComponent(state.key)}`;
  let sock;
  try { sock = new WebSocket(url); } catch (e) { scheduleCycle(g, 'websocket error: ' + errMsg(e)); return; }
  ws = sock;
  let openedAt = 0;
  setConn('connecting');
  sock.onopen = () => {
    if (g !== gen || ws !== sock) return;
    openedAt = Date.now();
    setConn('live');
  };
  sock.onmessage = (ev) => {
    if (g !== gen || ws !== sock) return;
    if (typeof ev.data !== 'string') return;
    try { handleMessage(ev.data); } catch (e) { showError('bad live message: ' + errMsg(e)); }
  };
  sock.onerror = () => { /* a close event follows */ };
  sock.onclose = (ev) => {
    if (g !== gen || ws !== sock) return;
    ws = null;
    const reason = ev.reason ? `${ev.reason} (code ${ev.code})` : `code ${ev.code}`;
    // 1008 = policy violation: the server rejected our credential (a 1008 that names
    // another reason, e.g. a slow client, just reconnects; the snapshot fetch re-checks the key).
    if (ev.code === 1008 && (!ev.reason || AUTH_RE.test(ev.reason))) {
      authFailed('live connection rejected: ' + reason);
      return;
    }
    if (openedAt && Date.now() - openedAt > 10000) backoff = BACKOFF_MIN;
    scheduleCycle(g, (openedAt ? 'connection closed: ' : 'connection failed: ') + reason);
  };
}

function stopSession() {
  gen += 1;
  closeSocket();
  clearTimeout(retryTimer);
  retryTimer = 0;
  backoff = BACKOFF_MIN;
  state = newState();
  dirtyAll();
  flush(false);
  body().removeAttribute('data-loaded');
}

function authFailed(msg) {
  stopSession();
  clearKey();
  setFailure(msg);
  clearError(); // the message shows on the login form
  showLogin(msg);
}

function start(key) {
  stopSession();
  setFailure('');
  state.key = key;
  showView(false);
  cycle(gen).catch(swallow);
}

const swallow = (e) => setFailure('unexpected error: ' + errMsg(e));

// ---------- wiring ----------
function onLogin(ev) {
  ev.preventDefault();
  const input = $('api-key');
  const key = str(input.value).trim();
  if (!key) {
    $('login-error').textContent = 'Please enter an API key.';
    return;
  }
  input.value = '';
  storeKey(key);
  start(key);
}

function onLogout(ev) {
  ev.preventDefault();
  stopSession();
  clearKey();
  setFailure('');
  showLogin('Logged out.');
}

function init() {
  $('login-form').addEventListener('submit', onLogin);
  $('logout').addEventListener('click', onLogout);
  window.addEventListener('hashchange', () => {
    const k = keyFromFragment();
    if (k) { storeKey(k); start(k); }
  });
  let key = keyFromFragment();
  if (key) storeKey(key);
  else key = loadKey();
  if (key) start(key);
  else showLogin('');
}

// Safety net: never let an error reach the console uncaught; show it on the page instead.
window.addEventListener('error', (ev) => {
  ev.preventDefault();
  showError('script error: ' + (ev.message || 'unknown'));
});
window.addEventListener('unhandledrejection', (ev) => {
  ev.preventDefault();
  showError('unexpected error: ' + errMsg(ev.reason));
});

function boot() {
  try { init(); } catch (e) { setFailure('startup failed: ' + errMsg(e)); }
}
if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
else boot();
})();
