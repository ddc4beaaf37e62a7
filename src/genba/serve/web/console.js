"use strict";
// genba's operator console. The token stays in the URL fragment (#token=...), never sent by the
// browser on its own: every request carries it in the Authorization header; no cookies. All
// memory data is inserted with textContent (never as HTML). Every action sends an
// Idempotency-Key made when its button is drawn, so a double click runs it once.
const params = new URLSearchParams(location.hash.slice(1));
const token = params.get("token");
let selected = params.get("memory");
const message = document.getElementById("message");
const list = document.getElementById("list");
const root = document.getElementById("memory");
const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}
function row(cells, header) {
  const tr = el("tr");
  for (const c of cells) {
    const td = el(header ? "th" : "td");
    if (c instanceof Node) td.appendChild(c); else td.textContent = c === null || c === undefined ? "-" : String(c);
    tr.appendChild(td);
  }
  return tr;
}
function table(head, rows, cls) {
  const t = el("table", undefined, cls);
  t.appendChild(row(head, true));
  for (const r of rows) t.appendChild(row(r));
  if (!rows.length) t.appendChild(row([el("span", "none", "meta")]));
  return t;
}
function fmtTime(t) { return t ? new Date(t * 1000).toLocaleString() : "-"; }
function num(v, d) { return v === null || v === undefined ? "-" : Number(v).toFixed(d === undefined ? 3 : d); }
function newKey() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  return String(Date.now()) + "-" + Math.random().toString(16).slice(2);
}

async function api(path, options) {
  const opts = options || {};
  const headers = { "Authorization": "Bearer " + token };
  if (opts.body !== undefined) headers["Content-Type"] = "application/json";
  if (opts.key) headers["Idempotency-Key"] = opts.key;
  const response = await fetch(path, { method: opts.method || "GET", headers: headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body), credentials: "omit", cache: "no-store" });
  const text = await response.text();
  let data = null;
  try { data = JSON.parse(text); } catch (e) { data = text; }
  if (!response.ok) throw new Error((data && data.detail) || ("HTTP " + response.status));
  return data;
}

// A button that runs `action` once per intent: disabled while it runs, one Idempotency-Key per drawing.
function actionButton(label, id, action) {
  const b = el("button", label);
  if (id) b.id = id;
  const key = newKey();
  b.addEventListener("click", async () => {
    if (b.disabled) return;
    b.disabled = true;
    try {
      const result = await action(key);
      message.textContent = label + ": done";
      await load();
      return result;
    } catch (e) {
      message.textContent = label + ": " + e.message;
      b.disabled = false;
    }
  });
  return b;
}

