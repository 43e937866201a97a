"""The sandbox's channel access token API in-process: assertions signed by `cryptography` and
checked by the sandbox's own RS256 code, each of LINE's rules on an assertion, tokens that expire
on a clock the test moves, LINE's limits on how many tokens live at once."""
from __future__ import annotations

import pytest

from frontdesk.sandbox.jws import CompactJws, JwsError, RsaPublicKey, b64url_decode, b64url_encode, seal, unseal
from frontdesk.sandbox.tokens import (MAX_SHORT_LIVED_TOKENS, MAX_V21_TOKENS, NO_KEY, STATELESS_LIFETIME_S, TOO_MANY,
                                      ChannelTokens, OAuthError)
from frontdesk.sandbox.api import LineError
from tests.assertions import assertion, new_private_key, public_jwk, signed
from tests.unit.clock import Clock

EPOCH = 1_800_000_000.0   # the injected clock's start
CHANNEL = "1234567890"
SECRET = "unit-test-secret"
FIXED = "fixed-long-lived-token"


@pytest.fixture(scope="module")
def key():
    return new_private_key()


@pytest.fixture
def clock():
    return Clock(EPOCH)


@pytest.fixture
def tokens(key, clock):
    return ChannelTokens(CHANNEL, SECRET, FIXED, clock=clock)


@pytest.fixture
def kid(tokens, key):
    return tokens.register_key(public_jwk(key))


# --- RS256, checked by the sandbox's own code against cryptography's signatures

def test_an_rs256_signature_by_cryptography_verifies_and_any_change_breaks_it(key):
    public = RsaPublicKey.from_jwk(public_jwk(key))
    token = signed(key, {"alg": "RS256"}, {"iss": CHANNEL})
    assert public.verifies(CompactJws(token))
    head, payload, signature = token.split(".")
    other_payload = b64url_encode(b'{"iss":"9999999999"}')
    assert not public.verifies(CompactJws(f"{head}.{other_payload}.{signature}"))
    flipped = bytearray(b64url_decode(signature))
    flipped[-1] ^= 1
    assert not public.verifies(CompactJws(f"{head}.{payload}.{b64url_encode(bytes(flipped))}"))
    assert not public.verifies(CompactJws(f"{head}.{payload}.{b64url_encode(b'short')}"))
    by_another_key = signed(new_private_key(), {"alg": "RS256"}, {"iss": CHANNEL})
    assert not public.verifies(CompactJws(by_another_key))


@pytest.mark.parametrize("change, complaint", [
    ({"kty": "EC"}, 'kty must be "RSA"'),
    ({"alg": "RS512"}, 'alg must be "RS256"'),
    ({"use": "enc"}, "for signatures"),
    ({"kid": "mine"}, "no kid"),
    ({"d": "AQAB"}, "private key"),
    ({"n": "not base64!"}, "n and e must be"),
])
def test_a_public_key_is_refused_naming_the_rule_it_breaks(key, change, complaint):
    with pytest.raises(JwsError, match=complaint):
        RsaPublicKey.from_jwk({**public_jwk(key), **change})


def test_a_public_key_must_be_2048_bit_and_key_ops_verify_serves_as_use_sig(key):
    small = {**public_jwk(new_private_key(1024))}
    with pytest.raises(JwsError, match="2048-bit"):
        RsaPublicKey.from_jwk(small)
    jwk = public_jwk(key)
    del jwk["use"]
    assert RsaPublicKey.from_jwk({**jwk, "key_ops": ["verify"]}).e == 65537


def test_a_sealed_token_opens_only_under_its_key():
    token = seal(b"k1", {"exp": 5})
    assert unseal(b"k1", token) == {"exp": 5}
    for wrong in (lambda: unseal(b"k2", token), lambda: unseal(b"k1", token + "x"),
                  lambda: unseal(b"k1", "a.b"), lambda: unseal(b"k1", "e30.e30.=")):
        with pytest.raises(JwsError):
            wrong()


# --- the assertion, rule by rule

def _refusal(tokens, text, wants_token_exp=True):
    with pytest.raises(LineError) as refused:
        tokens.check_assertion(text, wants_token_exp)
    return refused.value.status, refused.value.body()


def test_a_valid_assertion_passes(tokens, key, kid, clock):
    claims = tokens.check_assertion(assertion(key, kid, CHANNEL, token_exp=86400, now=clock.now), True)
    assert claims["token_exp"] == 86400


@pytest.mark.parametrize("header, claims, description", [
    ({"alg": "HS256"}, {}, "Invalid alg (must be RS256)"),
    ({"typ": "JWS"}, {}, "Invalid typ (must be JWT)"),
    ({}, {"iss": "9999999999", "sub": "9999999999"}, "iss and clientId of key do not match"),
    ({}, {"sub": "9999999999"}, "Invalid sub (must equal iss, the channel ID)"),
    ({}, {"aud": "https://api.line.me"}, "Invalid aud (must be https://api.line.me/)"),
    ({}, {"exp": None}, "Invalid exp"),
    ({}, {"exp": "soon"}, "Invalid exp"),
    ({}, {"token_exp": 30 * 86400 + 1}, "Invalid token_exp (whole seconds, 1 to 2592000)"),
    ({}, {"token_exp": 0}, "Invalid token_exp (whole seconds, 1 to 2592000)"),
    ({}, {"token_exp": None}, "Invalid token_exp (whole seconds, 1 to 2592000)"),
])
def test_each_broken_rule_is_lines_400_naming_it(tokens, key, kid, clock, header, claims, description):
    text = assertion(key, kid, CHANNEL, now=clock.now, header=header, **{"token_exp": 86400, **claims})
    assert _refusal(tokens, text) == (400, {"error": "invalid_client", "error_description": description})


