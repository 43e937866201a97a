"""When the rate limiter renews its channel access token (ratelimiter/tokens.py RenewalSchedule,
times given, no clock), and what it asks LINE's token API (ratelimiter/token_api.py): the v2.1
assertion checked by the sandbox's own RS256 code, an independent implementation."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from frontdesk.ratelimiter.token_api import AUDIENCE, TokenSource, TokenSourceError, issued_from
from frontdesk.ratelimiter.tokens import REFUSED_RENEW_GAP_S, RenewalSchedule
from frontdesk.sandbox.jws import CompactJws, RsaPublicKey
from tests.assertions import new_private_key, private_jwk, public_jwk


def settings(**changes):
    values = {"token_source": "stateless", "channel_access_token": "", "channel_id": "1600000042",
              "channel_secret": "the-secret", "channel_private_key": "", "channel_key_id": "",
              "token_lifetime_s": 86400}
    return SimpleNamespace(**{**values, **changes})


def test_a_token_is_renewed_at_80_percent_of_its_life():
    schedule = RenewalSchedule()
    assert schedule.issued(now=100.0, expires_in=900) == pytest.approx(820.0)        # stateless: after 12 min
    assert schedule.valid(819.9) and schedule.valid(999.9) and not schedule.valid(1000.0)
    assert schedule.issued(now=0.0, expires_in=30 * 86400) == pytest.approx(24 * 86400)   # v2.1, 30 days


def test_failed_issues_are_retried_after_1_s_doubling_to_60_s_and_a_success_starts_again():
    schedule = RenewalSchedule()
    schedule.issued(now=0.0, expires_in=900)
    retries, now, valid = [], 720.0, []
    for _ in range(9):
        at = schedule.failed(now)
        retries.append(at - now)
        now = at
        valid.append(schedule.valid(now))
    assert retries == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert valid == [True] * 7 + [False] * 2   # the old token is kept while good (until 900)
    schedule.issued(now=901.0, expires_in=900)
    assert schedule.failed(902.0) == pytest.approx(903.0)   # the backoff starts again after a success


def test_a_refused_token_is_renewed_at_once_even_just_after_its_issue_but_not_again_within_a_few_seconds():
    schedule = RenewalSchedule()
    schedule.issued(now=10.0, expires_in=900)
    assert schedule.renew_on_refusal(10.1)             # revoked behind frontdesk's back: at once
    schedule.issued(now=10.2, expires_in=900)
    assert not schedule.renew_on_refusal(10.1 + REFUSED_RENEW_GAP_S - 0.1)   # LINE refuses every token
    assert schedule.renew_on_refusal(10.1 + REFUSED_RENEW_GAP_S)


def test_a_stateless_token_is_asked_for_with_the_channel_id_and_secret_and_cannot_be_revoked():
    source = TokenSource(settings())
    request = source.issue()
    assert request.path == "/oauth2/v3/token" and request.form == {
        "grant_type": "client_credentials", "client_id": "1600000042", "client_secret": "the-secret"}
    assert source.renewable and source.revoke("a-token") is None


def test_a_v21_assertion_is_signed_as_line_checks_it_and_the_token_revoked_with_the_secret():
    key = new_private_key()
    source = TokenSource(settings(token_source="v2.1", channel_private_key=json.dumps(private_jwk(key)),
                                  channel_key_id="the-kid", token_lifetime_s=3600), clock=lambda: 1_000_000.0)
    request = source.issue()
    assert request.path == "/oauth2/v2.1/token" and request.form["client_assertion_type"].endswith("jwt-bearer")
    jws = CompactJws(request.form["client_assertion"])
    assert RsaPublicKey.from_jwk(public_jwk(key)).verifies(jws)
    assert jws.header == {"alg": "RS256", "typ": "JWT", "kid": "the-kid"}
    assert jws.payload == {"iss": "1600000042", "sub": "1600000042", "aud": AUDIENCE, "exp": 1_000_300,
                           "token_exp": 3600}
    assert source.revoke("a-token").form == {"client_id": "1600000042", "client_secret": "the-secret",
                                             "access_token": "a-token"}


@pytest.mark.parametrize("text", ["", "not json", '{"kty": "EC"}', '{"kty": "RSA", "n": "AQAB", "e": "AQAB"}'])
def test_a_private_key_that_is_not_an_rsa_jwk_is_named_without_its_text(text):
    with pytest.raises(TokenSourceError) as refused:
        TokenSource(settings(token_source="v2.1", channel_private_key=text, channel_key_id="kid"))
    assert "channel_private_key is not an RSA private key as a JWK" in str(refused.value)
    assert not text or text not in str(refused.value)


def test_an_answer_without_a_token_is_an_error_naming_lines_words_and_the_token_never_shows():
    with pytest.raises(ValueError, match="HTTP 400 invalid_request Invalid 'client_credentials'."):
        issued_from(400, {"error": "invalid_request", "error_description": "Invalid 'client_credentials'."})
    with pytest.raises(ValueError, match="no access_token"):
        issued_from(200, {"access_token": "x"})
    issued = issued_from(200, {"access_token": "secret-token", "expires_in": 900})
    assert issued.expires_in == 900 and "secret-token" not in repr(issued)
