"""What to ask LINE's channel access token API for each `token_source` (docs/tokens.md): the form
that issues a token, the one that revokes it, and the JWT assertion a v2.1 token is issued for.
No I/O: the rate limiter (tokens.py) sends these on its own connection, `frontdesk doctor` with
requests.

LINE's reference (channel-access-token.yml of line/line-openapi): a stateless token from
`POST /oauth2/v3/token` with the channel ID and secret, 15 minutes, not revocable; a v2.1 token
from `POST /oauth2/v2.1/token` with an assertion signed RS256 by the channel's assertion signing
key, `token_exp` seconds (at most 30 days), revoked by `POST /oauth2/v2.1/revoke` with the channel
ID and secret.
"""
from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
AUDIENCE = "https://api.line.me/"
ASSERTION_LIFETIME_S = 5 * 60       # LINE takes up to 30 minutes; the assertion is used at once
FORM = "application/x-www-form-urlencoded"


class TokenSourceError(Exception):
    """The token source cannot work as configured (a key that is not a JWK, no crypto library);
    the message names the setting, never a secret's value."""


@dataclass(frozen=True)
class FormRequest:
    """A POST of a URL-encoded form to the API base."""
    path: str
    form: dict[str, str]


@dataclass(frozen=True)
class Issued:
    """A token LINE issued: the token and its lifetime in seconds."""
    token: str
    expires_in: float

    def __repr__(self) -> str:   # never shows the token
        return f"Issued(expires_in={self.expires_in})"


def issued_from(status: int, body) -> Issued:
    """The token of an issuing answer; ValueError naming LINE's error (never a token)."""
    if status != 200:
        error = body if isinstance(body, dict) else {}
        described = error.get("error_description") or error.get("message") or ""
        raise ValueError(f"HTTP {status} {error.get('error', '')} {described}".strip())
    token, expires_in = (body or {}).get("access_token"), (body or {}).get("expires_in")
    if not isinstance(token, str) or not token or not isinstance(expires_in, (int, float)) or expires_in <= 0:
        raise ValueError("the answer has no access_token and positive expires_in")
    return Issued(token, float(expires_in))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_int(text) -> int:
    if not isinstance(text, str) or not text:
        raise ValueError
    return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")


class AssertionSigner:
    """Signs JWT assertions (RS256) with the channel's private JWK; `cryptography` does the RSA
    (the `tokens` extra: only token_source = v2.1 needs it)."""

    def __init__(self, private_jwk_text: str, kid: str, channel_id: str):
        try:
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.asymmetric import padding, rsa
        except ImportError:
            raise TokenSourceError("token_source=v2.1 signs with the cryptography package: "
                                   "pip install 'frontdesk[tokens]'") from None
        try:
            jwk = json.loads(private_jwk_text)
            if not isinstance(jwk, dict) or jwk.get("kty") != "RSA":
                raise ValueError
            n, e, d, p, q, dp, dq, qi = (_b64url_int(jwk.get(name))
                                         for name in ("n", "e", "d", "p", "q", "dp", "dq", "qi"))
            self._key = rsa.RSAPrivateNumbers(p, q, d, dp, dq, qi, rsa.RSAPublicNumbers(e, n)).private_key()
        except (ValueError, TypeError):
            raise TokenSourceError("channel_private_key is not an RSA private key as a JWK (JSON with kty RSA, "
                                   "n, e, d, p, q, dp, dq, qi): LINE Developers Console, \"Assertion Signing "
                                   "Key\"") from None
        self._padding, self._hash = padding.PKCS1v15(), hashes.SHA256()
        self.kid, self.channel_id = kid, channel_id

    def assertion(self, now: float, token_exp: int | None = None) -> str:
        header = {"alg": "RS256", "typ": "JWT", "kid": self.kid}
        payload = {"iss": self.channel_id, "sub": self.channel_id, "aud": AUDIENCE,
                   "exp": int(now) + ASSERTION_LIFETIME_S}
        if token_exp is not None:
            payload["token_exp"] = token_exp
        signing_input = ".".join(_b64url(json.dumps(part, separators=(",", ":")).encode())
                                 for part in (header, payload))
        signature = self._key.sign(signing_input.encode("ascii"), self._padding, self._hash)
        return f"{signing_input}.{_b64url(signature)}"


class TokenSource:
    """How tokens are issued and revoked for one `token_source`; `renewable` is False for `fixed`."""

    def __init__(self, settings, clock=time.time):
        self.kind = settings.token_source
        self.renewable = self.kind != "fixed"
        self.revocable = self.kind == "v2.1"          # LINE cannot revoke a stateless token
        self.fixed_token = settings.channel_access_token if self.kind == "fixed" else ""
        self._channel_id, self._secret = settings.channel_id, settings.channel_secret
        self._lifetime = settings.token_lifetime_s
        self._clock = clock
        self._signer = (AssertionSigner(settings.channel_private_key, settings.channel_key_id, settings.channel_id)
                        if self.kind == "v2.1" else None)

    def issue(self) -> FormRequest:
        if self.kind == "stateless":
            return FormRequest("/oauth2/v3/token", {"grant_type": "client_credentials",
                                                    "client_id": self._channel_id, "client_secret": self._secret})
        if self._signer is None:
            raise TokenSourceError("token_source=fixed issues no token")
        return FormRequest("/oauth2/v2.1/token", {
            "grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self._signer.assertion(self._clock(), token_exp=self._lifetime)})

    def revoke(self, token: str) -> FormRequest | None:
        """The revoking request, or None where LINE has none (stateless; fixed is not ours)."""
        if not self.revocable:
            return None
        return FormRequest("/oauth2/v2.1/revoke", {"client_id": self._channel_id, "client_secret": self._secret,
                                                   "access_token": token})
