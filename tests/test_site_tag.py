"""The site tag (``GET /tag.js``, ingest/static/tag.js) in headless Chromium, on the real ingestion service
(uvicorn) and a real Redis: a test page on loopback with a stub ``ym`` that answers a known ClientID,
static numbers in text, in ``tel:`` links, in several spellings and in nodes added later, and some
that must stay (another number, ``data-calltrack-skip``).

Session API up: every spelling of the static number is swapped for the pool number, the lease in Redis
carries the stub's ClientID, the tag renews it and releases it when the page is left. Slow (beyond the
tag's bound), down (a gateway's 502), an exhausted pool, and Metrica silent or absent: the static
numbers stay, with no exception and no console error on the page; with a registry selector, and when
renewals fail until the lease ends (the static numbers come back). Plus the script's caching headers and the registry's
per-counter numbers and selector, over HTTP.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route as WebRoute

from config.settings import Settings
from tests.accounts_helpers import SECRET_KEY
from tests.helpers import chromium, wait_for
from tests.pipeline import running_ingest, serving
from worker.accounts.model import AccountIn, CounterIn
from worker.intake.pools import NumberPools, Session
from worker.intake.routing import Route
from worker.intake.service import build_intake
from worker.runtime import Runtime

COUNTER = 404
STATIC = "+74950000000"
POOL = "+74951230001"
CLIENT_ID = "1700000000123456789"
SLOW_SECONDS = 7  # beyond the tag's bound (API_WAIT, 4 s)

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>tag test</title></head><body>
<p id="t1">Call us: +7 495 000-00-00</p>
<p id="t2">Or: 8 (495) 000-00-00, other office +7 495 999-99-99</p>
<p><a id="l1" href="tel:+74950000000">+74950000000</a> <a id="l2" href="tel:84950000000">call</a></p>
<p id="other">Support: +7 812 000-00-00</p>
<p id="skip" data-calltrack-skip>Our static number: <a href="tel:+74950000000">+7 495 000-00-00</a></p>
<div class="phone" id="sel">+7 499 111-22-33</div>
<div id="late"></div>
<script>
window.ymCalls = [];
if ("__YM__" !== "none") {
  window.ym = function (counter, method, cb) {
    window.ymCalls.push([counter, method]);
    if ("__YM__" === "ok") setTimeout(function () { cb("__CID__"); }, 100);
  };
}
setTimeout(function () {
  var p = document.createElement("p");
  p.id = "late-p";
  p.innerHTML = 'Late: <a id="late-a" href="tel:+74950000000">+7 (495) 000 00 00</a>';
  document.getElementById("late").appendChild(p);
}, 1500);
</script>
<script async src="__TAG__/tag.js?counter=__COUNTER__"></script>
</body></html>"""

STATIC_TEXTS = {
    "#t1": "Call us: +7 495 000-00-00",
    "#t2": "Or: 8 (495) 000-00-00, other office +7 495 999-99-99",
    "#l1": "+74950000000",
    "#other": "Support: +7 812 000-00-00",
    "#skip": "Our static number: +7 495 000-00-00",
    "#sel": "+7 499 111-22-33",
    "#late-a": "+7 (495) 000 00 00",
}
STATIC_LINKS = {
    "#l1": "tel:+74950000000",
    "#l2": "tel:84950000000",
    "#skip a": "tel:+74950000000",
    "#late-a": "tel:+74950000000",
}


def shop_page(tag_base: str, ym: str = "ok") -> Starlette:
    html = (PAGE.replace("__TAG__", tag_base).replace("__COUNTER__", str(COUNTER))
            .replace("__YM__", ym).replace("__CID__", CLIENT_ID))  # fmt: skip

    async def page(_request: Request) -> Response:
        return HTMLResponse(html)

    async def no_icon(_request: Request) -> Response:
        return Response(status_code=204)

    return Starlette(routes=[WebRoute("/", page), WebRoute("/favicon.ico", no_icon)])


