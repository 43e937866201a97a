"""`frontdesk doctor`: checks a configuration against LINE (or the sandbox) and says what is wrong
and what to do about it.

A channel can look healthy from the server's side and still receive nothing: "Use webhook" off,
the webhook URL pointing at an old tunnel, a token that expired, a month's message limit nearly
spent. Each check asks LINE's own API (the same calls the LINE Developers Console makes) and
ends in one line: `ok`, or `PROBLEM` with what is wrong and the fix. Exit status 0 when every
check passed, 1 when any found a problem, 2 for a configuration it cannot use.

It uses `requests` (an operator command, not the hot path) and never prints a secret: not the
token, not the channel secret, not a store URL's password.
"""
from __future__ import annotations

import contextlib
import email.utils
import time
from dataclasses import dataclass

import requests

from frontdesk.protocol.config import ConfigError
from frontdesk.protocol.token_source import require_token_source
from frontdesk.ratelimiter.token_api import TokenSource, TokenSourceError, issued_from
from frontdesk.store import StoreError, open_store, sqlite_file_missing
from frontdesk.store.mongo import redact_url

from .run import sandbox_settings

TOKEN_RENEW_WITHIN_S = 7 * 86400   # a token that expires sooner is a problem: renew it now
LONG_LIVED_S = 10 * 365 * 86400    # LINE's verify answers ~99 years for a long-lived token
CLOCK_SKEW_LIMIT_S = 5.0           # reply-token ages and JWT assertions' exp are judged by this clock
CONSOLE = "LINE Developers Console, Messaging API tab"
DOCTOR_TOKEN_S = 600                 # token_source = v2.1: the token doctor issues lives this long, and is revoked


@dataclass
class Finding:
    """One line of the report: a check's name, whether it passed, and what it found (for a problem:
    what is wrong and the fix)."""
    check: str
    ok: bool | None   # None: not run (what it needs failed)
    text: str

    def line(self) -> str:
        label = {True: "ok", False: "PROBLEM", None: "skipped"}[self.ok]
        return f"{label:<8} {self.check:<12} {self.text}"


class LineApi:
    """The calls doctor makes, with the configured token, base URL and timeouts."""

    def __init__(self, settings):
        self.base = settings.api_base.rstrip("/")
        self.token = settings.channel_access_token
        self.timeout = (settings.api_connect_timeout_s, min(settings.api_read_timeout_s, 30.0))
        self.session = requests.Session()

    def call(self, method: str, path: str, auth: bool = True, **kwargs) -> requests.Response:
        """Raises requests.RequestException when no answer came."""
        headers = {"Authorization": f"Bearer {self.token}"} if auth else {}
        return self.session.request(method, self.base + path, headers=headers, timeout=self.timeout, **kwargs)

    def verify_token(self) -> requests.Response:
        """LINE's verify endpoint for the token's kind: v2.1 and stateless tokens are JWS (three
        dot-separated parts), short- and long-lived ones are not."""
        if self.token.count(".") == 2:
            return self.call("GET", "/oauth2/v2.1/verify", auth=False, params={"access_token": self.token})
        return self.call("POST", "/v2/oauth/verify", auth=False, data={"access_token": self.token})

    def close(self) -> None:
        self.session.close()


def _message(answer: requests.Response) -> str:
    """What LINE said in an error answer: its message, or its OAuth error_description."""
    try:
        body = answer.json()
    except ValueError:
        return answer.text[:200]
    if not isinstance(body, dict):
        return str(body)[:200]
    return str(body.get("message") or body.get("error_description") or body.get("error") or body)[:200]


def _unreachable(exc: requests.RequestException) -> str:
    """Why no answer came, in the words of the error at the bottom of the chain (requests wraps
    it three deep): "[Errno 111] Connection refused", "timed out", a DNS failure."""
    cause: BaseException = exc
    while (cause.__cause__ or cause.__context__) is not None:
        cause = cause.__cause__ or cause.__context__
    return str(cause) or type(cause).__name__


def days(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.0f} hours"
    return f"{max(seconds, 0) / 60:.0f} minutes"


