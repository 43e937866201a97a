"""JSON Web Signatures as LINE's channel access token API uses them: the RS256 assertions a bot
signs with its assertion signing key (checked against the public JWK the channel registered),
and the HS256 seal on the tokens the sandbox issues.

RS256 verification is RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 3.3, RFC 8017 8.2.2): the
signature raised to the public exponent must equal, byte for byte, the one encoding of the
message's digest (the comparison RFC 8017 prescribes, which leaves no room for the
lenient-parsing forgeries). It is a modular power with Python's integers, so the sandbox needs no
cryptography package: about 0.15 ms per check with LINE's 2,048-bit keys.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json

RSA_BITS = 2048     # LINE: "RSA key length is 2048bit"
# DER of DigestInfo(sha256, <32 bytes follow>): the prefix of every PKCS#1 v1.5 SHA-256 encoding
_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi")


class JwsError(ValueError):
    """Not a JWS, or not one this code accepts; the message says which part is wrong."""


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """base64url without padding (RFC 7515 2); anything else is a JwsError."""
    if not isinstance(text, str) or "=" in text:
        raise JwsError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise JwsError("not base64url") from None


_HS256_HEADER = b64url_encode(b'{"alg":"HS256","typ":"JWT"}')   # every sealed token's header


def _json_part(text: str, name: str) -> dict:
    try:
        value = json.loads(b64url_decode(text))
    except (JwsError, UnicodeDecodeError, json.JSONDecodeError):
        raise JwsError(f"the {name} is not base64url-encoded JSON") from None
    if not isinstance(value, dict):
        raise JwsError(f"the {name} is not a JSON object")
    return value


class CompactJws:
    """header.payload.signature, decoded but not yet verified."""

    def __init__(self, token: str):
        parts = token.split(".") if isinstance(token, str) else []
        if len(parts) != 3:
            raise JwsError("not a JWS (header.payload.signature)")
        self.header = _json_part(parts[0], "header")
        self.payload = _json_part(parts[1], "payload")
        self.signature = b64url_decode(parts[2])
        self.signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")


class RsaPublicKey:
    """An assertion signing key's public half, checked against LINE's rules for registering one:
    kty RSA, alg RS256, 2,048 bits, for signatures (use "sig" or key_ops ["verify"]), and no kid
    (LINE assigns it)."""

    def __init__(self, n: int, e: int):
        self.n, self.e = n, e
        self.size = (n.bit_length() + 7) // 8

    @classmethod
    def from_jwk(cls, jwk) -> "RsaPublicKey":
        """Raises JwsError naming the first rule the JWK breaks."""
        if not isinstance(jwk, dict):
            raise JwsError("the key must be a JSON Web Key (a JSON object)")
        if any(member in jwk for member in _PRIVATE_MEMBERS):
            raise JwsError("this is a private key: register only its public half (kty, alg, use, n, e)")
        if jwk.get("kty") != "RSA":
            raise JwsError('kty must be "RSA"')
        if jwk.get("alg") != "RS256":
            raise JwsError('alg must be "RS256"')
        if jwk.get("use") != "sig" and jwk.get("key_ops") != ["verify"]:
            raise JwsError('the key must be for signatures: use "sig" or key_ops ["verify"]')
        if "kid" in jwk:
            raise JwsError("the key must have no kid: LINE assigns one when it is registered")
        try:
            n = int.from_bytes(b64url_decode(jwk["n"]), "big")
            e = int.from_bytes(b64url_decode(jwk["e"]), "big")
        except (KeyError, JwsError):
            raise JwsError("n and e must be base64url-encoded integers") from None
        if n.bit_length() != RSA_BITS:
            raise JwsError(f"the key must be {RSA_BITS}-bit RSA (this one has {n.bit_length()} bits)")
        if e < 3 or e % 2 == 0:
            raise JwsError("e is not a valid RSA public exponent")
        return cls(n, e)

    def verifies(self, jws: CompactJws) -> bool:
        """Whether jws carries this key's RS256 signature of its header and payload."""
        if len(jws.signature) != self.size:
            return False
        s = int.from_bytes(jws.signature, "big")
        if s >= self.n:
            return False
        encoded = pow(s, self.e, self.n).to_bytes(self.size, "big")
        digest_info = _SHA256_DIGEST_INFO + hashlib.sha256(jws.signing_input).digest()
        expected = b"\x00\x01" + b"\xff" * (self.size - len(digest_info) - 3) + b"\x00" + digest_info
        return hmac.compare_digest(encoded, expected)


def seal(key: bytes, claims: dict) -> str:
    """An HS256 JWS of `claims` under `key`."""
    signing_input = f"{_HS256_HEADER}.{b64url_encode(json.dumps(claims, separators=(',', ':')).encode())}"
    mac = hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url_encode(mac)}"


def unseal(key: bytes, token: str) -> dict:
    """The claims of a token `seal(key, ...)` made; JwsError for anything else."""
    jws = CompactJws(token)
    if jws.header.get("alg") != "HS256":
        raise JwsError("not sealed by this sandbox")
    mac = hmac.new(key, jws.signing_input, hashlib.sha256).digest()
    if not hmac.compare_digest(mac, jws.signature):
        raise JwsError("not sealed by this sandbox")
    return jws.payload