def test_an_assertion_lives_at_most_30_minutes(tokens, key, kid, clock):
    too_long = assertion(key, kid, CHANNEL, token_exp=60, now=clock.now, exp=int(clock.now) + 30 * 60 + 1)
    assert _refusal(tokens, too_long)[1]["error_description"] == "Invalid exp"
    just_right = assertion(key, kid, CHANNEL, token_exp=60, now=clock.now, exp=int(clock.now) + 30 * 60)
    assert tokens.check_assertion(just_right, True)
    clock.now += 30 * 60
    assert _refusal(tokens, just_right)[1]["error_description"] == "Invalid exp"    # expired now


def test_an_unknown_key_is_lines_404_and_a_forged_signature_a_400(tokens, key, kid, clock):
    assert _refusal(tokens, assertion(key, "no-such-kid", CHANNEL, token_exp=60, now=clock.now)) == \
        (404, {"message": NO_KEY})
    forged = assertion(new_private_key(), kid, CHANNEL, token_exp=60, now=clock.now)
    assert _refusal(tokens, forged) == (400, {"error": "invalid_client", "error_description": "Invalid signature"})
    status, body = _refusal(tokens, "not-a-jwt")
    assert status == 400 and body["error"] == "invalid_request" and "not a JWS" in body["error_description"]


def test_the_stateless_issue_needs_no_token_exp(tokens, key, kid, clock):
    assert tokens.check_assertion(assertion(key, kid, CHANNEL, now=clock.now), wants_token_exp=False)


# --- tokens: lifetimes, revocation, limits

def test_a_stateless_token_opens_the_api_for_15_minutes_and_cannot_be_revoked(tokens, clock):
    token = tokens.issue_stateless()["access_token"]
    assert tokens.accepts(token)
    tokens.revoke_v21(token)                       # no error, and no effect: LINE cannot revoke it
    assert tokens.accepts(token)
    clock.now += STATELESS_LIFETIME_S - 1
    assert tokens.accepts(token)
    clock.now += 1
    assert not tokens.accepts(token)
    under_another_secret = ChannelTokens(CHANNEL, "another-secret", FIXED, clock=clock)
    assert not under_another_secret.accepts(tokens.issue_stateless()["access_token"])


def test_a_v21_token_lives_token_exp_seconds_and_dies_when_revoked(tokens, clock):
    issued = tokens.issue_v21(3600)
    token, key_id = issued["access_token"], issued["key_id"]
    assert issued["expires_in"] == 3600 and tokens.valid_key_ids() == [key_id]
    assert tokens.verify_v21(token) == {"client_id": CHANNEL, "expires_in": 3600, "scope": "profile chat_message.write"}
    clock.now += 600
    assert tokens.accepts(token) and tokens.verify_v21(token)["expires_in"] == 3000
    tokens.revoke_v21(token)
    assert not tokens.accepts(token) and tokens.valid_key_ids() == []
    with pytest.raises(OAuthError, match="The access token invalid"):
        tokens.verify_v21(token)
    expiring = tokens.issue_v21(60)["access_token"]
    clock.now += 60
    assert not tokens.accepts(expiring)
    with pytest.raises(OAuthError, match="The access token expired"):
        tokens.verify_v21(expiring)
    with pytest.raises(OAuthError, match="The access token not JWS"):
        tokens.verify_v21(FIXED)


def test_at_most_30_v21_tokens_live_at_once(tokens, clock):
    for _ in range(MAX_V21_TOKENS - 1):
        tokens.issue_v21(3600)
    tokens.issue_v21(60)
    with pytest.raises(LineError) as refused:
        tokens.issue_v21(3600)
    assert (refused.value.status, refused.value.body()) == (400, {"message": TOO_MANY})
    clock.now += 60                                  # an expired token is not counted
    assert tokens.issue_v21(3600)["expires_in"] == 3600


def test_a_31st_short_lived_token_revokes_the_oldest(tokens):
    first = tokens.issue_short_lived()["access_token"]
    later = [tokens.issue_short_lived()["access_token"] for _ in range(MAX_SHORT_LIVED_TOKENS - 1)]
    assert tokens.accepts(first) and tokens.verify_v2(first)["expires_in"] == 30 * 86400
    newest = tokens.issue_short_lived()["access_token"]
    assert not tokens.accepts(first) and all(map(tokens.accepts, later + [newest]))
    with pytest.raises(OAuthError, match="access_token invalid"):
        tokens.verify_v2(first)
    tokens.revoke_v2(newest)
    assert not tokens.accepts(newest)


def test_the_fixed_token_verifies_as_long_lived_until_revoked(tokens):
    assert tokens.verify_v2(FIXED)["scope"] == "P CM" and tokens.verify_v2(FIXED)["expires_in"] > 90 * 365 * 86400
    tokens.revoke_v2(FIXED)
    assert tokens.long_lived_revoked
    with pytest.raises(OAuthError, match="access_token in invalid format"):   # '-' is no base64
        tokens.verify_v2(FIXED)
    with pytest.raises(OAuthError):
        tokens.revoke_v2("not base64!")


def test_credentials_name_the_wrong_part(tokens):
    assert tokens.wrong_credential(CHANNEL, SECRET) is None
    assert tokens.wrong_credential("1", SECRET) == "client_id"
    assert tokens.wrong_credential(CHANNEL, "nope") == "client_secret"
