"""The config's shared base: every table is a `Section` (unknown keys refused, values frozen)
and every problem is a `ConfigError`.

In: nothing but pydantic. Out: `ConfigError` and `Section`, which every other module of
`pipeline.config` builds on.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
