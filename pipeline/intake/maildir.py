"""Maildir intake: a local Maildir (filled by an MTA, or by the demo) in, raw messages out.

Each message is keyed `maildir:<folder>:<file key>` and removed once its report is committed.
"""

from __future__ import annotations

import mailbox
from pathlib import Path

from pipeline.intake import PollResult, Take, take_safely


class MaildirSource:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = f"maildir:{path}"

    def poll(self, take: Take) -> PollResult:
        result = PollResult()
        box = mailbox.Maildir(str(self.path), create=True)
        for key in sorted(box.keys()):
            raw = box.get_bytes(key)
            if take_safely(take, f"{self.name}:{key}", raw, result):
                box.discard(key)
        return result
