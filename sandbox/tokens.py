"""LINE's channel access token API (`channel-access-token.yml` of line/line-openapi): issue, verify
and revoke tokens and list the v2.1 key ids, with LINE's checks and LINE's error bodies
(`{"error", "error_description"}`), so that a bot's token renewal runs offline. Every token
issued here is accepted by the sandbox's Messaging API routes until it expires or is revoked
(app.ApiMiddleware asks `ChannelTokens.accepts`), besides the channel's fixed token.

- stateless (`POST /oauth2/v3/token`, from the channel ID and secret or a JWT assertion): 15
  minutes, cannot be revoked; nothing is kept: the token is a JWS sealed (HS256) with a key
  derived from the channel secret.
- v2.1 (`POST /oauth2/v2.1/token`, from a JWT assertion): `token_exp` seconds, at most 30 days;
  at most 30 valid at once; its key id is kept until it expires or is revoked.
- short-lived (`POST /v2/oauth/accessToken`, from the channel ID and secret): 30 days; a 31st
  revokes the oldest.
- long-lived (the LINE Developers Console; here `channel_access_token`, or the dev token): until
  revoked.

A JWT assertion (RFC 7523) is what LINE's "Generate a JWT" describes: header `alg` RS256, `typ`
JWT, `kid` of a public key the channel registered (here: `POST /sandbox/channel/keys`); payload
`iss` = `sub` = the channel ID, `aud` `https://api.line.me/`, `exp` at most 30 minutes ahead, and
for a v2.1 token `token_exp`, the token's lifetime in seconds (at most 30 days). Error
descriptions are LINE's where its reference publishes one ("Invalid exp", "iss and clientId of
key do not match", "The access token expired", ...), plain words naming the problem elsewhere.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import threading
import time
import uuid

import falcon

from .api import Endpoint, LineError, read_json, send_json
from .jws import CompactJws, JwsError, RsaPublicKey, b64url_encode, seal, unseal

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
AUDIENCE = "https://api.line.me/"
STATELESS_LIFETIME_S = 15 * 60
SHORT_LIVED_LIFETIME_S = 30 * 86400
LONG_LIVED_LIFETIME_S = 100 * 365 * 86400   # LINE's verify answers ~99 years for a long-lived token
MAX_ASSERTION_LIFETIME_S = 30 * 60
MAX_TOKEN_EXP_S = 30 * 86400
MAX_V21_TOKENS = 30
MAX_SHORT_LIVED_TOKENS = 30
MAX_REMEMBERED = 100       # issued tokens /sandbox/channel/tokens lists (tests look for them in logs)
V21_SCOPE = "profile chat_message.write"   # what LINE's verify answers carry
V2_SCOPE = "P CM"
NO_KEY = "Cannot find channel key that satisfies the conditions"
TOO_MANY = "The maximum number of access tokens has already been issued"
MISSING = "some parameters missed or invalid"
_OPAQUE = re.compile(r"[A-Za-z0-9+/]+={0,2}")   # a short- or long-lived token: standard base64


class OAuthError(LineError):
    """An error of the token API, in LINE's OAuth shape: {"error": ..., "error_description": ...}."""

    def __init__(self, status: int, error: str, description: str | None = None):
        super().__init__(status, description or error)
        self.error, self.description = error, description

    def body(self) -> dict:
        return {"error": self.error, **({"error_description": self.description} if self.description else {})}


