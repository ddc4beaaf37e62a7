"""The status page: one static HTML document that fetches /status.json with the admin token.

Open it as http://host:port/status#token=<admin token>. The token stays in the URL fragment,
which browsers never send to the server (so it is not in access logs); the page's script sends it
as a Bearer header. All memory data (names, class names) is inserted with textContent, never as
HTML, so a class name cannot inject markup. It refreshes every 5 s. Script and styles are
served as their own files (/status.js, /status.css), so the page's Content-Security-Policy
allows no inline script or style at all (`CSP`).
"""

STATUS_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>genba status</title>
<link rel="stylesheet" href="/status.css">
</head>
<body>
<h1>genba memories</h1>
<p id="message" class="meta">loading...</p>
<div id="memories"></div>
<script src="/status.js"></script>
</body>
</html>
"""

STATUS_JS = """"use strict";
const token = new URLSearchParams(location.hash.slice(1)).get("token");
const message = document.getElementById("message");
const root = document.getElementById("memories");

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function row(cells, header) {
  const tr = el("tr");
  for (const c of cells) { const td = el(header ? "th" : "td"); if (c instanceof Node) td.appendChild(c); else td.textContent = String(c); tr.appendChild(td); }
  return tr;
}

function render(data) {
  root.replaceChildren();
  const n = data.memories.length;
  message.textContent = n + (n === 1 ? " memory" : " memories") + ", updated " + new Date().toLocaleTimeString();
  for (const m of data.memories) {
    const section = el("section");
    section.id = "memory-" + m.id;
    section.appendChild(el("h2", (m.name || "(unnamed)") + " - " + m.id));
    section.appendChild(el("p", "method " + m.method + ", encoder " + m.encoder, "meta"));
    const banks = Object.keys(m.fill).sort();
    const fill = el("table");
    fill.className = "fill";
    fill.appendChild(row(["class"].concat(banks), true));
    m.classnames.forEach((name, c) => {
      fill.appendChild(row([name].concat(banks.map(b => {
        const span = el("span"); const bar = el("span", "", "bar"); bar.style.width = Math.min(200, 4 * m.fill[b][c]) + "px";
        span.appendChild(bar); span.appendChild(document.createTextNode(" " + m.fill[b][c])); return span;
      }))));
    });
    section.appendChild(el("h3", "fill per class"));
    section.appendChild(fill);
    section.appendChild(el("h3", "recent predictions"));
    const recent = el("table");
    recent.className = "recent";
    recent.appendChild(row(["time", "class", "confidence"], true));
    for (const p of m.recent_predictions) {
      recent.appendChild(row([new Date(p.time * 1000).toLocaleTimeString(), p.class, p.confidence.toFixed(3)]));
    }
    if (!m.recent_predictions.length) recent.appendChild(row(["-", "none yet", "-"]));
    section.appendChild(recent);
    root.appendChild(section);
  }
}

async function refresh() {
  if (!token) { message.textContent = "open this page as /status#token=<admin token>"; return; }
  try {
    const response = await fetch("/status.json", { headers: { "Authorization": "Bearer " + token } });
    if (!response.ok) { message.textContent = "status.json: HTTP " + response.status; return; }
    render(await response.json());
  } catch (e) {
    message.textContent = "status.json: " + e;
  }
}

refresh();
setInterval(refresh, 5000);
"""

STATUS_CSS = """  body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
  h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
  table { border-collapse: collapse; margin: .4em 0; }
  td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: left; }
  .bar { display: inline-block; height: .8em; background: #4a7; vertical-align: middle; }
  .meta { color: #666; }
"""

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
