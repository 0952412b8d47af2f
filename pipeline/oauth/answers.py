"""A token endpoint's answer in, a `Grant` or a `TokenError` out: what the answer means and
what to check.

A refusal is reported with the provider's error code and Entra ID's AADSTS number only (the
rest of an answer may quote what we sent, the client secret included) and a hint chosen by the
code; an outage (HTTP 5xx, 429) is a transient TokenError; an answer no library can read (HTML
from a proxy, a JSON list) says so. `mailbox_access` tells what a mail server needs before it
takes the provider's tokens for the mailbox.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeGuard

from pipeline.config import SECRET_KEYS, OAuth2Config
from pipeline.oauth.errors import TokenError

DEFAULT_LIFETIME = 3600.0  # seconds, when the answer gives no usable expires_in (RFC 6749 §5.1)
MAX_LIFETIME = 86400.0  # a token is fetched again after a day at the latest


@dataclass(frozen=True)
class Grant:
    """A token as the endpoint gave it, and for how many seconds it is valid."""

    token: str = field(repr=False)
    lifetime: float


@dataclass(frozen=True)
class Endpoint:
    """A token endpoint as messages name it: the table asking for a token (`imap.oauth2`),
    the endpoint's host, and the key that gives its address (`imap.oauth2.token_url`)."""

    where: str
    host: str
    key: str


def lifetime(seconds: object) -> float:
    """A token's life from `expires_in` (a number, or a string of one): DEFAULT_LIFETIME when
    it is missing, not a number, not finite or not positive; at most MAX_LIFETIME."""
    if isinstance(seconds, bool):
        return DEFAULT_LIFETIME
    try:
        value = float(seconds)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return DEFAULT_LIFETIME
    if not math.isfinite(value) or value <= 0:
        return DEFAULT_LIFETIME
    return min(value, MAX_LIFETIME)


def failing(status: int | None) -> TypeGuard[int]:
    """Whether an HTTP status says the endpoint failed for now (5xx) or is overloaded (429)."""
    return status is not None and (status >= 500 or status == 429)


def failed(to: Endpoint, status: int) -> TokenError:
    """The endpoint failed (5xx) or asked us to slow down (429): transient."""
    return TokenError(
        f"{to.where}: the token endpoint {to.host} failed (HTTP {status}); "
        "sign-in is tried again at the next poll or send",
        transient=True,
    )


def unusable(to: Endpoint, what: str, status: int | None = None) -> TokenError:
    """An answer that holds no token and no error code: a proxy's page, a JSON list, an
    `expires_in` a library cannot read. With a failing status, the endpoint's outage."""
    if failing(status):
        return failed(to, status)
    shown = f"{what}, HTTP {status}" if status is not None else what
    return TokenError(
        f"{to.where}: the token endpoint {to.host} gave no usable token answer ({shown}): "
        f"check {to.key}; a web page or a proxy answers like this"
    )


def refusal(
    to: Endpoint,
    answer: object,
    hints: Mapping[str, str],
    oauth2: OAuth2Config,
    *,
    status: int | None = None,
    **fill: str,
) -> TokenError:
    """What an answer without a token means: an outage (5xx, 429), an answer without an error
    code (no usable answer), or the endpoint's refusal with its error code and AADSTS number
    (nothing else of its answer, which may quote what we sent) and what to check. `fill`
    completes the hints (`client_id`)."""
    codes = error_codes(answer)
    if failing(status) or (not codes and (status is None or 200 <= status < 300)):
        return unusable(to, "no access_token", status)
    shown = ", ".join(codes) or f"HTTP {status}"
    hint = next((hints[code] for code in reversed(codes) if code in hints), None)
    hint = hint or ERROR_HINTS.get(codes[0] if codes else "", "check {where}")
    given = next((key for key in SECRET_KEYS if getattr(oauth2, key) is not None), None)
    secret = f"{to.where}.{given}" if given else "the client secret"
    return TokenError(
        f"{to.where}: {to.host} refused the token request ({shown}): "
        + hint.format_map({"where": to.where, "secret": secret, "scope": oauth2.scopes, **fill}),
        code=codes[0] if codes else None,
    )