class ChannelTokens:
    """The channel's tokens and its registered assertion signing keys; thread-safe."""

    def __init__(self, channel_id: str, channel_secret: str, long_lived_token: str, clock=time.time,
                 stateless_lifetime_s: int = STATELESS_LIFETIME_S):
        self.channel_id = channel_id
        self.stateless_lifetime_s = stateless_lifetime_s
        self._secret = channel_secret
        self._seal_key = hmac.new(channel_secret.encode(), b"frontdesk sandbox channel access tokens",
                                  hashlib.sha256).digest()
        self.long_lived_token = long_lived_token
        self.long_lived_revoked = False
        self._clock = clock
        self._lock = threading.Lock()
        self.keys: dict[str, RsaPublicKey] = {}         # assertion signing keys by kid
        self._v21: dict[str, float] = {}                 # key id -> expires at (epoch s)
        self._short_lived: dict[str, float] = {}         # token -> expires at, oldest first
        self.issued: list[str] = []                      # the last MAX_REMEMBERED tokens issued, oldest first

    # --- the assertion signing keys (the console's "Register a public key")
    def register_key(self, jwk) -> str:
        """The kid of a newly registered public key; JwsError naming the rule it breaks."""
        key = RsaPublicKey.from_jwk(jwk)
        kid = str(uuid.uuid4())
        with self._lock:
            self.keys[kid] = key
        return kid

    def registered_kids(self) -> list[str]:
        with self._lock:
            return sorted(self.keys)

    # --- the Messaging API's check
    def accepts(self, token: str) -> bool:
        """Whether a bearer token other than the fixed one opens the Messaging API now."""
        now = self._clock()
        with self._lock:
            expires = self._short_lived.get(token)
        if expires is not None:
            return now < expires
        try:
            return self._live_claims(unseal(self._seal_key, token), now) is not None
        except JwsError:
            return False

    def _live_claims(self, claims: dict, now: float) -> dict | None:
        """The claims of a sealed token that is neither expired nor revoked, else None."""
        if claims.get("client_id") != self.channel_id or not now < claims.get("exp", 0):
            return None
        if claims.get("ver") == "2.1":
            with self._lock:
                return claims if claims.get("key_id") in self._v21 else None
        return claims

    # --- issuing
    def issue_stateless(self) -> dict:
        now = self._clock()
        token = seal(self._seal_key, {"ver": "3", "client_id": self.channel_id,
                                      "exp": now + self.stateless_lifetime_s, "jti": os.urandom(8).hex()})
        self._remember(token)
        return {"token_type": "Bearer", "access_token": token, "expires_in": self.stateless_lifetime_s}

    def issue_v21(self, token_exp: int) -> dict:
        now = self._clock()
        with self._lock:
            self._v21 = {key_id: expires for key_id, expires in self._v21.items() if expires > now}
            if len(self._v21) >= MAX_V21_TOKENS:
                raise LineError(400, TOO_MANY)
            key_id = b64url_encode(os.urandom(16))
            self._v21[key_id] = now + token_exp
        token = seal(self._seal_key, {"ver": "2.1", "client_id": self.channel_id, "exp": now + token_exp,
                                      "key_id": key_id})
        self._remember(token)
        return {"access_token": token, "token_type": "Bearer", "expires_in": token_exp, "key_id": key_id}

    def issue_short_lived(self) -> dict:
        now = self._clock()
        token = base64.b64encode(os.urandom(129)).decode("ascii")   # 172 characters, + and / included, as LINE's
        with self._lock:
            self._short_lived = {t: expires for t, expires in self._short_lived.items() if expires > now}
            while len(self._short_lived) >= MAX_SHORT_LIVED_TOKENS:   # LINE revokes the oldest
                del self._short_lived[next(iter(self._short_lived))]
            self._short_lived[token] = now + SHORT_LIVED_LIFETIME_S
        self._remember(token)
        return {"access_token": token, "expires_in": SHORT_LIVED_LIFETIME_S, "token_type": "Bearer"}

    def _remember(self, token: str) -> None:
        with self._lock:
            self.issued.append(token)
            del self.issued[:-MAX_REMEMBERED]

    def recent(self) -> list[str]:
        """The tokens issued lately, oldest first."""
        with self._lock:
            return list(self.issued)

    def valid_key_ids(self) -> list[str]:
        now = self._clock()
        with self._lock:
            return [key_id for key_id, expires in self._v21.items() if expires > now]

    # --- verifying and revoking
    def verify_v21(self, token: str) -> dict:
        """GET /oauth2/v2.1/verify: a v2.1 token (a stateless one answers too: it is a JWS)."""
        claims = self._sealed_claims(token)
        now = self._clock()
        if claims.get("client_id") == self.channel_id and not now < claims.get("exp", 0):
            raise OAuthError(400, "invalid_request", "The access token expired")
        if self._live_claims(claims, now) is None:
            raise OAuthError(400, "invalid_request", "The access token invalid")
        return {"client_id": self.channel_id, "expires_in": int(claims["exp"] - now), "scope": V21_SCOPE}

    def verify_v2(self, token: str) -> dict:
        """POST /v2/oauth/verify: a short-lived or long-lived token."""
        now = self._clock()
        if token == self.long_lived_token and not self.long_lived_revoked:
            return {"client_id": self.channel_id, "expires_in": LONG_LIVED_LIFETIME_S, "scope": V2_SCOPE}
        if not _OPAQUE.fullmatch(token):
            raise OAuthError(400, "invalid_request", "access_token in invalid format")
        with self._lock:
            expires = self._short_lived.get(token)
        if expires is None:
            raise OAuthError(400, "invalid_request", "access_token invalid")
        if expires <= now:
            raise OAuthError(400, "invalid_request", "access_token expired")
        return {"client_id": self.channel_id, "expires_in": int(expires - now), "scope": V2_SCOPE}

    def revoke_v21(self, token: str) -> None:
        """An unknown, expired or stateless token is no error (LINE: "No error occurs if an
        invalid channel access token is specified")."""
        claims = self._sealed_claims(token, malformed="The access token malformed")
        with self._lock:
            if claims.get("ver") == "2.1":
                self._v21.pop(claims.get("key_id"), None)

    def revoke_v2(self, token: str) -> None:
        if token == self.long_lived_token:
            self.long_lived_revoked = True
            return
        if not _OPAQUE.fullmatch(token):
            raise OAuthError(400, "invalid_request")
        with self._lock:
            self._short_lived.pop(token, None)

    def _sealed_claims(self, token: str, malformed: str = "The access token invalid") -> dict:
        if not token or token.count(".") != 2:
            raise OAuthError(400, "invalid_request", "The access token not JWS")
        try:
            return unseal(self._seal_key, token)
        except JwsError:
            raise OAuthError(400, "invalid_request", malformed) from None

    # --- credentials in a request
    def wrong_credential(self, client_id: str, client_secret: str) -> str | None:
        """"client_id" or "client_secret", whichever is not the channel's (the ID first); None
        when both are."""
        if client_id != self.channel_id:
            return "client_id"
        if not hmac.compare_digest(client_secret.encode(), self._secret.encode()):
            return "client_secret"
        return None

    def check_assertion(self, assertion: str, wants_token_exp: bool) -> dict:
        """The payload of a valid JWT assertion; OAuthError (or LINE's 404 for an unknown key) naming
        what is wrong."""
        try:
            jws = CompactJws(assertion)
        except JwsError as exc:
            raise OAuthError(400, "invalid_request", f"client_assertion: {exc}") from None
        if jws.header.get("alg") != "RS256":
            raise OAuthError(400, "invalid_client", "Invalid alg (must be RS256)")
        if jws.header.get("typ") != "JWT":
            raise OAuthError(400, "invalid_client", "Invalid typ (must be JWT)")
        with self._lock:
            key = self.keys.get(jws.header.get("kid"))
        if key is None:
            raise LineError(404, NO_KEY)
        if not key.verifies(jws):
            raise OAuthError(400, "invalid_client", "Invalid signature")
        claims, now = jws.payload, self._clock()
        if claims.get("iss") != self.channel_id:
            raise OAuthError(400, "invalid_client", "iss and clientId of key do not match")
        if claims.get("sub") != claims["iss"]:
            raise OAuthError(400, "invalid_client", "Invalid sub (must equal iss, the channel ID)")
        if claims.get("aud") != AUDIENCE:
            raise OAuthError(400, "invalid_client", f"Invalid aud (must be {AUDIENCE})")
        exp = claims.get("exp")
        if not _is_number(exp) or not now < exp <= now + MAX_ASSERTION_LIFETIME_S:
            raise OAuthError(400, "invalid_client", "Invalid exp")
        if wants_token_exp:
            token_exp = claims.get("token_exp")
            if not _is_number(token_exp) or token_exp != int(token_exp) or not 0 < token_exp <= MAX_TOKEN_EXP_S:
                raise OAuthError(400, "invalid_client", f"Invalid token_exp (whole seconds, 1 to {MAX_TOKEN_EXP_S})")
        return claims


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_form(req: falcon.Request) -> dict:
    """An application/x-www-form-urlencoded body, as every issuing and revoking route takes it."""
    if not (req.content_type or "").lower().startswith("application/x-www-form-urlencoded"):
        raise OAuthError(400, "invalid_request", "Content-Type must be application/x-www-form-urlencoded")
    try:
        return req.get_media()
    except falcon.MediaMalformedError:
        raise OAuthError(400, "invalid_request", "the body is not a valid URL-encoded form") from None