def check_credentials(line: LineApi) -> tuple[Finding, requests.Response | None, float]:
    """Bot info with the token: (finding, the answer when it was 200, when the request went out
    and came back, averaged)."""
    sent = time.time()
    try:
        answer = line.call("GET", "/v2/bot/info")
    except requests.RequestException as exc:
        return Finding("credentials", False, f"cannot reach {line.base} ({_unreachable(exc)}): check api_base "
                                             "and this machine's network or proxy"), None, 0.0
    midpoint = (sent + time.time()) / 2
    if answer.status_code == 401:
        why = _refusal_reason(line)
        return Finding("credentials", False, f"LINE refuses the channel access token (401{why}): issue a new one "
                                             f"({CONSOLE}) and set LINE_CHANNEL_ACCESS_TOKEN"), None, midpoint
    if answer.status_code != 200:
        return Finding("credentials", False, f"bot info answered {answer.status_code} ({_message(answer)}): "
                                             f"check api_base ({line.base})"), None, midpoint
    bot = answer.json()
    return Finding("credentials", True, f"the token opens the Messaging API of bot {bot.get('displayName')!r} "
                                        f"({bot.get('basicId')})"), answer, midpoint


def _refusal_reason(line: LineApi) -> str:
    """Why a refused token is refused, as LINE's verify endpoint puts it ("The access token
    expired"); empty when it says nothing more."""
    try:
        verified = line.verify_token()
    except requests.RequestException:
        return ""
    return f": {_message(verified)}" if verified.status_code == 400 else ""


def check_token_source(line: LineApi, settings) -> tuple[Finding, TokenSource | None]:
    """token_source stateless or v2.1: a token issued as the rate limiter issues it (a v2.1 one for
    ten minutes), which the other checks then use; (finding, the source when it issued one)."""
    kind = settings.token_source
    try:
        require_token_source(settings)
        source = TokenSource(settings.replace(token_lifetime_s=DOCTOR_TOKEN_S))
        request = source.issue()
        answer = line.call("POST", request.path, auth=False, data=request.form)
        issued = issued_from(answer.status_code, answer.json() if answer.content else {})
    except (ConfigError, TokenSourceError) as exc:
        return Finding("token source", False, f"token_source={kind}: {exc}"), None
    except requests.RequestException as exc:
        return Finding("token source", False, f"cannot reach LINE's token API ({_unreachable(exc)}): check "
                                              "api_base"), None
    except ValueError as exc:
        fix = ("check channel_id and the channel secret" if kind == "stateless" else
               "check channel_id, channel_key_id and that the key's public half is registered (LINE Developers "
               "Console, Basic settings, Assertion Signing Key)")
        return Finding("token source", False, f"LINE issues no {kind} token ({exc}): {fix}"), None
    line.token = issued.token
    return Finding("token source", True, f"a {kind} token issued, for {days(issued.expires_in)} "
                                         "(frontdesk renews its own before expiry)"), source


def check_token(line: LineApi, channel_id: str, renewed: bool = False) -> list[Finding]:
    try:
        answer = line.verify_token()
    except requests.RequestException as exc:
        return [Finding("token", False, f"cannot reach LINE's verify endpoint ({_unreachable(exc)}): check api_base")]
    if answer.status_code != 200:
        return [Finding("token", True, f"the token works, but LINE's verify endpoint does not know it "
                                       f"({_message(answer)}): its expiry is unknown")]
    verified = answer.json()
    findings = []
    if channel_id and str(verified.get("client_id")) != channel_id:
        findings.append(Finding("token", False, f"the token belongs to channel {verified.get('client_id')}, not to "
                                                f"channel_id {channel_id}: use that channel's token, or correct "
                                                "channel_id"))
    expires_in = float(verified.get("expires_in", 0))
    if expires_in < TOKEN_RENEW_WITHIN_S and not renewed:
        findings.append(Finding("token", False, f"the token expires in {days(expires_in)}: issue a new one "
                                                f"({CONSOLE}, or the channel access token API) before then"))
    elif not findings:
        kind = "long-lived, no expiry to speak of" if expires_in > LONG_LIVED_S else f"expires in {days(expires_in)}"
        findings.append(Finding("token", True, f"channel {verified.get('client_id')}, {kind}"))
    return findings


