"""Masking secrets in text and JSON-able data before they leave labeljob.

`redact` replaces each secret below with `***` and keeps the text around it, so a message stays
readable ("X-Amz-Credential=***", "postgresql://app:***@db/portal"):

- AWS access key ids (`AKIA...`, `ASIA...`: a four-letter prefix and 16 more characters);
- the value after a secret's name in `key=value`, `key: value` and JSON `"key": "value"` form
  (secret access keys, session and security tokens, passwords, api keys, client secrets);
- STS session tokens, by the prefixes every one of them starts with;
- presigned URLs' `X-Amz-Signature`, `X-Amz-Credential` and `X-Amz-Security-Token` (and SigV2's
  `Signature`, `AWSAccessKeyId`), and the `Credential=`/`Signature=` of a SigV4 Authorization header;
- `Bearer` tokens;
- portal tokens in invite (`/w/<token>`) and admin (`/a/<token>`) paths;
- passwords in URLs (`postgresql://user:PASSWORD@host/db`);
- the values of the AWS secrets in this process's environment, wherever they appear.

In mappings, the value of a key named like a secret (`password`, `token`, `SecretAccessKey`, ...)
is masked whatever it holds. Everything else is left as it is: S3 URIs, ARNs, ids and hashes
carry no secret.

The one exception is `ShownOnce`: `labeljob portal invite` prints the worker's new link, and
`portal serve` and `demo` the admin link they just created, to the person who asked for it. Those
commands wrap exactly that value in `ShownOnce`, which `redact` leaves alone; the token is shown
that once and stored nowhere but as a hash. Job records, logs and every other output go through
`redact` and never carry a token.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Any

MASK = "***"
# Secrets of the environment shorter than this are placeholders ("testing"), not worth masking.
MIN_ENV_SECRET_CHARS = 16
ENV_SECRETS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")

# Mapping keys whose values are secrets, compared lowercase with `_`, `-` and spaces removed.
SECRET_KEYS = frozenset(
    {
        "awssecretaccesskey",
        "secretaccesskey",
        "secretkey",
        "awssessiontoken",
        "sessiontoken",
        "securitytoken",
        "awssecuritytoken",
        "xamzsecuritytoken",
        "xamzsignature",
        "xamzcredential",
        "password",
        "passwd",
        "apikey",
        "clientsecret",
        "accesstoken",
        "refreshtoken",
        "idtoken",
        "authorization",
        "token",
        "secret",
    }
)

_SECRET_NAME = (
    r"aws_secret_access_key|secret_access_key|SecretAccessKey|aws_session_token|session_token|"
    r"SessionToken|aws_security_token|security_token|SecurityToken|password|passwd|api_key|apikey|"
    r"client_secret|ClientSecret|access_token|refresh_token|id_token"
)
# (pattern, replacement): each keeps the name of what it masks.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA|ABIA|ACCA|AGPA|ANPA|ANVA|APKA|AIPA)[A-Z0-9]{16}\b"), MASK),
    (re.compile(rf"\b({_SECRET_NAME})(\"?'?\s*[:=]\s*\"?'?)([^\s\"'&,;}}<>]+)", re.I), rf"\1\2{MASK}"),
    (re.compile(r"\b(?:FwoGZXIvYXdz|IQoJb3JpZ2lu)[A-Za-z0-9/+=%]{16,}"), MASK),
    (
        re.compile(
            r"\b(X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|AWSAccessKeyId|"
            r"Signature|Credential)=([^&\s\"'<>,]+)",
            re.I,
        ),
        rf"\1={MASK}",
    ),
    (re.compile(r"\b(bearer\s+)[A-Za-z0-9._~+/=-]{16,}", re.I), rf"\1{MASK}"),
    # A token ends the path: a `/` or a file extension after it means a file name, not a token.
    (re.compile(r"(/[wa]/)[A-Za-z0-9_-]{32,64}(?![A-Za-z0-9_~/-]|\.[A-Za-z0-9])"), rf"\1{MASK}"),
    (re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@\"'<>]*:)([^\s@/\"'<>]+)@"), rf"\1{MASK}@"),
)
# One search over all rules first: most text holds no secret and needs no substitution.
_ANY_RULE = re.compile("|".join(f"(?{'i' if p.flags & re.I else ''}:{p.pattern})" for p, _ in _RULES))


class ShownOnce(str):
    """A secret a command shows once to the person who just created it; `redact` leaves it alone."""

    __slots__ = ()


def _env_secrets() -> list[str]:
    values = (os.environ.get(name, "") for name in ENV_SECRETS)
    return [value for value in values if len(value) >= MIN_ENV_SECRET_CHARS]


def redact_text(text: str) -> str:
    """`text` with every secret masked; a `ShownOnce` string is returned unchanged."""
    if isinstance(text, ShownOnce):
        return text
    for secret in _env_secrets():
        text = text.replace(secret, MASK)
    if not _ANY_RULE.search(text):
        return text
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


def is_secret_key(key: object) -> bool:
    return isinstance(key, str) and re.sub(r"[\s_-]", "", key).lower() in SECRET_KEYS


def redact(value: Any) -> Any:
    """A copy of `value` (text, or JSON-able data) with every secret masked.

    Strings are masked by `redact_text`; in mappings, a secret-named key's value becomes `***`
    (a `ShownOnce` value excepted). Other scalars are returned as they are.
    """
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {
            key: MASK
            if is_secret_key(key) and item not in (None, "") and not isinstance(item, ShownOnce)
            else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    return value


def secret_paths(value: Any, path: str = "$") -> list[str]:
    """Where `value` holds secrets, as JSON paths (`$.backend_state.url`); empty when it holds none."""
    if isinstance(value, str):
        return [path] if redact_text(value) != value else []
    if isinstance(value, dict):
        found = []
        for key, item in value.items():
            where = f"{path}.{key}"
            if is_secret_key(key) and item not in (None, "") and not isinstance(item, ShownOnce):
                found.append(where)
            else:
                found += secret_paths(item, where)
        return found
    if isinstance(value, list | tuple):
        return [p for i, item in enumerate(value) for p in secret_paths(item, f"{path}[{i}]")]
    return []


# ------------------------------------------------------------------------------------ logging


class RedactingFilter(logging.Filter):
    """Masks secrets in a log record's message and traceback before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_text(record.getMessage())
        record.args = ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


def install_log_redaction() -> None:
    """Put a RedactingFilter on every handler of the root logger; idempotent.

    Without any handler (a CLI run), a stderr handler for warnings and errors is added first, as
    Python's last-resort handler would print them, so those records are masked too.
    """
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setLevel(logging.WARNING)
        root.addHandler(handler)
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
