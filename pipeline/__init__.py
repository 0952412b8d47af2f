"""report-intake: reports in by email and forms, encrypted referrals and acknowledgements out.

The package follows the data: intake -> parse -> anonymity -> route (rules) -> render ->
encrypt (crypto) -> store -> outbox/deliver, wired by app and scheduled by daemon.
"""

from __future__ import annotations


def version() -> str:
    """This package's version from its installed metadata (`pip install`), or "unknown" for a
    checkout that was never installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version

    try:
        return installed_version("report-intake")
    except PackageNotFoundError:
        return "unknown (not installed)"
