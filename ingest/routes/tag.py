"""The site tag: ``GET /tag.js``, the script a site includes next to Metrica's tag to show each visitor a
tracking number (``ingest/static/tag.js``; README "The site tag").

The same bytes for every counter (the script reads ``?counter=`` from its own URL), so one cached copy
serves every site. Versioned by its content: the version is the first 12 hex digits of its SHA-256,
named in the script, in the (weak) ``ETag`` and in ``X-Tag-Version``; ``If-None-Match`` answers 304. A URL
with ``?v=<that version>`` is cached for a year (immutable), any other for ``TAG_MAX_AGE``. Served
gzipped when the client accepts it. Full-line ``//`` comments and indentation are dropped when loaded.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SOURCE = Path(__file__).resolve().parent.parent / "static" / "tag.js"
TAG_MAX_AGE = 3600  # an unversioned URL: a new release reaches sites within the hour
IMMUTABLE_AGE = 31_536_000


@dataclass(frozen=True, slots=True)
class TagScript:
    """The script as served: its version, its bytes and their gzip."""

    version: str
    body: bytes
    gzipped: bytes

    @classmethod
    def load(cls, path: Path = SOURCE) -> TagScript:
        lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
        text = "\n".join(line for line in lines if line and not line.startswith("//")) + "\n"
        version = hashlib.sha256(text.encode()).hexdigest()[:12]
        body = text.replace("__VERSION__", version).encode()
        return cls(version, body, gzip.compress(body, compresslevel=9, mtime=0))


class TagRoutes:
    """``GET /tag.js``."""

    def __init__(self, script: TagScript | None = None) -> None:
        self.script = script or TagScript.load()

    async def tag(self, request: Request) -> Response:
        script = self.script
        etag = f'W/"{script.version}"'  # weak: the gzipped and the plain bytes are one script
        pinned = request.query_params.get("v") == script.version
        age = f"public, max-age={IMMUTABLE_AGE}, immutable" if pinned else f"public, max-age={TAG_MAX_AGE}"
        headers = {
            "Cache-Control": age,
            "ETag": etag,
            "X-Tag-Version": script.version,
            "Vary": "Accept-Encoding",
            "X-Content-Type-Options": "nosniff",
            "Cross-Origin-Resource-Policy": "cross-origin",
        }
        asked = {t.strip().removeprefix("W/") for t in request.headers.get("if-none-match", "").split(",")}
        if f'"{script.version}"' in asked or "*" in asked:
            return Response(status_code=304, headers=headers)
        body = script.body
        if "gzip" in request.headers.get("accept-encoding", "").lower():
            body = script.gzipped
            headers["Content-Encoding"] = "gzip"
        return Response(body, media_type="text/javascript; charset=utf-8", headers=headers)

    def routes(self) -> list[Route]:
        return [Route("/tag.js", self.tag, methods=["GET", "HEAD"])]
