"""The human page at ``/``: uploads per counter, refreshed every few seconds."""

from __future__ import annotations

from html import escape

from emulator.clock import format_iso
from emulator.state import EmulatorState

REFRESH_SECONDS = 3
MAX_PER_COUNTER = 200


def render_index(state: EmulatorState) -> str:
    now = state.clock.now()
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<meta http-equiv='refresh' content='{REFRESH_SECONDS}'>",
        "<title>Metrica emulator</title><style>body{font-family:sans-serif;margin:1.5em}"
        "table{border-collapse:collapse;margin-bottom:1.5em}td,th{border:1px solid #ccc;padding:2px 8px}"
        "th{background:#eee}</style></head><body>",
        "<h1>Yandex Metrica emulator</h1>",
        f"<p>Emulator time {escape(format_iso(now))}; {len(state.store)} uploads, "
        f"{state.store.row_count} accepted rows; status step {state.step_seconds:g} s.</p>",
    ]
    counters = state.store.counters()
    if not counters:
        parts.append("<p>No uploads yet.</p>")
    for counter in counters:
        uploads = sorted(state.store.all(counter=counter), key=lambda u: u.id, reverse=True)
        parts.append(f"<h2>Counter {counter}</h2><table><tr><th>id</th><th>kind</th><th>status</th>")
        parts.append("<th>source</th><th>lines</th><th>comment</th><th>created</th><th>login</th></tr>")
        for upload in uploads[:MAX_PER_COUNTER]:
            parts.append(
                f"<tr><td>{upload.id}</td><td>{upload.kind}</td>"
                f"<td>{upload.status(now, state.step_seconds)}</td>"
                f"<td>{upload.file.source_quantity}</td><td>{upload.file.line_quantity}</td>"
                f"<td>{escape(upload.comment or '')}</td><td>{format_iso(upload.created)}</td>"
                f"<td>{escape(upload.login)}</td></tr>"
            )
        parts.append("</table>")
        if len(uploads) > MAX_PER_COUNTER:
            parts.append(f"<p>... and {len(uploads) - MAX_PER_COUNTER} older uploads.</p>")
    parts.append("</body></html>")
    return "".join(parts)
