"""Maildir intake: a local Maildir (filled by an MTA, or by the demo) in, raw messages out.

Each message is keyed `maildir:<folder>:<file key>` and removed once its report is committed;
nothing is kept. An `anonymous` Maildir (`[maildir] anonymous = true`, e.g. the delivery
target of the anonymous alias) has every message taken as anonymous, whatever its headers say.
"""

from __future__ import annotations

import mailbox
from functools import partial
from pathlib import Path

from pipeline.faults import crash_point
from pipeline.ingest import Ingest
from pipeline.intake import PollResult, take_safely


class MaildirSource:
    def __init__(self, path: Path, *, anonymous: bool = False) -> None:
        self.path = path
        self.anonymous = anonymous
        self.name = f"maildir:{path}"

    def poll(self, ingest: Ingest) -> PollResult:
        result = PollResult()
        box = mailbox.Maildir(str(self.path), create=True)
        keys = sorted(box.keys())
        ingest.expect(len(keys))
        for key in keys:
            raw = box.get_bytes(key)
            source_key = f"{self.name}:{key}"
            take = partial(ingest.take_email, source_key, raw, anonymous=self.anonymous)
            if take_safely(source_key, take, result):
                box.discard(key)
                crash_point("after-move")
        return result
