"""Freshchat domains: the allow-list, and what insecure mode (local stand-ins) still refuses."""

from __future__ import annotations

import pytest

from app.domains import normalise_domain
from app.errors import BadRequest


@pytest.mark.parametrize(
    "host",
    [
        "169.254.169.254",
        "http://169.254.169.254/latest/meta-data",
        "169.254.169.254:80",
        "[fe80::1]:8080",
        "metadata.google.internal",
        "metadata",
        "0.0.0.0:8000",
        "[::]:8000",
    ],
)
def test_insecure_mode_never_sends_the_key_to_a_metadata_service(host: str) -> None:
    with pytest.raises(BadRequest, match="never a Freshchat domain"):
        normalise_domain(host, allow_insecure=True)


@pytest.mark.parametrize(
    ("host", "normalised"),
    [
        ("127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("http://localhost:8000/", "http://localhost:8000"),
        ("[::1]:9000", "http://[::1]:9000"),
        ("https://10.0.0.5:8443", "https://10.0.0.5:8443"),
        ("Acme.Freshchat.com.", "acme.freshchat.com"),
    ],
)
def test_insecure_mode_still_takes_local_stand_ins(host: str, normalised: str) -> None:
    assert normalise_domain(host, allow_insecure=True) == normalised


def test_without_insecure_mode_only_freshchat_hosts() -> None:
    assert normalise_domain("https://acme.freshchat.com/a", False) == "acme.freshchat.com"
    for host in ("169.254.169.254", "127.0.0.1:5000", "evil.example.com"):
        with pytest.raises(BadRequest, match="not a Freshchat domain"):
            normalise_domain(host, allow_insecure=False)