def gateway(target: str, mode: dict[str, str]) -> Starlette:
    """A loopback gateway in front of the ingestion service: passes everything, or makes the session
    API slow (``mode['api'] == 'slow'``) or down (a 502, as a load balancer answers with no backend)."""

    async def forward(request: Request) -> Response:
        path = request.url.path
        if path.startswith("/v1/number"):
            if mode["api"] == "slow":
                await asyncio.sleep(SLOW_SECONDS)
            elif mode["api"] == "down":
                return Response("bad gateway", 502, headers={"Access-Control-Allow-Origin": "*"})
        headers = {k: v for k, v in request.headers.items() if k in ("content-type", "origin", "if-none-match")}
        async with httpx.AsyncClient(timeout=30) as client:
            answer = await client.request(request.method, target + path, params=request.query_params,
                                          content=await request.body(), headers=headers)  # fmt: skip
        kept = {k: v for k, v in answer.headers.items() if k not in ("content-encoding", "content-length")}
        return Response(answer.content, answer.status_code, headers=kept)

    return Starlette(routes=[WebRoute("/{path:path}", forward, methods=["GET", "POST", "OPTIONS"])])


@pytest.fixture
def tag_settings(make_settings: Callable[..., Settings]) -> Iterator[tuple[Settings, Runtime]]:
    settings = make_settings(pool_fallback_numbers={COUNTER: STATIC}, pool_first_lease_seconds=6,
                             pool_lease_seconds=600, accounts_cache_seconds=0, secret_keys=SECRET_KEY)  # fmt: skip
    rt = Runtime(settings)
    build_intake(rt).routing.add([Route(POOL, COUNTER, "dynamic")])
    try:
        yield settings, rt
    finally:
        rt.close()


@contextmanager
def browser_page(url: str) -> Iterator[tuple[Any, list[str]]]:
    """A Chromium page at ``url``; the list collects page exceptions and console errors."""
    from playwright.sync_api import sync_playwright

    executable = chromium()
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 900, "height": 700})
        page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
        page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.goto(url)
        try:
            yield page, errors
        finally:
            browser.close()


def texts(page: Any) -> dict[str, str]:
    return {sel: page.text_content(sel) for sel in STATIC_TEXTS}


def links(page: Any) -> dict[str, str]:
    return {sel: page.get_attribute(sel, "href") for sel in STATIC_LINKS}


def lease_end_ms(rt: Runtime) -> int:
    score = rt.redis.zscore(rt.keys.pool(COUNTER), POOL)
    return int(score or 0)


def test_the_tag_swaps_every_spelling_renews_the_lease_and_releases_it(
    tag_settings: tuple[Settings, Runtime],
) -> None:
    settings, rt = tag_settings
    with (
        running_ingest(settings) as ingest,
        serving(shop_page(ingest)) as site,
        browser_page(site + "/") as (
            page,
            errors,
        ),
    ):
        page.wait_for_function("window.CalltrackTag && window.CalltrackTag.state === 'swapped'", timeout=15_000)
        page.wait_for_selector("#late-a")
        page.wait_for_function("document.getElementById('late-a').textContent.indexOf('123') > 0", timeout=10_000)
        shown, hrefs = texts(page), links(page)
        assert page.evaluate("window.ymCalls") == [[COUNTER, "getClientID"]]
        assert page.evaluate("window.CalltrackTag.clientId") == CLIENT_ID
        assert page.evaluate("Object.keys(window).filter(k => k.indexOf('Calltrack') === 0)") == ["CalltrackTag"]

        # Renewed before the short first lease (6 s) ends: only a returning session gets the 600 s lease.
        wait_for(lambda: lease_end_ms(rt) - rt.redis.time()[0] * 1000 > 60_000, timeout=20, what="the lease renewed")
        page.goto("about:blank")  # pagehide: the beacon releases the lease
        wait_for(lambda: lease_end_ms(rt) - rt.redis.time()[0] * 1000 < 10_000, timeout=10, what="the lease released")
    assert shown == {
        "#t1": "Call us: +7 495 123-00-01",
        "#t2": "Or: 8 (495) 123-00-01, other office +7 495 999-99-99",  # another number is left alone
        "#l1": POOL,
        "#other": "Support: +7 812 000-00-00",
        "#skip": "Our static number: +7 495 000-00-00",  # data-calltrack-skip
        "#sel": "+7 499 111-22-33",
        "#late-a": "+7 (495) 123 00 01",  # added after the swap
    }
    assert hrefs == {"#l1": "tel:" + POOL, "#l2": "tel:84951230001", "#skip a": "tel:+74950000000",
                     "#late-a": "tel:" + POOL}  # fmt: skip
    leases = [str(v) for v in rt.redis.hvals(rt.keys.pool_log(COUNTER))]
    assert len(leases) == 1 and f'"ClientId":"{CLIENT_ID}"' in leases[0] and site in leases[0]
    assert errors == []


