"""Secrets in URLs never reach a message, a log, the manifest, the fetch marker or the cache index.

A password in the user-info part (``http://user:TOKEN@host/``; a lone user name may itself be a
token, so it goes too) and the values of query parameters whose names look like credentials
(``token``, ``access_token``, ``api_key``, ``X-Amz-Signature``, ``password`` ...) are replaced by
``***``.

>>> redact_url("https://user:s3cr3t@example.org/p.tar.gz?token=abc&version=2")
'https://user:***@example.org/p.tar.gz?token=***&version=2'
>>> redact_url("https://ghp_abc@example.org/x")
'https://***@example.org/x'
>>> redact_text("GET https://h/x?sig=1 failed")
'GET https://h/x?sig=*** failed'
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ["redact_url", "redact_text", "MASK"]

MASK = "***"
_SECRET_PARAM = re.compile(
    r"(token|key|secret|pass|pwd|sig|auth|credential|session|cookie|code)", re.IGNORECASE
)
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def _redact_query(query: str) -> str:
    parts = []
    for item in query.split("&"):
        name, eq, _value = item.partition("=")
        parts.append(f"{name}={MASK}" if eq and _SECRET_PARAM.search(name) else item)
    return "&".join(parts)


def redact_url(url: str) -> str:
    """``url`` with user-info secrets and credential-like query values masked (see module doc)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"//[^/@\s]*@", f"//{MASK}@", url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{host}" if colon else f"{MASK}@{host}"
    query = _redact_query(parts.query) if parts.query else parts.query
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Every URL inside free ``text`` passed through :func:`redact_url`."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), str(text))
