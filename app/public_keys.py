"""Freshchat's webhook public key (§12): read as an admin pastes it, and signatures checked.

Freshchat shows the key in its webhook settings as PEM. Admins copy it with its line breaks
lost or turned into spaces, and with either label (`PUBLIC KEY`, or `RSA PUBLIC KEY` around
the same SubjectPublicKeyInfo bytes), so the label is not trusted: the base64 between the
labels is decoded and read as SubjectPublicKeyInfo, else as a PKCS#1 RSAPublicKey.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from app.errors import BadRequest

MAX_PEM_CHARS = 20_000  # an RSA-16384 key is about 3,000 characters of PEM
MIN_BITS = 2048
MAX_BITS = 16384
MAX_SIGNATURE_CHARS = 4096  # base64 of a 16384-bit signature is 2,732 characters
_LABELS = re.compile(r"-----\s*(BEGIN|END)\s+([A-Z ]+?)\s*-----")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_HOW = (
    "paste the public key shown in Freshchat > Settings > Webhooks, from "
    "-----BEGIN PUBLIC KEY----- to -----END PUBLIC KEY-----"
)


@dataclass(frozen=True)
class PublicKey:
    """A verified RSA public key, its canonical PEM and a short fingerprint for people."""

    key: rsa.RSAPublicKey
    pem: str
    fingerprint: str

    def verifies(self, signature_b64: str, body: bytes) -> bool:
        """Whether the header's base64 signature is RSA PKCS#1 v1.5 over SHA-256 of `body`."""
        if not signature_b64 or len(signature_b64) > MAX_SIGNATURE_CHARS:
            return False
        try:
            signature = base64.b64decode(signature_b64.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        try:
            self.key.verify(signature, body, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return False
        return True


def _invalid(why: str) -> BadRequest:
    return BadRequest(
        f"public_key is not a valid RSA public key ({why}); {_HOW}",
        [{"loc": ["body", "public_key"], "msg": why}],
    )


def _der_of(text: str) -> bytes:
    """The key's bytes from a pasted PEM, whatever became of its line breaks."""
    labels = list(_LABELS.finditer(text))
    if labels:
        begins = [m for m in labels if m.group(1) == "BEGIN"]
        ends = [m for m in labels if m.group(1) == "END"]
        if len(begins) != 1 or len(ends) != 1 or ends[0].start() < begins[0].end():
            raise _invalid("it needs exactly one BEGIN and one END line, in that order")
        if "PRIVATE" in begins[0].group(2):
            raise _invalid("this is a private key: paste the public one, never the private")
        text = text[begins[0].end() : ends[0].start()]
    body = "".join(text.split())  # line breaks lost, kept, or turned into spaces: all alike
    if not body:
        raise _invalid("it is empty")
    if _BASE64.fullmatch(body) is None:
        raise _invalid("the text between the BEGIN and END lines is not base64")
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("the text between the BEGIN and END lines is not base64") from None


def _load(der: bytes) -> rsa.RSAPublicKey:
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm):
        wrapped = base64.encodebytes(der).decode()
        pem = f"-----BEGIN RSA PUBLIC KEY-----\n{wrapped}-----END RSA PUBLIC KEY-----\n"
        try:
            key = serialization.load_pem_public_key(pem.encode())
        except (ValueError, UnsupportedAlgorithm):
            raise _invalid("its bytes are not a public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise _invalid("it is not an RSA key; Freshchat signs with RSA")
    return key


def parse_public_key(pasted: str) -> PublicKey:
    """The RSA public key in what the admin pasted; BadRequest saying what is wrong."""
    if not isinstance(pasted, str) or not pasted.strip():
        raise _invalid("it is empty")
    if len(pasted) > MAX_PEM_CHARS:
        raise _invalid(f"it is longer than {MAX_PEM_CHARS} characters")
    key = _load(_der_of(pasted))
    if not MIN_BITS <= key.key_size <= MAX_BITS:
        raise _invalid(f"it has {key.key_size} bits; {MIN_BITS} to {MAX_BITS} are accepted")
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashlib.sha256(der).hexdigest()
    fingerprint = ":".join(digest[i : i + 2] for i in range(0, 16, 2))
    return PublicKey(key, pem, fingerprint)
