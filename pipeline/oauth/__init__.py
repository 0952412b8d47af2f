"""OAuth2 access tokens for XOAUTH2 sign-in: a signing-in section (`[imap]`, `[smtp]`) with its
`oauth2` table in, a bearer token out.

`token_source(config)` gives a section its `TokenSource`; sources share one cached token per
table and mailbox, renewed before it expires, and `TokenSource.sign_in` replaces a token the
server refuses once. Providers (`oauth2.provider`): microsoft (msal, a client secret or a
certificate), google (a service account's JWT bearer grant with google-auth), generic (RFC
6749's client-credentials grant).

A token that cannot be had is a `TokenError` naming the table (`imap.oauth2`), the token
endpoint's host and the provider's error code (`invalid_client`, `AADSTS7000215`); `transient`
when the endpoint could not be reached or failed (network, timeout, HTTP 5xx or 429), so that
mail and polls wait instead of reporting a wrong configuration. A file that cannot be read is a
`ConfigError` naming its key. No message or log line ever holds the secret, the token, a signed
assertion or a private key; the token endpoint is only spoken to over verified HTTPS (plain
HTTP only on loopback), never through a redirect, and within a deadline.

Modules, in the order they build on each other: `errors` (TokenError, optional libraries),
`answers` (what an endpoint's answer means, hints by error code, `mailbox_access`), `endpoint`
(the HTTPS session), `files` (certificate and service-account key files), `providers`,
`cache` (tokens in memory). msal, google-auth and requests are imported when first needed
(`pip install 'report-intake[oauth]'`).
"""

from pipeline.oauth.answers import mailbox_access
from pipeline.oauth.cache import Token, TokenSource, forget_tokens, token_source
from pipeline.oauth.errors import TokenError
from pipeline.oauth.files import read_certificate, read_service_account
from pipeline.oauth.providers import microsoft_authority

__all__ = [
    "Token",
    "TokenError",
    "TokenSource",
    "forget_tokens",
    "mailbox_access",
    "microsoft_authority",
    "read_certificate",
    "read_service_account",
    "token_source",
]
