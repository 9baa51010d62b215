"""Freshchat domain normalisation and the allow-list that also guards against SSRF."""

from __future__ import annotations

import re

from app.errors import BadRequest

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_ALLOWED = re.compile(
    rf"^(?:{_LABEL}\.)+(?:freshchat\.com|myfreshworks\.com)$",
)
_INSECURE_HOST = re.compile(
    rf"^(?:{_LABEL}\.)*{_LABEL}(?::\d{{1,5}})?$|^\[[0-9a-f:.]+\](?::\d{{1,5}})?$"
)

HELP = (
    "enter your full Freshchat domain including the subdomain, e.g. example.freshchat.com "
    "(accepted: *.freshchat.com, *.myfreshworks.com and the regional API hosts)"
)


def normalise_domain(value: str, allow_insecure: bool) -> str:
    """Lower-case host without scheme, path or trailing dot; `http://host` in insecure mode."""
    text = value.strip().lower()
    if not text:
        raise BadRequest("Freshchat domain is required: " + HELP)
    scheme = ""
    if "://" in text:
        scheme, _, text = text.partition("://")
        if scheme not in ("https", "http"):
            raise BadRequest(f"unsupported scheme {scheme!r}: " + HELP)
        if scheme == "http" and not allow_insecure:
            raise BadRequest("Freshchat must be reached over https: " + HELP)
    host = re.split(r"[/?#]", text, maxsplit=1)[0].rstrip(".")
    if "@" in host:
        raise BadRequest("the domain must not contain credentials: " + HELP)
    if _ALLOWED.match(host):
        return host
    if allow_insecure and _INSECURE_HOST.match(host):
        return "http://" + host if scheme != "https" else "https://" + host
    raise BadRequest(f"{host or value.strip()!r} is not a Freshchat domain: " + HELP)


def api_base(domain: str) -> str:
    """Freshchat API base URL for a normalised domain."""
    if domain.startswith(("http://", "https://")):
        return domain + "/v2"
    return f"https://{domain}/v2"
