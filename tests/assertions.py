"""An assertion signing key pair and JWT assertions signed as LINE's "Generate a JWT" describes,
for tests of the channel access token API. `cryptography` (the `test` extra) makes the key and
signs: an implementation independent of the sandbox's own RS256 check."""
from __future__ import annotations

import base64
import json
import time

import pytest

rsa = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.rsa")
padding = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.padding")
hashes = pytest.importorskip("cryptography.hazmat.primitives.hashes")

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
AUDIENCE = "https://api.line.me/"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _integer(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def new_private_key(bits: int = 2048):
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def public_jwk(private_key) -> dict:
    """The public half as the JWK one registers with LINE (no kid: LINE assigns it)."""
    numbers = private_key.public_key().public_numbers()
    return {"kty": "RSA", "alg": "RS256", "use": "sig", "n": _integer(numbers.n), "e": _integer(numbers.e)}


def private_jwk(private_key) -> dict:
    """The whole key as the JWK LINE's "Generate a JWT" makes (what `channel_private_key` holds)."""
    numbers = private_key.private_numbers()
    members = {"n": numbers.public_numbers.n, "e": numbers.public_numbers.e, "d": numbers.d, "p": numbers.p,
               "q": numbers.q, "dp": numbers.dmp1, "dq": numbers.dmq1, "qi": numbers.iqmp}
    return {"kty": "RSA", "alg": "RS256", "use": "sig", **{name: _integer(value) for name, value in members.items()}}


def signed(private_key, header: dict, payload: dict) -> str:
    """A compact JWS of header and payload with an RS256 signature by private_key."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    signature = private_key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


def assertion(private_key, kid: str, channel_id: str, token_exp: int | None = None, now: float | None = None,
              header: dict | None = None, **claims) -> str:
    """A valid assertion for the channel (expiring in 25 minutes), with `claims` replacing or adding
    payload members and `header` header members (None removes a member)."""
    now = time.time() if now is None else now
    payload = {"iss": channel_id, "sub": channel_id, "aud": AUDIENCE, "exp": int(now) + 25 * 60}
    if token_exp is not None:
        payload["token_exp"] = token_exp
    payload.update(claims)
    full_header = {"alg": "RS256", "typ": "JWT", "kid": kid, **(header or {})}
    return signed(private_key, {k: v for k, v in full_header.items() if v is not None},
                  {k: v for k, v in payload.items() if v is not None})
