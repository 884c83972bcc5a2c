"""Headers every response of every service carries, whatever the framework.

For every response: no MIME sniffing, no referrer sent onwards, not to be framed.
For API answers (JSON and problem+json): nothing may be cached (they are per-user
or per-caller), and a content security policy that allows nothing, since a JSON
document never needs a script, a style or a frame. HTML pages (the API docs, the
Django admin) keep what their framework sets. A header the application set
itself is never replaced.
"""

from __future__ import annotations

from collections.abc import Iterable

ALWAYS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
API = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}


def is_json(content_type: str | None) -> bool:
    """``application/json``, ``application/problem+json`` and other ``+json`` types."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def missing(content_type: str | None, present: Iterable[str]) -> dict[str, str]:
    """The security headers a response with ``content_type`` lacks (``present``: its names)."""
    have = {name.lower() for name in present}
    wanted = {**ALWAYS, **API} if is_json(content_type) else ALWAYS
    return {name: value for name, value in wanted.items() if name.lower() not in have}