_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_AADSTS = re.compile(r"\bAADSTS(\d{4,9})\b")
_ERROR_FIELD = re.compile(r'"error"\s*:\s*"([A-Za-z0-9_.-]{1,64})"')


def error_codes(answer: object) -> list[str]:
    """The error code of a token endpoint's JSON answer and, from Entra ID, its AADSTS
    number: words and digits only, nothing else of the answer."""
    if not isinstance(answer, Mapping):
        return []
    error = answer.get("error")
    codes = [error] if isinstance(error, str) and _CODE.fullmatch(error) else []
    numbers = answer.get("error_codes")
    if isinstance(numbers, list) and numbers and isinstance(numbers[0], int):
        return [*codes, f"AADSTS{numbers[0]}"]
    description = answer.get("error_description")
    found = _AADSTS.search(description) if isinstance(description, str) else None
    return [*codes, f"AADSTS{found.group(1)}"] if found else codes


def codes_in(text: str) -> list[str]:
    """The error code and AADSTS number quoted in a library's message."""
    error = _ERROR_FIELD.search(text)
    number = _AADSTS.search(text)
    return [m.group(1) if m is error else f"AADSTS{m.group(1)}" for m in (error, number) if m]


# -- hints for refusals, by error code --------------------------------------------------

ERROR_HINTS = {
    "invalid_client": "check {where}.client_id and {secret}",
    "unauthorized_client": "the client may not use this grant: check {where}.client_id",
    "invalid_scope": "check {where}.scope",
    "invalid_grant": "check {where}.client_id and {secret}",
    "invalid_request": "check {where}.token_url and {where}.client_id",
}
MICROSOFT_HINTS = {
    **ERROR_HINTS,
    "AADSTS7000215": "the client secret is wrong: check {secret} (the secret's value, not its ID)",
    "AADSTS7000222": "the client secret has expired: add a new one to the app registration",
    "AADSTS700016": "no such application in the tenant: check {where}.client_id and {where}.tenant",
    "AADSTS90002": "no such tenant: check {where}.tenant",
    "AADSTS1002012": "check {where}.scope (https://outlook.office365.com/.default)",
    "AADSTS70011": "check {where}.scope (https://outlook.office365.com/.default)",
}
GOOGLE_HINTS = {
    **ERROR_HINTS,
    "invalid_grant": "check that the username is a mailbox of the Workspace domain and that "
    "the key in {where}.service_account_file has not been deleted",
    "unauthorized_client": "the service account's client ID {client_id} may not act for the "
    "mailbox with {scope}: add that client ID with that scope under domain-wide delegation in "
    "the Workspace Admin console (Security, Access and data control, API controls)",
    "invalid_client": "the key in {where}.service_account_file is not valid: make a new one",
}

# What a mail server needs before it takes a provider's tokens for the mailbox, by protocol:
# for a login refused although a token was issued.
MAILBOX_ACCESS = {
    ("microsoft", "imap"): "the app needs IMAP.AccessAsApp, and its Exchange service principal "
    "needs Add-MailboxPermission on the mailbox",
    ("microsoft", "smtp"): "the app needs SMTP.SendAsApp, and its Exchange service principal "
    "needs Add-MailboxPermission on the mailbox",
    # Google issues a token only when domain-wide delegation allows it: a refusal after that
    # is the mailbox's.
    ("google", "imap"): "delegation works (a token was issued), so IMAP is most likely off for "
    "this user: Admin console, Apps, Google Workspace, Gmail, End User Access, POP and IMAP "
    "access",
    ("google", "smtp"): "delegation works (a token was issued): check that smtp.username is the "
    "user's primary address, not an alias or a group",
    ("generic", "imap"): "the token's client must be allowed this mailbox",
    ("generic", "smtp"): "the token's client must be allowed to send as this mailbox",
}


def mailbox_access(oauth2: OAuth2Config, protocol: Literal["imap", "smtp"]) -> str:
    """What a mail server (`protocol`: imap or smtp) needs before it takes the provider's
    tokens for the mailbox: for a login refused although a token was issued."""
    return MAILBOX_ACCESS[(oauth2.provider, protocol)]
