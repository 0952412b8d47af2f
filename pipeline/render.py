"""Render: a template name and a context in, a `Rendered(subject, body)` out.

Templates are admins' files `templates/NAME.txt`: an optional first line `Subject: ...`, an empty
line, then the body. They run in Jinja2's sandbox with StrictUndefined, so a typo is an error
naming the template and line rather than an empty gap, and a template cannot reach files or
attributes beyond the plain values it is given.

A `Renderer` reads and compiles every template of the folder once, when it is made: what it
renders is that snapshot, so a template edited, broken or deleted on disk later changes nothing
until a new `Renderer` is made (the daemon makes one only from a folder that checks out).
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import (
    BaseLoader,
    FunctionLoader,
    StrictUndefined,
    Template,
    TemplateError,
    TemplateSyntaxError,
    Undefined,
    UndefinedError,
)
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


def environment(loader: BaseLoader | None, undefined: type[Undefined] = StrictUndefined) -> Any:
    """The sandbox every template runs in (also used, with another `undefined`, to check)."""
    return SandboxedEnvironment(
        loader=loader,
        undefined=undefined,
        autoescape=False,  # text/plain only; an HTML template would need autoescape on
        keep_trailing_newline=True,
        auto_reload=False,
    )


def syntax_message(path: Path, error: TemplateSyntaxError) -> str:
    return f"{path}:{error.lineno}: {error.message}"


class Renderer:
    """The templates of one folder, read and compiled when made (see the module docstring)."""

    def __init__(self, templates_dir: Path) -> None:
        self.dir = templates_dir
        self.sources: dict[str, str] = {}  # name -> text, as read when the renderer was made
        self._broken: dict[str, str] = {}  # name -> "file:line: message"
        self._compiled: dict[str, Template] = {}
        for name in sorted(template_names(templates_dir)):
            self._read(name)
        self.env = environment(self.loader())
        for name in self.sources:
            self._compile(name)

    @property
    def names(self) -> set[str]:
        """Every template the folder held, readable or not."""
        return set(self.sources) | set(self._broken)

    def path(self, name: str) -> Path:
        return self.dir / f"{name}{TEMPLATE_SUFFIX}"

    def loader(self) -> FunctionLoader:
        """Loads from the snapshot; file names in errors and tracebacks are the real paths."""
        return FunctionLoader(self._load)

    def _load(self, name: str) -> tuple[str, str, Callable[[], bool]] | None:
        if name not in self.sources:
            return None
        return self.sources[name], str(self.path(name)), _unchanged

    def _read(self, name: str) -> None:
        path = self.path(name)
        try:
            data = path.read_bytes()
        except OSError as exc:
            self._broken[name] = f"{path}: cannot read the template: {exc.strerror or exc}"
            return
        try:
            self.sources[name] = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            self._broken[name] = f"{path}:{line}: the template is not UTF-8 text"

    def _compile(self, name: str) -> None:
        try:
            self._compiled[name] = self.env.get_template(name)
        except TemplateSyntaxError as exc:
            self._broken[name] = syntax_message(self.path(name), exc)
        except TemplateError as exc:
            self._broken[name] = f"{self.path(name)}: {exc}"

    def check(self, name: str) -> None:
        """RenderError with file:line if the template is missing or does not compile."""
        self._template(name)

    def _template(self, name: str) -> Template:
        if name in self._broken:
            raise RenderError(self._broken[name])
        if name not in self._compiled:
            raise RenderError(f"{self.path(name)}: no such template")
        return self._compiled[name]

    def render(self, name: str, context: dict[str, Any]) -> Rendered:
        """The template `name` rendered with `context`; RenderError naming `file:line` and
        what went wrong (a Jinja message, or only the class of any other error: its message
        could quote a value of the context, i.e. report content)."""
        template = self._template(name)
        try:
            text = template.render(**context)
        except Exception as exc:
            path = self.path(name)
            line = template_line(exc, str(path))
            raise RenderError(f"{path}{f':{line}' if line else ''}: {_what(exc)}") from None
        return split_subject(text)


def _what(exc: Exception) -> str:
    """What went wrong, in words that cannot quote the report: Jinja's own message names the
    missing key, which a template that looks up a report's answer would make report content."""
    if isinstance(exc, UndefinedError):
        return (
            "UndefinedError: a name, attribute or key the report does not have (intake "
            "check-rules names it with sample data; guard it with `is defined`)"
        )
    return type(exc).__name__


def template_line(exc: BaseException, filename: str) -> int:
    """The template line an error was raised at (Jinja rewrites tracebacks to template lines);
    0 when no frame is the template's."""
    frames = traceback.walk_tb(exc.__traceback__)
    lines = [line for frame, line in frames if frame.f_code.co_filename == filename]
    return lines[-1] if lines else 0


def _unchanged() -> bool:
    """A snapshot is never out of date."""
    return True


def split_subject(text: str) -> Rendered:
    first, _, rest = text.partition("\n")
    if first.lower().startswith("subject:"):
        return Rendered(one_line(first[len("subject:") :]), rest.lstrip("\n"))
    return Rendered("", text)