def _fields(values: dict, *names: str) -> list[str]:
    """The named fields (each given once, not empty); else LINE's "some parameters missed or invalid"."""
    found = [values.get(name) for name in names]
    if not all(isinstance(value, str) and value for value in found):
        missing = [name for name, value in zip(names, found) if not isinstance(value, str) or not value]
        raise OAuthError(400, "invalid_request", f"{MISSING}: {', '.join(missing)}")
    return found


def _grant(values: dict) -> None:
    if values.get("grant_type") != "client_credentials":
        raise OAuthError(400, "invalid_request", f"{MISSING}: grant_type must be client_credentials")


def _check_client(tokens: ChannelTokens, client_id: str, client_secret: str) -> None:
    """The channel's ID and secret, or LINE's invalid_client naming the wrong one."""
    wrong = tokens.wrong_credential(client_id, client_secret)
    if wrong:
        raise OAuthError(400, "invalid_client", f"invalid {wrong}")


def _assertion(values: dict) -> str:
    assertion_type, assertion = _fields(values, "client_assertion_type", "client_assertion")
    if assertion_type != ASSERTION_TYPE:
        raise OAuthError(400, "invalid_request", f"{MISSING}: client_assertion_type must be {ASSERTION_TYPE}")
    return assertion


class TokenEndpoint(Endpoint):
    """The token API takes credentials in the request, never a bearer token."""
    authenticated = False