@pytest.mark.parametrize(
    ("api", "ym"), [("slow", "ok"), ("down", "ok"), ("full", "ok"), ("up", "never"), ("up", "none")]
)
def test_the_static_number_stays_when_the_session_api_or_metrica_fails(
    tag_settings: tuple[Settings, Runtime], api: str, ym: str
) -> None:
    settings, rt = tag_settings
    mode = {"api": api}
    if api == "full":  # another visitor holds the pool's only number: the fallback is answered
        held = NumberPools(rt).lease(Session.model_validate({"counter": COUNTER, "ClientId": "7"}), "10.9.9.9")
        assert held.number == POOL
    with (
        running_ingest(settings) as ingest,
        serving(gateway(ingest, mode)) as front,
        serving(shop_page(front, ym)) as site,
        browser_page(site + "/") as (page, errors),
    ):
        page.wait_for_function("window.CalltrackTag && window.CalltrackTag.state === 'static'", timeout=15_000)
        page.wait_for_selector("#late-a")
        if api == "slow":  # the late answer, when it comes, changes nothing
            page.wait_for_timeout(SLOW_SECONDS * 1000 - 3000)
        shown, hrefs, state = texts(page), links(page), page.evaluate("window.CalltrackTag.state")
        tag_errors, reason = page.evaluate("[window.CalltrackTag.errors, window.CalltrackTag.reason]")
    assert shown == STATIC_TEXTS and hrefs == STATIC_LINKS and state == "static"
    assert tag_errors == 0
    expected = {
        "slow": "no answer from the session API in time",
        "down": "the session API answered 502",
        "full": "the session API answered the fallback number",
    }
    assert reason == (expected[api] if ym == "ok" else "no ClientID from Metrica")
    # A gateway's 502 is logged by the browser as a failed resource, not by the page.
    assert [e for e in errors if "Failed to load resource" not in e] == []
    if ym != "ok":
        assert rt.redis.hlen(rt.keys.pool_log(COUNTER)) == 0  # no ClientID: no lease was asked for
    if api == "full":
        assert rt.redis.hlen(rt.keys.pool_log(COUNTER)) == 1  # only the other visitor's lease


def test_tag_js_is_cacheable_versioned_and_small(tag_settings: tuple[Settings, Runtime]) -> None:
    settings, _ = tag_settings
    with running_ingest(settings) as ingest, httpx.Client(base_url=ingest) as http:
        first = http.get("/tag.js?counter=404", headers={"Accept-Encoding": "gzip"})
        version = first.headers["x-tag-version"]
        raw = http.get("/tag.js?counter=1", headers={"Accept-Encoding": "identity"})
        again = http.get("/tag.js", headers={"If-None-Match": first.headers["etag"]})
        pinned = http.get(f"/tag.js?v={version}")
    assert first.status_code == 200 and first.headers["content-encoding"] == "gzip"
    assert first.headers["content-type"].startswith("text/javascript")
    assert first.headers["cache-control"] == "public, max-age=3600" and first.headers["etag"] == f'W/"{version}"'
    assert "content-encoding" not in raw.headers and raw.content == first.content  # one script for every counter
    assert f"site tag {version}".encode() in raw.content
    assert len(gzip.compress(raw.content)) < 5000
    assert again.status_code == 304 and again.content == b""
    assert pinned.headers["cache-control"] == "public, max-age=31536000, immutable"