def check_webhook(line: LineApi, public_url: str, test: bool) -> list[Finding]:
    try:
        answer = line.call("GET", "/v2/bot/channel/webhook/endpoint")
    except requests.RequestException as exc:
        return [Finding("webhook", False, f"cannot reach LINE ({_unreachable(exc)}): check api_base")]
    wanted = public_url or "the https URL of your receiver's callback_path"
    if answer.status_code == 404:
        return [Finding("webhook", False, f"the channel has no webhook URL: set it to {wanted} ({CONSOLE}, "
                                          "Webhook URL)")]
    if answer.status_code != 200:
        return [Finding("webhook", False, f"LINE answered {answer.status_code} ({_message(answer)})")]
    endpoint, active = answer.json().get("endpoint"), answer.json().get("active")
    findings = []
    if not active:
        findings.append(Finding("webhook", False, f'"Use webhook" is off, so LINE sends no events to {endpoint}: '
                                                  f'turn it on ({CONSOLE}, Webhook settings)'))
    if not public_url:
        findings.append(Finding("webhook", False, f"public_url is not set, so the webhook URL ({endpoint}) cannot be "
                                                  "checked: set public_url (FRONTDESK_PUBLIC_URL) to the URL LINE "
                                                  "should call"))
    elif endpoint != public_url:
        findings.append(Finding("webhook", False, f"LINE sends webhooks to {endpoint}, not to public_url "
                                                  f"{public_url}: set the Webhook URL to {public_url} ({CONSOLE}), "
                                                  "or correct public_url"))
    if not findings:
        findings.append(Finding("webhook", True, f'{endpoint}, "Use webhook" on'))
    if test:
        findings.append(_test_webhook(line, endpoint))
    return findings


def _test_webhook(line: LineApi, endpoint: str) -> Finding:
    """LINE's "Verify" button: it posts an empty, signed webhook to the endpoint."""
    try:
        answer = line.call("POST", "/v2/bot/channel/webhook/test", json={})
    except requests.RequestException as exc:
        return Finding("webhook test", False, f"cannot reach LINE ({_unreachable(exc)}): check api_base")
    if answer.status_code == 429:
        return Finding("webhook test", False, "LINE allows 60 webhook tests an hour: try again later")
    if answer.status_code != 200:
        return Finding("webhook test", False, f"LINE answered {answer.status_code} ({_message(answer)})")
    result = answer.json()
    if result.get("success"):
        return Finding("webhook test", True, f"LINE's test webhook to {endpoint} got {result.get('statusCode')}")
    return Finding("webhook test", False, f"LINE's test webhook to {endpoint} failed ({result.get('reason')}: "
                                          f"{result.get('detail')}): check that the receiver runs and that this "
                                          "URL reaches it (TLS proxy, firewall, DNS)")


def check_quota(line: LineApi, warning_share: float) -> Finding:
    try:
        quota, used = line.call("GET", "/v2/bot/message/quota"), line.call("GET", "/v2/bot/message/quota/consumption")
    except requests.RequestException as exc:
        return Finding("quota", False, f"cannot reach LINE ({_unreachable(exc)}): check api_base")
    for answer in (quota, used):
        if answer.status_code != 200:
            return Finding("quota", False, f"LINE answered {answer.status_code} ({_message(answer)})")
    usage = int(used.json().get("totalUsage", 0))
    if quota.json().get("type") != "limited":
        return Finding("quota", True, f"no target limit set; {usage:,} messages sent this month")
    limit = int(quota.json().get("value", 0))
    share = usage / limit if limit else 1.0
    text = f"{usage:,} of this month's {limit:,} messages used ({share:.0%})"
    if share >= warning_share:
        return Finding("quota", False, f'{text}: pushes past the limit are refused (429 "You have reached your '
                                       'monthly limit."); raise the target limit in LINE Official Account Manager, '
                                       "or push less (replies are free)")
    return Finding("quota", True, text)


