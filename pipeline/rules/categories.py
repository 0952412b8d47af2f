"""Category names as the rules compare them.

In: a category as a rule's `when:` or `set:` writes it, as a form answer gives it, or as a
report carries it. Out: its slug, lower case with every run of other characters (spaces,
underscores, punctuation) made one hyphen and none at either end: "Hate Crime", "hate_crime"
and " hate-crime " are all `hate-crime`. Both sides of a comparison go through `category_slug`,
so how an admin or a form spells a category never decides where a report goes.
"""

from __future__ import annotations

import re
from functools import lru_cache

_SEPARATORS = re.compile(r"[^a-z0-9]+")


@lru_cache(maxsize=1024)
def category_slug(text: str) -> str:
    """ "Sexual Harassment" -> "sexual-harassment"; "" when `text` has no letter or digit."""
    return _SEPARATORS.sub("-", text.strip().lower()).strip("-")
