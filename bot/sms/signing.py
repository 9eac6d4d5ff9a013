"""Alibaba Cloud V3 request signature, `ACS3-HMAC-SHA256` (RPC style), byte for byte as documented.

CanonicalRequest = METHOD \\n "/" \\n CanonicalQueryString \\n CanonicalHeaders \\n SignedHeaders \\n HashedPayload
StringToSign     = "ACS3-HMAC-SHA256" \\n hex(sha256(CanonicalRequest))
Signature        = hex(hmac_sha256(AccessKeySecret, StringToSign))
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable, Mapping
from urllib.parse import quote, urlencode

ALGORITHM = "ACS3-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


def percent_encode(value: str) -> str:
    """RFC 3986, UTF-8: keep `A-Z a-z 0-9 - _ . ~`, encode everything else as upper-case `%XY`."""
    return quote(value, safe="-_.~")


def canonical_query(params: Iterable[tuple[str, str]] | Mapping[str, str]) -> str:
    items = params.items() if isinstance(params, Mapping) else params
    return "&".join(f"{k}={v}" for k, v in sorted((percent_encode(k), percent_encode(v)) for k, v in items))


def wire_query(params: Mapping[str, str]) -> str:
    """The query as it goes on the wire (form encoding, like the official SDK: space as `+`)."""
    return urlencode(sorted(params.items()))


def form_body(params: Mapping[str, str]) -> bytes:
    """A form body exactly as the SDK builds one: `urlencode(sorted(params))`, spaces as `+`."""
    return urlencode(sorted(params.items())).encode()


def acs_date(now: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if now is None else now))


def new_nonce() -> str:
    return secrets.token_hex(16)


def canonical_request(
    method: str,
    query: str,
    headers: Mapping[str, str],
    signed_headers: list[str],
    payload_hash: str,
) -> str:
    lines = "".join(f"{name}:{headers[name].strip()}\n" for name in signed_headers)
    return "\n".join([method.upper(), "/", query, lines, ";".join(signed_headers), payload_hash])


def signature(secret: str, canonical: str) -> str:
    string_to_sign = f"{ALGORITHM}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    return hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()


def sign(
    *,
    method: str,
    host: str,
    action: str,
    version: str,
    access_key_id: str,
    access_key_secret: str,
    query: Mapping[str, str] | None = None,
    body: bytes = b"",
    content_type: str | None = None,
    security_token: str | None = None,
    date: str | None = None,
    nonce: str | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Build the signed headers of one request (a fresh date and nonce unless given).

    Signs `host`, every `x-acs-*` header, `content-type` when there is a body, and any `extra_headers`.
    Returns lower-case header names, with `Authorization`.
    """
    headers: dict[str, str] = {
        "host": host,
        "x-acs-action": action,
        "x-acs-version": version,
        "x-acs-date": date or acs_date(),
        "x-acs-signature-nonce": nonce or new_nonce(),
        "x-acs-content-sha256": hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256,
    }
    if security_token:
        headers["x-acs-security-token"] = security_token
    if content_type:
        headers["content-type"] = content_type
    if extra_headers:
        headers.update({k.lower(): v for k, v in extra_headers.items()})
    signed = sorted(headers)
    canonical = canonical_request(
        method, canonical_query(query or {}), headers, signed, headers["x-acs-content-sha256"]
    )
    sig = signature(access_key_secret, canonical)
    headers["authorization"] = (
        f"{ALGORITHM} Credential={access_key_id},SignedHeaders={';'.join(signed)},Signature={sig}"
    )
    return headers


def parse_authorization(value: str) -> dict[str, str]:
    """`ACS3-HMAC-SHA256 Credential=…,SignedHeaders=…,Signature=…` → its three fields (for verifiers)."""
    algorithm, _, rest = value.partition(" ")
    if algorithm != ALGORITHM:
        raise ValueError(f"unsupported algorithm {algorithm!r}")
    fields = dict(part.split("=", 1) for part in rest.split(",") if "=" in part)
    missing = {"Credential", "SignedHeaders", "Signature"} - fields.keys()
    if missing:
        raise ValueError(f"Authorization lacks {', '.join(sorted(missing))}")
    return fields
