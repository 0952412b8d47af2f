"""Render: a template name and a context in, a `Rendered(subject, body)` out.

Templates are admins' files `templates/NAME.txt`: an optional first line `Subject: ...`, an empty
line, then the body. They run in Jinja2's sandbox with StrictUndefined, so a typo is an error
naming the template and line rather than an empty gap, and a template cannot reach files or
attributes beyond the plain values it is given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, TemplateError, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

TEMPLATE_SUFFIX = ".txt"


class RenderError(Exception):
    """A template is missing or broken; the message names the file and line."""


@dataclass(frozen=True)
class Rendered:
    subject: str
    body: str


def template_names(templates_dir: Path) -> set[str]:
    return {p.name[: -len(TEMPLATE_SUFFIX)] for p in templates_dir.glob(f"*{TEMPLATE_SUFFIX}")}


def one_line(text: str) -> str:
    """Collapse any line breaks and control characters: a value that can never add a header."""
    return re.sub(r"[\x00-\x1f\x7f\u2028\u2029\x85]+", " ", text).strip()


class Renderer:
    def __init__(self, templates_dir: Path) -> None:
        self.dir = templates_dir
        self.env = SandboxedEnvironment(
            loader=FileSystemLoader(str(templates_dir)),
            undefined=StrictUndefined,
            autoescape=False,  # text/plain only; an HTML template would need autoescape on
            keep_trailing_newline=True,
        )

    def check(self, name: str) -> None:
        """Compile the template now; RenderError with file:line if it is broken."""
        self._template(name)

    def _template(self, name: str) -> Any:
        path = self.dir / f"{name}{TEMPLATE_SUFFIX}"
        try:
            return self.env.get_template(path.name)
        except TemplateSyntaxError as exc:
            raise RenderError(f"{path}:{exc.lineno}: {exc.message}") from None
        except TemplateError as exc:
            raise RenderError(f"{path}: {exc}") from None

    def render(self, name: str, context: dict[str, Any]) -> Rendered:
        template = self._template(name)
        try:
            text = template.render(**context)
        except TemplateError as exc:
            raise RenderError(f"{self.dir / (name + TEMPLATE_SUFFIX)}: {exc}") from None
        return split_subject(text)


def split_subject(text: str) -> Rendered:
    first, _, rest = text.partition("\n")
    if first.lower().startswith("subject:"):
        return Rendered(one_line(first[len("subject:") :]), rest.lstrip("\n"))
    return Rendered("", text)
