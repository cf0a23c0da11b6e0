"""The demo's web site: a page that asks the session API for a number to show its visitor, and a
button that simulates a phone call to that number through a telephony provider's webhook.

Served by the standalone mode (``python -m standalone.site --port P --ingest URL --emulator URL``).
The page keeps a Metrica-like ClientId in ``localStorage``, calls ``/v1/number`` of the ingestion
service (CORS), and shows where the simulated call is: stored, uploaded, and its Metrica status.
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
<style>body{font-family:sans-serif;max-width:40em;margin:3em auto}#number{font-size:2em;font-weight:bold}
button{font-size:1.1em;padding:.4em 1em}#trace{white-space:pre-wrap;background:#f4f4f4;padding:1em}</style>
</head><body>
<h1>Demo shop</h1>
<p>Call us: <span id="number">…</span></p>
<p>Your Metrica ClientId (kept in this browser): <code id="cid"></code></p>
<p><button id="call" disabled>Simulate a call to this number</button></p>
<div id="trace"></div>
<script>
const INGEST = "__INGEST__", COUNTER = __COUNTER__;
let cid = localStorage.getItem("demoClientId");
if (!cid) {
  cid = String(Math.floor(Math.random() * 1e9)) + String(Date.now());
  localStorage.setItem("demoClientId", cid);
}
document.getElementById("cid").textContent = cid;
const trace = t => document.getElementById("trace").textContent += t + "\\n";
fetch(`${INGEST}/v1/number?counter=${COUNTER}&ClientId=${cid}&URL=${encodeURIComponent(location.href)}`)
  .then(r => r.json()).then(a => {
    document.getElementById("number").textContent = a.number || "(no number)";
    trace(`session API: ${JSON.stringify(a)}`);
    if (a.number && !a.fallback) document.getElementById("call").disabled = false;
  });
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
        html = PAGE.replace("__INGEST__", ingest_url).replace("__COUNTER__", str(DEMO_COUNTER))
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
