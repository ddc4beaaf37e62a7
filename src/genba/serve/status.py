"""The console page and the offline API docs page: static documents, their script and styles.

Open the console as http://host:port/console#token=<admin token> (or #token=<memory token>&memory=<id>).
The token stays in the URL fragment, which browsers never send to the server (so it is not in
access logs); the page's script sends it as a Bearer header, never as a cookie. All memory data
(names, class names) is inserted with textContent, never as HTML, so a class name cannot inject
markup. Script and styles are their own files (web/console.js, web/console.css), so the page's
Content-Security-Policy allows no inline script or style at all (`CSP`); images are the log's
thumbnails as data: URIs. /docs loads Swagger UI 5 from the installed fastapi-offline package
with its own initialiser script, also without inline script (`DOCS_CSP`).
"""

from pathlib import Path

WEB = Path(__file__).resolve().parent / "web"

CONSOLE_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>genba console</title>
<link rel="stylesheet" href="/console.css">
</head>
<body>
<h1>genba console</h1>
<p><button id="refresh">refresh</button> <span id="message" class="meta">loading...</span></p>
<div id="list"></div>
<div id="memory"></div>
<script src="/console.js"></script>
</body>
</html>
"""

CONSOLE_JS = (WEB / "console.js").read_text(encoding="utf-8")
CONSOLE_CSS = (WEB / "console.css").read_text(encoding="utf-8")

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

DOCS_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>genba API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>
"""

DOCS_JS = """"use strict";
window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true });
"""

DOCS_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; "
            "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
"""Swagger UI sets inline style attributes on its own elements; scripts stay 'self' only."""