// ------------------------------------------------------------------------------------ charts
function svgEl(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const k in attrs) node.setAttribute(k, attrs[k]);
  if (text !== undefined) node.textContent = text;
  return node;
}
function chart(title, ts, lines, opts) {
  const W = 340, H = 130, L = 38, R = 8, T = 18, B = 22;
  const box = el("figure", undefined, "chart");
  const svg = svgEl("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img" });
  svg.appendChild(svgEl("text", { x: 2, y: 12, class: "title" }, title));
  let max = (opts && opts.max) || 0;
  for (const l of lines) for (const v of l.values) if (v !== null && v > max) max = v;
  if (max <= 0) max = 1;
  const t0 = ts.length ? ts[0] : 0, t1 = ts.length > 1 ? ts[ts.length - 1] : t0 + 1;
  const x = t => L + (W - L - R) * (t - t0) / Math.max(t1 - t0, 1e-9);
  const y = v => T + (H - T - B) * (1 - v / max);
  svg.appendChild(svgEl("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
  svg.appendChild(svgEl("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }));
  svg.appendChild(svgEl("text", { x: L - 3, y: T + 4, class: "tick", "text-anchor": "end" }, num(max, max >= 10 ? 0 : 2)));
  svg.appendChild(svgEl("text", { x: L - 3, y: H - B, class: "tick", "text-anchor": "end" }, "0"));
  if (ts.length) {
    svg.appendChild(svgEl("text", { x: L, y: H - 6, class: "tick" }, new Date(t0 * 1000).toLocaleTimeString()));
    svg.appendChild(svgEl("text", { x: W - R, y: H - 6, class: "tick", "text-anchor": "end" }, new Date(t1 * 1000).toLocaleTimeString()));
  }
  lines.forEach((l, i) => {
    let d = "", pen = false;
    l.values.forEach((v, j) => {
      if (v === null || v === undefined) { pen = false; return; }
      d += (pen ? " L " : " M ") + x(ts[j]).toFixed(1) + " " + y(v).toFixed(1);
      pen = true;
    });
    if (d) svg.appendChild(svgEl("path", { d: d, fill: "none", stroke: l.color || COLORS[i % COLORS.length], "stroke-width": 1.6 }));
  });
  box.appendChild(svg);
  const legend = el("figcaption");
  lines.forEach((l, i) => {
    const sw = el("span", "\u25A0 ", "swatch");
    sw.style.color = l.color || COLORS[i % COLORS.length];
    legend.appendChild(sw);
    legend.appendChild(document.createTextNode(l.name + "  "));
  });
  box.appendChild(legend);
  return box;
}

function charts(m) {
  const b = m.series.buckets, ts = b.map(x => x.t + (m.series.width_s || 0) / 2);
  const wrap = el("div", undefined, "charts");
  wrap.appendChild(chart("predictions per class", ts, m.classnames.map((n, c) => ({ name: n, values: b.map(x => x.per_class[c]) }))));
  wrap.appendChild(chart("mean confidence / entropy", ts, [
    { name: "confidence", values: b.map(x => x.confidence) }, { name: "entropy", values: b.map(x => x.entropy) }], { max: 1 }));
  wrap.appendChild(chart("write label \u2260 served class (share)", ts, [{ name: "share", values: b.map(x => x.write_differs) }], { max: 1 }));
  wrap.appendChild(chart("requests per second", ts, [{ name: "req/s", values: b.map(x => x.requests_per_s) }]));
  wrap.appendChild(chart("latency (ms)", ts, [{ name: "p50", values: b.map(x => x.p50_ms) }, { name: "p99", values: b.map(x => x.p99_ms) }]));
  wrap.appendChild(chart("accuracy on confirmed labels", ts, [{ name: "accuracy", values: b.map(x => x.accuracy) }], { max: 1 }));
  return wrap;
}

// ----------------------------------------------------------------------------------- actions
function labelControls(m, p) {
  const span = el("span", undefined, "actions");
  const ok = actionButton("confirm", "confirm-" + p.id, key =>
    api("/memories/" + m.id + "/predictions/" + p.id + "/label", { method: "POST", body: { label: p.class_name }, key: key }));
  const pick = el("select");
  pick.id = "pick-" + p.id;
  for (const n of m.classnames) { const o = el("option", n); o.value = n; if (n === p.class_name) o.selected = true; pick.appendChild(o); }
  const fix = actionButton("correct", "correct-" + p.id, key =>
    api("/memories/" + m.id + "/predictions/" + p.id + "/label", { method: "POST", body: { label: pick.value }, key: key }));
  span.append(ok, pick, fix);
  return span;
}

function predictionTable(m, rows, withActions) {
  return table(["id", "time", "class", "confidence", "margin", "entropy", "write label", "label", "source", ""],
    rows.map(p => [String(p.id), fmtTime(p.time), p.class_name, num(p.confidence), num(p.margin), num(p.entropy),
      p.write_label_name, p.label_name, (p.source_id || "").slice(0, 16), withActions ? labelControls(m, p) : ""]), "log");
}

function thumbs(m, rows) {
  const wrap = el("div", undefined, "thumbs");
  for (const p of rows) {
    if (!p.thumbnail) continue;
    const fig = el("figure");
    const img = el("img"); img.src = p.thumbnail; img.alt = p.class_name;
    fig.append(img, el("figcaption", p.class_name + " " + num(p.confidence, 2)));
    wrap.appendChild(fig);
  }
  return wrap;
}

function snapshots(m) {
  const wrap = el("div");
  const label = el("input"); label.placeholder = "snapshot label"; label.id = "snapshot-label";
  wrap.append(label, actionButton("take snapshot", "snapshot", key =>
    api("/memories/" + m.id + "/snapshot", { method: "POST", body: { label: label.value }, key: key })));
  wrap.appendChild(table(["id", "label", "created", "entries", ""], m.lineage.snapshots.map(s => [String(s.snapshot_id), s.label, fmtTime(s.created),
    String(s.entries), actionButton("roll back", "rollback-" + s.snapshot_id, key => {
      if (!confirm("Roll memory " + m.id + " back to snapshot " + s.snapshot_id + "?")) throw new Error("cancelled");
      return api("/memories/" + m.id + "/rollback", { method: "POST", body: { snapshot_id: s.snapshot_id }, key: key });
    })])));
  return wrap;
}

function deleteSource(m) {
  const wrap = el("div");
  const input = el("input"); input.placeholder = "source id"; input.id = "delete-source-id"; input.size = 40;
  const out = el("div", undefined, "preview"); out.id = "delete-preview";
  const preview = el("button", "preview"); preview.id = "delete-preview-button";
  preview.addEventListener("click", async () => {
    out.replaceChildren();
    try {
      const source = input.value;
      const p = await api("/memories/" + m.id + "/delete-source/preview", { method: "POST", body: { source_id: source } });
      out.appendChild(el("p", "will remove: " + p.entries + " entries, " + p.snapshot_copies + " snapshot copies, " +
        p.learned_states + " learned states, " + p.predictions + " logged predictions, " + p.corrections + " corrections"));
      out.appendChild(actionButton("confirm delete", "delete-confirm", key =>
        api("/memories/" + m.id + "/delete-source", { method: "POST", body: { source_id: source }, key: key })));
    } catch (e) { out.appendChild(el("p", e.message, "warn")); }
  });
  wrap.append(input, preview, out);
  return wrap;
}

function writeLog(m) {
  const wrap = el("div");
  const outcome = el("select"); outcome.id = "writes-outcome";
  for (const o of ["", "entered", "displaced", "rejected", "expired", "deleted", "rolled-back", "restored"]) {
    const opt = el("option", o || "any outcome"); opt.value = o; outcome.appendChild(opt);
  }
  const bank = el("input"); bank.placeholder = "bank"; bank.size = 8;
  const cls = el("select"); const any = el("option", "any class"); any.value = ""; cls.appendChild(any);
  m.classnames.forEach((n, c) => { const o = el("option", n); o.value = String(c); cls.appendChild(o); });
  const source = el("input"); source.placeholder = "source id"; source.size = 24;
  const holder = el("div");
  const show = rows => holder.replaceChildren(table(["seq", "time", "outcome", "bank", "class", "entropy", "source", "entry"],
    rows.map(w => [String(w.seq), fmtTime(w.time), w.outcome, w.bank, w.class === null ? "-" : m.classnames[w.class],
      num(w.entropy), (w.source_id || "").slice(0, 16), w.entry_id === null ? "-" : String(w.entry_id)]), "log"));
  const filter = el("button", "filter");
  filter.addEventListener("click", async () => {
    const q = new URLSearchParams({ limit: "100" });
    if (outcome.value) q.set("outcome", outcome.value);
    if (bank.value) q.set("bank", bank.value);
    if (cls.value) q.set("class", cls.value);
    if (source.value) q.set("source_id", source.value);
    try { show((await api("/memories/" + m.id + "/writes?" + q)).writes); } catch (e) { message.textContent = e.message; }
  });
  show(m.writes);
  wrap.append(outcome, bank, cls, source, filter, holder);
  return wrap;
}

// ------------------------------------------------------------------------------------ render
function section(title, body, id) {
  const s = el("section");
  if (id) s.id = id;
  s.appendChild(el("h3", title));
  s.appendChild(body);
  return s;
}

function renderMemory(m) {
  const out = el("div");
  out.id = "memory-" + m.id;
  out.appendChild(el("h2", (m.name || "(unnamed)") + " \u2014 " + m.id));
  out.appendChild(el("p", "method " + m.method + ", encoder " + m.encoder + " (" + m.encoder_provenance + "), version " +
    m.version + ", " + m.logged + " logged predictions (bound " + m.log_size + ")" + (m.ready ? "" : ", not ready"), "meta"));
  if (m.error) out.appendChild(el("p", m.error, "warn"));
  const warn = el("div"); warn.id = "warnings";
  for (const w of m.warnings) warn.appendChild(el("p", "\u26A0 " + w.kind + ": " + w.message, "warn"));
  if (!m.warnings.length) warn.appendChild(el("p", "no warnings", "meta"));
  out.appendChild(warn);
  out.appendChild(section("over time", charts(m)));
  const cfg = Object.keys(m.config).sort().map(k => [k, String(m.config[k]), k in m.hyperparameters ? "set" : "default"]);
  const lin = m.lineage;
  const lineage = el("div");
  lineage.appendChild(el("p", "support: " + lin.support_entries + " entries from " + lin.support_sources + " sources; learned state: " +
    (lin.learned_state ? lin.learned_state.fingerprint + " (" + lin.learned_state.sources + " sources, " + fmtTime(lin.learned_state.created) + ")" : "none") +
    "; last rollback: " + (lin.last_rollback ? "snapshot " + lin.last_rollback.detail.snapshot_id + " at " + fmtTime(lin.last_rollback.time) : "none")));
  lineage.appendChild(table(["hyperparameter", "value", ""], cfg, "config"));
  out.appendChild(section("versions and lineage", lineage));
  const banks = Object.keys(m.fill).sort();
  out.appendChild(section("fill per class", table(["class"].concat(banks), m.classnames.map((n, c) => [n].concat(banks.map(b => String(m.fill[b][c])))), "fill")));
  out.appendChild(section("review queue (smallest margin first)", predictionTable(m, m.queue, true), "queue"));
  out.appendChild(section("recent predictions", predictionTable(m, m.recent, true), "recent"));
  if (m.log_images) {
    out.appendChild(section("recent images", thumbs(m, m.recent)));
    out.appendChild(section("least confident images", thumbs(m, m.least_confident)));
  }
  out.appendChild(section("snapshots", snapshots(m), "snapshots"));
  out.appendChild(section("delete by source id", deleteSource(m), "delete"));
  out.appendChild(section("write log", writeLog(m), "writes"));
  out.appendChild(section("audit", table(["time", "actor", "action", "detail"], m.audit.map(a => [fmtTime(a.time), a.actor, a.action, JSON.stringify(a.detail)]), "log")));
  root.replaceChildren(out);
}

function renderList(memories) {
  list.replaceChildren();
  list.appendChild(table(["memory", "method", "encoder", "version", "logged", "last prediction"], memories.map(m => {
    const a = el("a", (m.name || "(unnamed)") + " " + m.id);
    a.href = "#token=" + encodeURIComponent(token) + "&memory=" + m.id;
    a.id = "select-" + m.id;
    const last = m.recent_predictions[0];
    return [a, m.method, m.encoder, String(m.version), String(m.logged), last ? last.class + " " + num(last.confidence, 2) : "-"];
  }), "memories"));
}

async function load() {
  if (!token) { message.textContent = "open this page as /console#token=<admin token> (or #token=<memory token>&memory=<id>)"; return; }
  try {
    try {
      const status = await api("/status.json");
      renderList(status.memories);
      if (!selected && status.memories.length) selected = status.memories[0].id;
    } catch (e) { list.replaceChildren(el("p", "memory list: " + e.message + " (the list needs the admin token)", "meta")); }
    if (selected) renderMemory(await api("/memories/" + selected + "/console.json"));
    message.textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.loaded = String(Date.now());
  } catch (e) { message.textContent = "console: " + e.message; }
}

window.addEventListener("hashchange", () => { selected = new URLSearchParams(location.hash.slice(1)).get("memory"); load(); });
document.getElementById("refresh").addEventListener("click", load);
load();
