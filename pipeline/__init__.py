"""report-intake: reports in by email and forms, encrypted referrals and acknowledgements out.

The package follows the data: intake -> parse -> anonymity -> route (rules) -> render ->
encrypt (crypto) -> store -> outbox/deliver, wired by app and scheduled by daemon.
"""
