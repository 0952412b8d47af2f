"""Checking a template before it is used: every mistake in it, each with its line.

In: a `Renderer` (its snapshot of the templates), a template name and the `Sample` contexts
that kind of template is rendered with. Out: `template-file:line: message` for each mistake:

- syntax errors (an unknown filter too). Jinja stops at the first; when that line holds no
  `{% %}` or `{# #}` and closes each `{{ }}` it opens, the check blanks the line and reads on,
  so every broken `{{ ... }}` line is named, and the checks below run on the rest. A broken
  block tag ends the search: blanking it would only report its `endif` as a made-up mistake;
- names and attributes the context does not give, on every branch (`{% if %}` arms not taken
  too), found in the parsed template: `{{ reporter_nmae }}`, `{{ report.bodyy }}`;
- what only rendering shows (an attribute of a loop variable, a filter given the wrong type, a
  sandbox refusal): each sample is rendered with an Undefined that notes its line and goes on,
  so one render names every undefined value it meets.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import ChainableUndefined, FunctionLoader, TemplateSyntaxError, Undefined, meta, nodes

from pipeline.render import Renderer, RenderError, environment, template_line

# How many broken `{{ }}` lines one template may report before the check gives up on it.
MAX_SYNTAX_ERRORS = 20


@dataclass(frozen=True)
class Sample:
    """What one kind of template ("acknowledgement", "referral") is rendered with: contexts
    that together hold every value it can get, present and absent (the first is the fullest)."""

    kind: str
    contexts: list[dict[str, Any]]


# A mistake found: (line, what is undefined or wrong, message). The middle part lets the parse
# and the render name one mistake once.
Found = tuple[int, str, str]


def check_template(renderer: Renderer, name: str, samples: list[Sample]) -> list[str]:
    """Every mistake of template `name` under each sample, as `file:line: message`, by line."""
    path = renderer.path(name)
    if name not in renderer.sources:  # unreadable or missing: the renderer says which
        try:
            renderer.check(name)
        except RenderError as exc:
            return [str(exc)]
        return []
    found, readable = syntax_errors(renderer.sources[name], path)
    if readable is not None:
        for sample in samples:
            found += undefined_in_tree(readable, sample)
            for context in sample.contexts:
                found += render_problems(readable, path, context)
    return _as_lines(path, found)


def _as_lines(path: Path, found: list[Found]) -> list[str]:
    seen: set[tuple[int, str]] = set()
    lines = []
    for line, what, message in sorted(found, key=lambda item: item[0]):
        if (line, what) not in seen:
            seen.add((line, what))
            lines.append(f"{path}:{line}: {message}")
    return lines


# --- syntax -----------------------------------------------------------------------------


def syntax_errors(source: str, path: Path) -> tuple[list[Found], str | None]:
    """Every syntax error the module docstring says can be found, and the source with their
    lines blanked (None when a syntax error remains in it)."""
    env = environment(None)
    lines = source.split("\n")
    errors: list[Found] = []
    while len(errors) < MAX_SYNTAX_ERRORS:
        try:
            env.compile("\n".join(lines), filename=str(path))
        except TemplateSyntaxError as exc:
            errors.append((exc.lineno, f"syntax {exc.lineno}", exc.message or str(exc)))
            index = exc.lineno - 1
            if not 0 <= index < len(lines) or not _can_blank(lines[index]):
                return errors, None
            lines[index] = ""
        else:
            return errors, "\n".join(lines)
    return errors, None


def _can_blank(line: str) -> bool:
    """True for a line whose removal cannot unbalance a block, comment or expression."""
    if any(mark in line for mark in ("{%", "%}", "{#", "#}")):
        return False
    return line.strip() != "" and line.count("{{") == line.count("}}")


# --- undefined names and attributes in the parsed template ------------------------------


def undefined_in_tree(source: str, sample: Sample) -> list[Found]:
    """Names, and attributes of context values, that `sample` does not give, on any branch."""
    env = environment(None)
    tree = env.parse(source)
    context = sample.contexts[0]
    bound = _bound_names(tree)
    undeclared = meta.find_undeclared_variables(tree) - set(env.globals) - set(context)
    gets = f"{_article(sample.kind)} {sample.kind} template gets {', '.join(sorted(context))}"
    found: list[Found] = [
        (node.lineno, node.name, f"'{node.name}' is undefined: {gets}")
        for node in tree.find_all(nodes.Name)
        if node.ctx == "load" and node.name in undeclared
    ]
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        problem = _missing_attribute(node, context, bound)
        if problem is not None:
            found.append(problem)
    return found


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _bound_names(tree: nodes.Template) -> set[str]:
    """Names the template sets itself anywhere (loop variables, `set`, macro arguments)."""
    names = {node.name for node in tree.find_all(nodes.Name) if node.ctx in ("store", "param")}
    return names | {"loop", "caller", "varargs", "kwargs"}


def _missing_attribute(
    node: nodes.Getattr | nodes.Getitem, context: Mapping[str, Any], bound: set[str]
) -> Found | None:
    """`report.bodyy` where `report` comes from the context and has no `bodyy`."""
    chain = list(_chain(node))
    if not chain:
        return None
    root, *keys = chain
    if root in bound or root not in context:
        return None
    value: Any = context[root]
    for depth, key in enumerate(keys):
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, dict) and not key.startswith("_") and hasattr(value, key):
            return None  # a dict method (`report.fields.items`)
        elif isinstance(value, dict):
            dotted = ".".join([root, *keys[: depth + 1]])
            holder = ".".join([root, *keys[:depth]])
            message = f"'{dotted}' is undefined: {holder} has {', '.join(sorted(value))}"
            return node.lineno, key, message
        else:
            return None  # a list, None or a plain value: only rendering can tell
    return None


def _chain(node: nodes.Node) -> Iterator[str]:
    """`report.fields["x"]` -> report, fields, x; nothing if any step is not a plain name."""
    parts: list[str] = []
    while isinstance(node, nodes.Getattr | nodes.Getitem):
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            parts.append(node.arg.value)
        else:
            return
        node = node.node
    if isinstance(node, nodes.Name):
        yield node.name
        yield from reversed(parts)


# --- what only rendering shows ----------------------------------------------------------


def render_problems(source: str, path: Path, context: dict[str, Any]) -> list[Found]:
    """Render once with an Undefined that notes each use and goes on; then any error."""
    found: list[Found] = []
    loader = FunctionLoader(lambda _: (source, str(path), lambda: True))
    env = environment(loader, undefined=_noting(found))
    try:
        env.get_template(path.name).render(**context)
    except Exception as exc:  # what the template did wrong, at its line
        found.append((template_line(exc, str(path)), type(exc).__name__, str(exc)))
    return found


def _noting(found: list[Found]) -> type[Undefined]:
    """An Undefined class that adds (line, name, message) to `found` when it is used."""

    class Noting(ChainableUndefined):
        def _note(self) -> None:
            line = _current_line()
            if line is None:  # Jinja folding a constant while compiling: leave it to the render
                raise nodes.Impossible()
            found.append((line, str(self._undefined_name), self._undefined_message))

        def __str__(self) -> str:
            self._note()
            return ""

        def __iter__(self) -> Iterator[Any]:
            self._note()
            return iter(())

        def __bool__(self) -> bool:
            self._note()
            return False

        def __len__(self) -> int:
            self._note()
            return 0

    return Noting


def _current_line() -> int | None:
    """The template line now rendering (from the compiled template's frame on the stack);
    None when no template is rendering."""
    frame = sys._getframe(1)
    while frame is not None:
        template = frame.f_globals.get("__jinja_template__")
        if template is not None:
            return int(template.get_corresponding_lineno(frame.f_lineno))
        frame = frame.f_back  # type: ignore[assignment]
    return None