def clock_skew(date_header: str | None, local_midpoint: float) -> float | None:
    """Seconds LINE's clock is ahead of this machine's (negative: behind), from an answer's Date
    header (whole seconds: LINE's time lies within the second it names, so its middle is taken);
    None without a readable header."""
    if not date_header:
        return None
    try:
        line_time = email.utils.parsedate_to_datetime(date_header).timestamp()
    except (TypeError, ValueError):
        return None
    return line_time + 0.5 - local_midpoint


def check_clock(answer: requests.Response, local_midpoint: float) -> Finding:
    skew = clock_skew(answer.headers.get("Date"), local_midpoint)
    if skew is None:
        return Finding("clock", True, "LINE's answer carried no Date header: the skew is unknown")
    if abs(skew) > CLOCK_SKEW_LIMIT_S:
        side = "behind" if skew > 0 else "ahead of"
        return Finding("clock", False, f"this machine's clock is {abs(skew):.0f} s {side} LINE's: reply-token ages "
                                       "and JWT assertions' expiry are judged by it; synchronise it (NTP: "
                                       "timedatectl set-ntp true, or chrony)")
    return Finding("clock", True, f"within {CLOCK_SKEW_LIMIT_S:g} s of LINE's (Date header)")


def check_store(url: str) -> Finding:
    shown = redact_url(url)
    if sqlite_file_missing(url):
        return Finding("store", True, f"{shown} is not created yet (frontdesk run creates it)")
    try:
        store = open_store(url, check_integrity=True)
    except StoreError as exc:
        return Finding("store", False, f"cannot open {shown} ({exc}): check store (FRONTDESK_STORE), and that this "
                                       "user may read and write it")
    try:
        failed = store.integrity()
        stats = store.stats()
    except StoreError as exc:
        return Finding("store", False, f"{shown} opens but cannot be read ({exc})")
    finally:
        store.close()
    if failed:
        return Finding("store", False, f"{shown} failed its integrity check ({'; '.join(failed['problems'])}): see "
                                       'docs/store.md, "Integrity check"')
    return Finding("store", True, f"{shown} opens, integrity ok ({stats['pending']} pending, {stats['dead']} dead "
                                  "letters)")


def examine(settings, test_webhook: bool = False) -> list[Finding]:
    """Every check, in order; those that need a working token are skipped without one."""
    findings: list[Finding] = []
    line = LineApi(settings)
    source = None
    try:
        if settings.token_source != "fixed":
            finding, source = check_token_source(line, settings)
            findings.append(finding)
        if settings.token_source != "fixed" and source is None:
            answer = None
        elif not settings.channel_access_token and source is None:
            findings.append(Finding("credentials", False, "channel_access_token is not set: set "
                                                          "LINE_CHANNEL_ACCESS_TOKEN (or its _FILE, or systemd's "
                                                          "credential line-channel-access-token)"))
            answer = None
        else:
            credentials, answer, midpoint = check_credentials(line)
            findings.append(credentials)
        if answer is None:
            findings += [Finding(name, None, "needs a working channel access token")
                         for name in ("token", "webhook", "quota", "clock")]
        else:
            findings += check_token(line, settings.channel_id, renewed=source is not None)
            findings += check_webhook(line, settings.public_url, test_webhook)
            findings.append(check_quota(line, settings.quota_warning_share))
            findings.append(check_clock(answer, midpoint))
    finally:
        revoking = source.revoke(line.token) if source is not None else None
        if revoking is not None:
            with contextlib.suppress(requests.RequestException):
                line.call("POST", revoking.path, auth=False, data=revoking.form)
        line.close()
    findings.append(check_store(settings.store))
    return findings


def main(settings, args) -> int:
    """`frontdesk doctor [--sandbox] [--test-webhook]`."""
    if args.sandbox:
        settings = sandbox_settings(settings)
    print(f"frontdesk doctor: {settings.api_base}" + (" (the sandbox)" if args.sandbox else ""))
    findings = examine(settings, args.test_webhook)
    for finding in findings:
        print(finding.line())
    problems = sum(finding.ok is False for finding in findings)
    if problems:
        print(f"frontdesk doctor: {problems} problem{'s' if problems > 1 else ''}")
        return 1
    print(f"frontdesk doctor: all {sum(finding.ok is True for finding in findings)} checks passed")
    return 0
