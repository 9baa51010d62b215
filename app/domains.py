"""Freshchat domain normalisation and the allow-list that also guards against SSRF."""

from __future__ import annotations

import ipaddress
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
        if _metadata_endpoint(host):
            raise BadRequest(
                f"{host!r} is a link-local, unspecified or cloud metadata address, "
                "never a Freshchat domain"
            )
        return "http://" + host if scheme != "https" else "https://" + host
    raise BadRequest(f"{host or value.strip()!r} is not a Freshchat domain: " + HELP)


# Names cloud providers give their instance-metadata service (which hands out credentials).
_METADATA_NAMES = frozenset({"metadata", "metadata.google.internal", "instance-data"})


def _metadata_endpoint(host: str) -> bool:
    """Whether a host (maybe with a port) is link-local or a metadata service: even in
    insecure mode, meant for local stand-ins, the Freshchat key must never be sent there."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.strip("[]").split("]")[0]
    if name in _METADATA_NAMES or name.endswith(".internal"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return address.is_link_local or address.is_multicast or address.is_unspecified


def api_base(domain: str) -> str:
    """Freshchat API base URL for a normalised domain."""
    if domain.startswith(("http://", "https://")):
        return domain + "/v2"
    return f"https://{domain}/v2"
