"""A backlog of large messages on a real Dovecot: taken whole in one poll, in UID order, each
once, fetched in groups of at most `imap.GROUP_BYTES` (a larger message alone) with a sign of
life before each group, so the daemon's watchdog never sees a silent poll.

The poll runs in this process under the daemon's own `Liveness` and `PollProgress`, with a
recorder in between that notes what the poll said (`expect`, `taken`) in order: a group is what
is taken between two `expect(0)` (`Ingest.alive`, sent before each group's FETCH).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import pytest

from pipeline.app import App
from pipeline.daemon import Liveness, PollProgress
from pipeline.intake import imap
from pipeline.intake.imap import fetch_groups
from tests.integration.conftest import Deployment, email

MB = 1024 * 1024
ALIVE = 0  # what `Ingest.alive` tells the progress: `expect(0)`


class Recorder:
    """`Ingest.progress` that notes each call (a count for `expect`, "taken") and passes it on
    to the daemon's `PollProgress`; `beats` counts the signs of life the watchdog saw."""

    def __init__(self) -> None:
        self.events: list[int | str] = []
        self.beats = 0
        self.liveness = Liveness(clock=self._clock)
        self.daemon = PollProgress(self.liveness)

    def _clock(self) -> float:
        self.beats += 1
        return float(self.beats)

    def expect(self, count: int) -> None:
        self.events.append(count)
        self.daemon.expect(count)

    def taken(self) -> None:
        self.events.append("taken")
        self.daemon.taken()

    def groups(self) -> list[int]:
        """How many messages were taken after each `alive`, in order."""
        counts: list[int] = []
        for event in self.events:
            if event == ALIVE:
                counts.append(0)
            elif event == "taken":
                counts[-1] += 1
        return counts


def message(n: int, size: int) -> bytes:
    """A named report of about `size` bytes, distinct by `n`."""
    line = "x" * 76 + "\r\n"
    body = f"It happened near the library, case {n}.\r\n" + line * (size // len(line))
    return email(body, subject=f"report {n}", message_id=f"<m{n}@example.ac.uk>")


WatchedPoll = Callable[[], Recorder]


@pytest.fixture
def watched_poll(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> WatchedPoll:
    """One poll of the deployment's mailbox, watched as the daemon watches it: what it said."""
    monkeypatch.setenv("TEST_IMAP_PASSWORD", deployment.imap.password)

    def run() -> Recorder:
        recorder = Recorder()
        app = App.open(deployment.config())
        app.ingest.progress = recorder
        try:
            recorder.liveness.tracked("poll", app.poll, watched=True)()
        finally:
            app.close()
        return recorder

    return run


def taken_uids(deployment: Deployment) -> list[int]:
    """The UIDs taken in, in the order their reports were stored."""
    with sqlite3.connect(deployment.data_dir / "intake.db") as db:
        rows = db.execute("SELECT source_key FROM source_item ORDER BY report_id").fetchall()
    return [int(key.rsplit(":", 1)[1]) for (key,) in rows]


def sizes(deployment: Deployment) -> dict[int, int]:
    with deployment.imap.client() as client:
        client.select_folder("INBOX", readonly=True)
        fetched = client.fetch(client.search("ALL"), ["RFC822.SIZE"])
    return {uid: int(fetched[uid][b"RFC822.SIZE"]) for uid in sorted(fetched)}


def states(deployment: Deployment) -> list[tuple[str, str | None]]:
    with sqlite3.connect(deployment.data_dir / "intake.db") as db:
        return db.execute("SELECT state, reason FROM report ORDER BY id").fetchall()


def test_a_backlog_of_large_messages_is_taken_in_one_poll_in_order_in_bounded_groups(
    deployment: Deployment, watched_poll: WatchedPoll
) -> None:
    shape = [10_000, 6 * MB, 20_000, 6 * MB, 6 * MB, 5_000, 3 * MB, 8_000]
    for n, size in enumerate(shape):
        deployment.imap.append(message(n, size))
    before = sizes(deployment)
    uids = list(before)

    poll = watched_poll()

    assert taken_uids(deployment) == uids  # all of them, each once, in UID order
    assert [state for state, _ in states(deployment)] == ["queued"] * len(shape)
    assert deployment.imap.uids() == []  # expunged after their commit
    # small + 6 MB | 6 MB | 6 MB + small + 3 MB + small: at most 10 MB a group
    assert poll.groups() == [3, 1, 4]
    assert poll.events[0] == len(shape) and poll.events.count("taken") == len(shape)
    start = 0
    for count in poll.groups():
        group = uids[start : start + count]
        assert count == 1 or sum(before[uid] for uid in group) <= imap.GROUP_BYTES
        start += count
    assert poll.beats == 1 + len(poll.events)  # the job's start, then each event reached it


def test_a_message_over_the_bound_is_fetched_alone_and_one_over_the_limit_quarantined(
    deployment: Deployment, watched_poll: WatchedPoll, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(imap, "GROUP_BYTES", 100_000)
    deployment.write(extra="[limits]\nmessage_bytes = 300000\n")
    shape = [30_000, 30_000, 150_000, 40_000, 400_000, 20_000, 20_000, 20_000]
    for n, size in enumerate(shape):
        deployment.imap.append(message(n, size))
    uids = list(sizes(deployment))

    poll = watched_poll()

    assert taken_uids(deployment) == uids
    assert poll.groups() == [2, 1, 1, 1, 3]
    found = states(deployment)
    assert [state for state, _ in found] == ["queued"] * 4 + ["quarantined"] + ["queued"] * 3
    reason = found[4][1] or ""
    assert "message_bytes" in reason and "larger than" in reason
    assert deployment.imap.uids() == []


def test_groups_keep_uid_order_and_put_a_large_message_alone() -> None:
    sizes = {3: 4, 5: 4, 8: 3, 9: 11, 12: 1, 13: 10, 20: 10, 21: 0}
    assert fetch_groups(sizes, 10) == [[3, 5], [8], [9], [12], [13], [20, 21]]
    assert fetch_groups({}, 10) == []
    assert fetch_groups({7: 50}, 10) == [[7]]


class SizeAnswers:
    """The FETCH RFC822.SIZE answer of a server that leaves sizes out or gives NIL (pure data:
    what imapclient hands back)."""

    def __init__(self, answers: dict[int, dict[bytes, object]]) -> None:
        self.answers = answers

    def fetch(self, uids: list[int], items: list[str]) -> dict[int, dict[bytes, object]]:
        return {uid: self.answers[uid] for uid in uids if uid in self.answers}


def test_a_size_the_server_leaves_out_fetches_that_message_alone_not_never() -> None:
    answers = SizeAnswers(
        {
            1: {b"RFC822.SIZE": 100},
            2: {b"FLAGS": ()},  # no size at all
            3: {b"RFC822.SIZE": None},  # NIL
            4: {b"RFC822.SIZE": b"junk"},
            5: {b"RFC822.SIZE": 200},
        }
    )
    sizes = imap._sizes(answers, [1, 2, 3, 4, 5, 6])  # type: ignore[arg-type]  # 6: gone
    assert sizes == {1: 100, 2: imap.GROUP_BYTES, 3: imap.GROUP_BYTES, 4: imap.GROUP_BYTES, 5: 200}
    assert fetch_groups(sizes, imap.GROUP_BYTES) == [[1], [2], [3], [4], [5]]