def test_the_registry_names_the_numbers_or_the_selector_and_release_is_checked(
    tag_settings: tuple[Settings, Runtime],
) -> None:
    settings, rt = tag_settings
    counter = CounterIn(id=COUNTER, site_numbers=["8 (499) 111-22-33"], phone_region="RU", site_selector=".phone")
    rt.accounts.put(AccountIn(id="shop", counters=[counter]))
    with running_ingest(settings) as ingest, httpx.Client(base_url=ingest) as http:
        answer = http.get("/v1/number", params={"counter": COUNTER, "ClientId": "42"}).json()
        released = http.post("/v1/number/release", content=f'{{"counter": {COUNTER}, "ClientId": "42"}}',
                             headers={"Content-Type": "text/plain;charset=UTF-8"})  # fmt: skip
        again = http.post("/v1/number/release", json={"counter": COUNTER, "ClientId": "42"})
        other = http.post("/v1/number/release", json={"counter": COUNTER, "ClientId": "43"})
        bad = http.post("/v1/number/release", json={"counter": COUNTER, "ClientId": "x", "secret": 1})
        hold = lease_end_ms(rt) - rt.redis.time()[0] * 1000
    assert answer["number"] == POOL and answer["replace"] == ["+74991112233"] and answer["selector"] == ".phone"
    assert 0 < answer["seconds"] <= 6
    assert released.json() == {"released": True} and again.json() == {"released": True}
    assert other.json() == {"released": False}  # another session's release changes nothing
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "secret"
    assert hold <= 7_000


def test_a_selector_from_the_registry_and_a_lease_that_can_no_longer_be_renewed(
    tag_settings: tuple[Settings, Runtime],
) -> None:
    settings, rt = tag_settings
    rt.accounts.put(AccountIn(id="shop", counters=[CounterIn(id=COUNTER, site_selector=".phone")]))
    mode = {"api": "up"}
    with (
        running_ingest(settings) as ingest,
        serving(gateway(ingest, mode)) as front,
        serving(shop_page(front)) as site,
        browser_page(site + "/") as (page, errors),
    ):
        page.wait_for_function("window.CalltrackTag && window.CalltrackTag.state === 'swapped'", timeout=15_000)
        swapped = texts(page)
        # The session API goes down: renewals fail, and once the 6 s lease has ended the static
        # numbers come back (the pool number may be another visitor's by then).
        mode["api"] = "down"
        page.wait_for_function("window.CalltrackTag.state === 'static'", timeout=30_000)
        back, reason = texts(page), page.evaluate("window.CalltrackTag.reason")
    # Only the element the selector names shows the pool number, whatever number it showed before.
    assert swapped == {**STATIC_TEXTS, "#sel": "+7 495 123-00-01"}
    assert back == STATIC_TEXTS and reason == "the lease ended unrenewed"
    assert [e for e in errors if "Failed to load resource" not in e] == []


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"site_numbers": ["8 (499) 111-22-33"]}, "site_numbers"),  # national, with no phone_region
        ({"site_numbers": ["12"], "phone_region": "RU"}, "site_numbers"),
        ({"site_numbers": ["+74950000000"] * 21}, "site_numbers"),
        ({"site_selector": ""}, "site_selector"),
        ({"site_selector": "a" * 201}, "site_selector"),
    ],
)
def test_bad_site_numbers_or_selector_are_refused_naming_the_field(given: dict[str, Any], field: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as refused:
        CounterIn.model_validate({"id": COUNTER, **given})
    assert [e["loc"][0] for e in refused.value.errors()] == [field]
