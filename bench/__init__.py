"""The benchmark of issue 11: how near the floor of its work report-intake drains a backlog.

`python -m bench [--quick] [--reports N] [--json PATH|-] [--postgres URL | --no-postgres]`
from the repository root starts its own Dovecot, SMTP sink and gpg keys, builds a seeded
backlog in the IMAP INBOX, and measures in one run: the floor (raw imapclient, gpg and smtplib)
and the project (`intake run --once` on SQLite, and on PostgreSQL when a server answers)
draining it, gpg processes per report, peak RSS with large attachments, IMAP IDLE latency
(floor and project), and form export throughput with a mail arriving meanwhile.

Modules: `cli` (the command), `backlog` (the mail and form export), `world` (servers, keys,
deployments), `sink` (the SMTP sink), `floor`, `processes` (the project's processes),
`passes` (the measurements), `output` (JSON and the table).
"""
