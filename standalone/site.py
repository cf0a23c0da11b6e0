"""The demo's web site: a page that asks the session API for a number to show its visitor, and a
button that simulates a phone call to that number through a telephony provider's webhook.

Served by the standalone mode (``python -m standalone.site --port P --ingest URL --emulator URL``).
The page shows the shop's static number and loads the site tag (``/tag.js`` of the ingestion service,
README "The site tag"), which swaps it for a number of counter 202's pool. Metrica's own tag cannot be
loaded offline, so a stand-in ``ym`` answers ``getClientID`` with an id kept in ``localStorage``. The
page shows where the simulated call is: stored, uploaded, and its Metrica status.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from emulator.client import EmulatorAdmin
from standalone.feed import Feeder

DEMO_COUNTER = 202
#: The shop's static number (counter 202's fallback, CALLTRACK_POOL_FALLBACK_NUMBERS), which the tag swaps.
DEMO_STATIC_NUMBER = "+74951112233"


@dataclass
class Simulation:
    """One visit and the call that follows it, as the standalone mode runs it on its own."""

    client_id: str
    number: str
    call_id: str


def visit_and_call(ingest_url: str, client_id: str, *, url: str = "https://shop.example/landing") -> Simulation:
    """Ask for a number as the page does, then call it (a signed Zadarma NOTIFY_END)."""
    answer = httpx.get(
        f"{ingest_url}/v1/number", params={"counter": DEMO_COUNTER, "ClientId": client_id, "URL": url}, timeout=10
    ).json()
    number = answer.get("number")
    if not number or answer.get("fallback"):
        raise RuntimeError(f"the demo pool gave no number: {answer}")
    feeder = Feeder(ingest_url)
    try:
        call_id = f"site-{client_id}-{int(time.time())}"
        response = feeder.zadarma_call(call_id, to=number, caller="+79160000000")
        if response.status_code != 200:
            raise RuntimeError(f"the simulated call was refused: {response.status_code} {response.text}")
    finally:
        feeder.close()
    return Simulation(client_id, number, call_id)


def where_is(admin: EmulatorAdmin, client_id: str) -> dict[str, Any] | None:
    """The emulator's row for this visitor's call, with its upload's status, once it is there."""
    for upload in admin.uploads(counter=DEMO_COUNTER, kind="calls"):
        for row in upload.get("rows", []):
            if row.get("ClientId") == client_id:
                return {"upload_id": upload["id"], "status": upload["status"], "row": row}
    return None


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Demo shop</title>
<style>body{font-family:sans-serif;max-width:40em;margin:3em auto}.phone{font-size:2em;font-weight:bold}
button{font-size:1.1em;padding:.4em 1em}#trace{white-space:pre-wrap;background:#f4f4f4;padding:1em}</style>
<script>
// A stand-in for Metrica's tag (mc.yandex.ru cannot be loaded offline): ym(counter, 'getClientID', cb)
// answers a ClientID kept in this browser, as Metrica's does.
window.ym = function (counter, method, cb) {
  if (method !== "getClientID") return;
  let cid = localStorage.getItem("demoClientId");
  if (!cid) {
    cid = String(Math.floor(Math.random() * 1e9)) + String(Date.now());
    localStorage.setItem("demoClientId", cid);
  }
  setTimeout(() => cb(cid), 50);
};
</script>
<script async src="__INGEST__/tag.js?counter=__COUNTER__"></script>
</head><body>
<h1>Demo shop</h1>
<p>Call us: <a class="phone" id="number" href="tel:__STATIC_E164__">__STATIC__</a></p>
<p>Or write it down: 8 (495) 111-22-33.</p>
<p><small>The page's HTML shows the shop's static number, <span data-calltrack-skip>__STATIC__</span>; the
site tag swaps it, in every spelling, for a number of the counter's pool leased to this visitor.</small></p>
<p>Your Metrica ClientId (kept in this browser): <code id="cid"></code></p>
<p><button id="call" disabled>Simulate a call to this number</button></p>
<div id="trace"></div>
<script>
const trace = t => document.getElementById("trace").textContent += t + "\\n";
let cid = null;
ym(__COUNTER__, "getClientID", id => { cid = id; document.getElementById("cid").textContent = id; });
const started = Date.now();
const ready = () => {
  const tag = window.CalltrackTag;
  if (tag && tag.state === "swapped") {
    trace(`site tag ${tag.version}: showing ${tag.number} to ClientID ${tag.clientId}`);
    document.getElementById("call").disabled = false;
  } else if (tag && tag.state === "static") {
    trace(`site tag ${tag.version}: static number kept (${tag.reason})`);
  } else if (Date.now() - started < 15000) setTimeout(ready, 200);
};
ready();
document.getElementById("call").onclick = async () => {
  document.getElementById("call").disabled = true;
  const r = await fetch("/simulate", {method: "POST", headers: {"Content-Type": "application/json"},
                                      body: JSON.stringify({client_id: cid})});
  trace(`simulated call: ${JSON.stringify(await r.json())}`);
  const poll = async () => {
    const s = await (await fetch(`/where?client_id=${cid}`)).json();
    if (s.found) trace(`at Metrica: upload ${s.upload_id}, ${s.status}, ClientId ${s.row.ClientId}`);
    if (!s.found || s.status !== "PROCESSED") setTimeout(poll, 2000);
  };
  poll();
};
</script></body></html>
"""


def create_app(ingest_url: str, emulator_url: str) -> Starlette:
    admin = EmulatorAdmin(emulator_url)

    async def page(_request: Request) -> Response:
        html = (PAGE.replace("__INGEST__", ingest_url).replace("__COUNTER__", str(DEMO_COUNTER))
                .replace("__STATIC_E164__", DEMO_STATIC_NUMBER).replace("__STATIC__", "+7 495 111-22-33"))  # fmt: skip
        return HTMLResponse(html)

    async def simulate(request: Request) -> Response:
        body = await request.json()
        client_id = str(body.get("client_id", ""))
        if not client_id.isdigit():
            return JSONResponse({"error": "client_id must be digits"}, 422)
        try:
            done = visit_and_call(ingest_url, client_id, url=str(request.headers.get("referer") or request.url))
        except RuntimeError as error:
            return JSONResponse({"error": str(error)}, 409)
        return JSONResponse({"number": done.number, "call_id": done.call_id, "stored": True})

    async def where(request: Request) -> Response:
        found = where_is(admin, request.query_params.get("client_id", ""))
        return JSONResponse({"found": False} if found is None else {"found": True, **found})

    return Starlette(
        routes=[
            Route("/", page),
            Route("/simulate", simulate, methods=["POST"]),
            Route("/where", where),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m standalone.site", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ingest", required=True, help="the ingestion service's base URL")
    parser.add_argument("--emulator", required=True, help="the Metrica emulator's base URL")
    args = parser.parse_args()
    uvicorn.run(create_app(args.ingest.rstrip("/"), args.emulator.rstrip("/")), host="127.0.0.1",
                port=args.port, log_level="warning", access_log=False)  # fmt: skip


if __name__ == "__main__":
    main()
