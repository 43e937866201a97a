"""MongoDB connection strings shown safely: the password, and options that carry secrets, as ***.

Not urllib's `urlsplit`: a replica set's URL names several hosts (`mongodb://u:p@h1:27017,h2:27017/db`),
and reading `.port` of such a netloc raises ValueError, which crashed every process given a
replica set with authentication. The connection string format (MongoDB manual, "Connection
Strings") is `scheme://[user[:password]@]host[:port][,host[:port]...][/[db][?options]]`, with
reserved characters in the user and password percent-encoded: the last `@` before the first `/`
ends the credentials.
"""
from __future__ import annotations

MASK = "***"
# Options whose values are secrets (MongoDB manual, "Connection String Options"): a certificate
# key's password, and AWS session tokens inside authMechanismProperties.
SECRET_OPTIONS = ("tlscertificatekeyfilepassword", "authmechanismproperties")


def redact_url(url: str) -> str:
    """The URL with its password and secret-bearing options masked, fit for logs and output.
    Never raises, whatever the URL holds."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]   # the hosts end at the path, or at the options
    credentials, at, hosts = authority.rpartition("@")
    if at and ":" in credentials:
        credentials = credentials.split(":", 1)[0] + ":" + MASK
    return f"{scheme}://{credentials}{at}{hosts}{_redact_options(tail)}"


def _redact_options(tail: str) -> str:
    path, question, query = tail.partition("?")
    if not question:
        return tail
    options = []
    for option in query.split("&"):
        name, equals, _ = option.partition("=")
        options.append(f"{name}={MASK}" if equals and name.lower() in SECRET_OPTIONS else option)
    return f"{path}?{'&'.join(options)}"
