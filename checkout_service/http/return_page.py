"""The page the provider sends the browser back to. It finalizes nothing: it asks for the
purchase's status until the provider's confirmation has been applied, or the timeout passes."""

from __future__ import annotations

import html
import json

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Confirming your purchase</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#222}
#state{font-size:1.3rem}</style></head>
<body><h1>Thank you</h1>
<p id="state" data-state="confirming">Confirming your purchase with the payment provider…</p>
<p id="detail"></p>
<script>
const STATUS_URL = __STATUS_URL__;
const state = document.getElementById("state"), detail = document.getElementById("detail");
function show(name, text) { state.dataset.state = name; state.textContent = text; }
async function poll() {
  let body;
  try { const r = await fetch(STATUS_URL, {cache: "no-store"}); body = await r.json();
        if (!r.ok) throw new Error(body.error ? body.error.message : r.status); }
  catch (e) { detail.textContent = "Still trying to reach the server…"; return setTimeout(poll, 1000); }
  if (body.state === "finalized") {
    show("finalized", "Your purchase is active: " + (body.plans.join(", ") || "thank you") + ".");
    detail.textContent = "Taking you back…";
    return setTimeout(() => { window.location.href = body.success_url; }, 1500);
  }
  if (["expired", "failed", "conflict"].includes(body.state)) {
    return show(body.state, "This purchase did not go through (" + body.state + "). " + (body.reason || ""));
  }
  if (Date.now() >= Date.parse(body.timeout_at)) {
    return show("processing", "Your payment is still processing. We'll email you when it is confirmed.");
  }
  setTimeout(poll, body.poll_after_ms || 500);
}
poll();
</script></body></html>
"""


def render(status_url: str) -> str:
    # json.dumps gives a JS string literal; escaping "<" keeps it from closing the script element.
    literal = json.dumps(html.unescape(status_url)).replace("<", "\\u003c")
    return PAGE.replace("__STATUS_URL__", literal)
