"""The channel access token the rate limiter calls LINE with: fixed, or issued, renewed and revoked
here (docs/tokens.md). The rate limiter is the only process that ever holds an issued token: it is
in no environment, no log line, no store record and no answer to a handler.

An issued token is renewed at 80 % of its life (a stateless token of 15 minutes after 12; a v2.1
token of 30 days after 24). When LINE's token API fails the old token is kept while it is valid
and the issue retried after 1 s, doubling to 60 s. A 401 from the Messaging API while a renewable
token is in use asks for a new one at once; a refusal of the token that asking got waits
`REFUSED_RENEW_GAP_S` after it (LINE refusing every token must not make a loop). A clean stop
revokes a v2.1 token; a stateless one cannot be revoked and lives out its 15 minutes.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from urllib.parse import urlencode

from frontdesk.protocol.backoff import doubling_delay

from .http import ApiConnectionError, HttpConnection
from .token_api import FORM, FormRequest, Issued, TokenSource, issued_from

log = logging.getLogger("frontdesk.ratelimiter.tokens")

RENEW_AT_SHARE = 0.8          # of a token's life: renewed then
RETRY_FIRST_S = 1.0           # a failed issue is tried again after this, doubling
RETRY_MAX_S = 60.0
REFUSED_RENEW_GAP_S = 5.0     # a 401 renews at once, unless a 401 renewed one this recently


class RenewalSchedule:
    """When to ask for the next token (times on one monotonic clock, in seconds); no I/O."""

    def __init__(self):
        self.expires_at: float | None = None
        self.refusal_renewed_at: float | None = None   # when a 401 last asked for a new token
        self.failures = 0            # failed issues in a row

    def issued(self, now: float, expires_in: float) -> float:
        """A token came: when to renew it."""
        self.expires_at, self.failures = now + expires_in, 0
        return now + RENEW_AT_SHARE * expires_in

    def failed(self, now: float) -> float:
        """An issue failed: when to try again."""
        self.failures += 1
        return now + doubling_delay(RETRY_FIRST_S, self.failures, RETRY_MAX_S)

    def valid(self, now: float) -> bool:
        return self.expires_at is not None and now < self.expires_at

    def renew_on_refusal(self, now: float) -> bool:
        """LINE refused the token (401): renew now (a token revoked in LINE's console is replaced
        at once), unless a refusal asked for one moments ago (LINE refuses every token: no loop)."""
        if self.refusal_renewed_at is not None and now - self.refusal_renewed_at < REFUSED_RENEW_GAP_S:
            return False
        self.refusal_renewed_at = now
        return True


class TokenKeeper:
    """Holds `authorization` ("Bearer …") for every sender; for a renewable source keeps it fresh
    on one task of the event loop, over a connection of its own to the API base."""

    def __init__(self, settings, source: TokenSource | None = None, clock=time.monotonic):
        self.source = source or TokenSource(settings)
        self.authorization: str | None = f"Bearer {self.source.fixed_token}" if not self.source.renewable else None
        self.schedule = RenewalSchedule()
        self.renewals = 0            # tokens issued
        self.failures = 0            # issues that failed
        self._token = ""
        self._clock = clock
        self._settings = settings
        self._ready: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._connection: HttpConnection | None = None
        self._expired_logged = False

    def __repr__(self) -> str:   # never shows the token
        return f"TokenKeeper({self.source.kind})"

    # --- the senders' side
    async def wait(self) -> str:
        """The authorization header's value, once the first token is in."""
        while self.authorization is None:
            await self._ready.wait()
        return self.authorization

    def refused(self, authorization: str) -> None:
        """LINE answered 401 to a call made with `authorization`."""
        if (self.source.renewable and authorization == self.authorization and self._wake is not None
                and self.schedule.renew_on_refusal(self._clock())):
            log.warning("event=token_refused source=%s action=renew_now", self.source.kind)
            self._wake.set()

    # --- life
    def start(self) -> None:
        """On the event loop: the first issue starts now (senders wait for it)."""
        if not self.source.renewable:
            return
        self._ready, self._wake = asyncio.Event(), asyncio.Event()
        self._connection = HttpConnection(self._settings.api_base, {"User-Agent": "frontdesk"},
                                          self._settings.api_connect_timeout_s, self._settings.api_read_timeout_s)
        self._task = asyncio.get_running_loop().create_task(self._keep())

    async def close(self) -> None:
        """A clean stop: no more renewals; a revocable token is revoked."""
        if self._task is None:
            return
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        request = self.source.revoke(self._token) if self._token else None
        if request is not None:
            try:
                status, _ = await self._post(request)
                log.info("event=token_revoked source=%s status=%d", self.source.kind, status)
            except ApiConnectionError as exc:
                log.warning("event=token_revoke_failed source=%s reason=%r", self.source.kind, str(exc))
        elif self._token:
            left = (self.schedule.expires_at or 0) - self._clock()
            log.info("event=token_not_revoked source=%s reason=LINE_cannot_revoke_it expires_in_s=%.0f",
                     self.source.kind, max(left, 0))
        self._connection.close()

    async def _keep(self) -> None:
        while True:
            try:
                issued = await self._issue()
            except (ApiConnectionError, ValueError) as exc:
                now = self._clock()
                self.failures += 1
                at = self.schedule.failed(now)
                log.warning("event=token_issue_failed source=%s reason=%r retry_in_s=%.1f old_token_valid=%s",
                            self.source.kind, str(exc), at - now, self.schedule.valid(now))
                if self._token and not self.schedule.valid(now) and not self._expired_logged:
                    self._expired_logged = True
                    log.error("event=token_expired source=%s effect=LINE_answers_401", self.source.kind)
            else:
                now = self._clock()
                at = self.schedule.issued(now, issued.expires_in)
                self._token, self.authorization = issued.token, f"Bearer {issued.token}"
                self.renewals += 1
                self._expired_logged = False
                self._ready.set()
                log.info("event=token_issued source=%s expires_in_s=%.0f renew_in_s=%.0f",
                         self.source.kind, issued.expires_in, at - now)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), max(at - self._clock(), 0))
            except asyncio.TimeoutError:
                pass

    async def _issue(self) -> Issued:
        status, body = await self._post(self.source.issue())
        return issued_from(status, body)

    async def _post(self, request: FormRequest) -> tuple[int, object]:
        status, _, data = await self._connection.request(
            "POST", request.path, {"Content-Type": FORM}, urlencode(request.form).encode("ascii"))
        try:
            return status, json.loads(data) if data else {}
        except ValueError:
            return status, {}

    def stats(self) -> dict:
        left = None if self.schedule.expires_at is None else round(self.schedule.expires_at - self._clock())
        return {"source": self.source.kind, "issued": self.renewals, "issue_failures": self.failures,
                "expires_in_s": left}