class StatelessToken(TokenEndpoint):
    """POST /oauth2/v3/token: by channel ID and secret, or by a JWT assertion."""

    def on_post(self, req, resp):
        values = read_form(req)
        _grant(values)
        tokens = self.state.tokens
        if values.get("client_assertion") or values.get("client_assertion_type"):   # not just sent empty
            tokens.check_assertion(_assertion(values), wants_token_exp=False)
        else:
            if tokens.wrong_credential(*_fields(values, "client_id", "client_secret")):
                raise OAuthError(400, "invalid_request", "Invalid 'client_credentials'.")
        send_json(resp, 200, tokens.issue_stateless())


class TokenV21(TokenEndpoint):
    """POST /oauth2/v2.1/token."""

    def on_post(self, req, resp):
        values = read_form(req)
        _grant(values)
        claims = self.state.tokens.check_assertion(_assertion(values), wants_token_exp=True)
        send_json(resp, 200, self.state.tokens.issue_v21(int(claims["token_exp"])))


class VerifyV21(TokenEndpoint):
    """GET /oauth2/v2.1/verify?access_token=..."""

    def on_get(self, req, resp):
        send_json(resp, 200, self.state.tokens.verify_v21(req.get_param("access_token") or ""))


class KeyIds(TokenEndpoint):
    """GET /oauth2/v2.1/tokens/kid?client_assertion_type=...&client_assertion=..."""

    def on_get(self, req, resp):
        values = {name: req.get_param(name) for name in ("client_assertion_type", "client_assertion")}
        self.state.tokens.check_assertion(_assertion(values), wants_token_exp=False)
        send_json(resp, 200, {"kids": self.state.tokens.valid_key_ids()})


class RevokeV21(TokenEndpoint):
    """POST /oauth2/v2.1/revoke (client_id, client_secret, access_token)."""

    def on_post(self, req, resp):
        client_id, client_secret, token = _fields(read_form(req), "client_id", "client_secret", "access_token")
        _check_client(self.state.tokens, client_id, client_secret)
        self.state.tokens.revoke_v21(token)
        resp.status, resp.data = 200, b""


class ShortLivedToken(TokenEndpoint):
    """POST /v2/oauth/accessToken."""

    def on_post(self, req, resp):
        values = read_form(req)
        _grant(values)
        _check_client(self.state.tokens, *_fields(values, "client_id", "client_secret"))
        send_json(resp, 200, self.state.tokens.issue_short_lived())


class VerifyV2(TokenEndpoint):
    """POST /v2/oauth/verify (a short-lived or long-lived token)."""

    def on_post(self, req, resp):
        values = read_form(req)
        token = values.get("access_token")
        if not isinstance(token, str) or not token:
            raise OAuthError(400, "invalid_request", "access_token in invalid format")
        send_json(resp, 200, self.state.tokens.verify_v2(token))


class RevokeV2(TokenEndpoint):
    """POST /v2/oauth/revoke (a short-lived or long-lived token)."""

    def on_post(self, req, resp):
        token = read_form(req).get("access_token")
        if not isinstance(token, str) or not token:
            raise OAuthError(400, "invalid_request")
        self.state.tokens.revoke_v2(token)
        resp.status, resp.data = 200, b""


class AssertionKeys:
    """POST /sandbox/channel/keys: register an assertion signing key's public JWK (what the LINE
    Developers Console's "Register a public key" does); answers its kid."""

    def __init__(self, state):
        self.state = state

    def on_post(self, req, resp):
        try:
            kid = self.state.tokens.register_key(read_json(req))
        except JwsError as exc:
            raise LineError(400, f"Invalid public key: {exc}") from None
        send_json(resp, 200, {"kid": kid})


class IssuedTokens:
    """GET /sandbox/channel/tokens: the tokens issued lately, each with whether it opens the API
    now: what a test looks for where no token may be (logs, environments, the store)."""

    def __init__(self, state):
        self.state = state

    def on_get(self, req, resp):
        tokens = self.state.tokens
        send_json(resp, 200, {"tokens": [{"access_token": token, "valid": tokens.accepts(token)}
                                         for token in tokens.recent()]})


ROUTES = {
    "/oauth2/v3/token": StatelessToken,
    "/oauth2/v2.1/token": TokenV21,
    "/oauth2/v2.1/verify": VerifyV21,
    "/oauth2/v2.1/tokens/kid": KeyIds,
    "/oauth2/v2.1/revoke": RevokeV21,
    "/v2/oauth/accessToken": ShortLivedToken,
    "/v2/oauth/verify": VerifyV2,
    "/v2/oauth/revoke": RevokeV2,
}
"""The token API's paths (api.line.me) -> their resources."""
CONTROL_ROUTES = {"/sandbox/channel/keys": AssertionKeys, "/sandbox/channel/tokens": IssuedTokens}
