"""Category names as the rules compare them.

In: a category as a rule's `when:` or `set:` writes it, as a form answer gives it, or as a
report carries it. Out: its slug: NFKC-normalised, case-folded, with every run of characters
that are not letters or digits (spaces, underscores, punctuation) made one hyphen and none at
either end: "Hate Crime", "hate_crime" and " hate-crime " are all `hate-crime`; letters of any
script stay ("Belästigung" is `belästigung`, "騷擾" is `騷擾`). Both sides of a comparison go
through `category_slug`, so how an admin or a form spells a category never decides where a
report goes.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache


def _kept(char: str) -> bool:
    """Letters and digits of any script, and the marks that belong to them (Devanagari vowel
    signs, combining accents)."""
    return char.isalnum() or unicodedata.category(char).startswith("M")


@lru_cache(maxsize=1024)
def category_slug(text: str) -> str:
    """ "Sexual Harassment" -> "sexual-harassment"; "" when `text` has no letter or digit."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    words = "".join(char if _kept(char) else " " for char in folded).split()
    return "-".join(words) if any(char.isalnum() for char in folded) else ""
