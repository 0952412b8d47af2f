"""Maildir intake: a local Maildir (filled by an MTA, or by the demo) in, raw messages out.

Each message is keyed `maildir:<folder>:<file key>` and removed once its report is committed.
"""

from __future__ import annotations

import mailbox
from functools import partial
from pathlib import Path

from pipeline.faults import crash_point
from pipeline.ingest import Ingest
from pipeline.intake import PollResult, take_safely


class MaildirSource:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = f"maildir:{path}"

    def poll(self, ingest: Ingest) -> PollResult:
        result = PollResult()
        box = mailbox.Maildir(str(self.path), create=True)
        for key in sorted(box.keys()):
            raw = box.get_bytes(key)
            source_key = f"{self.name}:{key}"
            if take_safely(source_key, partial(ingest.take_email, source_key, raw), result):
                box.discard(key)
                crash_point("after-move")
        return result
