"""Reading services.yaml: the services reports may be referred to.

In: the path of services.yaml and the list problems go to. Out: `Services`, the valid
services by id in file order, plus every id the file wrote (so routing files can check their
`refer:` lists without repeating a problem reported here). Fingerprints come out upper case
without spaces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from yaml.nodes import Node

from pipeline.rules.model import Problem, Service
from pipeline.rules.yamlnodes import (
    Fields,
    Source,
    expect_list,
    expect_scalar,
    line_of,
    mapping_pairs,
    peek_text,
    read_fields,
    read_file_fields,
    text_of,
)

SERVICES_FILE = "services.yaml"
SERVICE_KEYS = ("id", "name", "email", "fingerprint", "template")
SERVICE_REQUIRED = ("id", "name", "email", "fingerprint")
_FINGERPRINT = re.compile(r"[0-9A-F]{40}")


@dataclass
class Services:
    """What services.yaml holds."""

    by_id: dict[str, Service] = field(default_factory=dict)
    # Every id written, valid or not; None if the file could not be read at all, in which
    # case `refer:` entries cannot be checked.
    ids: set[str] | None = None
    id_lines: dict[str, int] = field(default_factory=dict)


def load_services(path: Path, problems: list[Problem]) -> Services:
    """Read services.yaml, appending a problem for each mistake in it."""
    services = Services()
    if not path.is_file():
        message = "services.yaml is missing; it must list the services reports are referred to"
        problems.append(Problem(path, 0, message))
        return services
    source = Source(path, problems)
    fields = read_file_fields(source, ("services",))
    if fields is None or not fields.require(["services"]):
        return services
    example = "[{id: advice-centre, name: ..., email: ..., fingerprint: ...}]"
    items = expect_list(source, fields.values["services"], fields.label("services"), example)
    if items is not None:
        services.ids = set()
        for index, node in enumerate(items, 1):
            _load_service(source, index, node, services)
    return services


def _load_service(source: Source, index: int, node: Node, services: Services) -> None:
    pairs = mapping_pairs(source, node, f"service #{index}")
    if pairs is None:
        return
    named = peek_text(pairs, "id")
    owner = f"service '{named}'" if named else f"service #{index}"
    fields = read_fields(source, node, pairs, SERVICE_KEYS, owner)
    before = len(source.problems)
    fields.require(SERVICE_REQUIRED)
    service_id, name = _service_id(fields, services), fields.text("name")
    email, fingerprint = _email(fields), _fingerprint(fields)
    template = fields.name("template", "a template name")
    if service_id is None or name is None or email is None or fingerprint is None:
        return
    if len(source.problems) == before:
        services.by_id[service_id] = Service(
            id=service_id,
            name=name,
            email=email,
            fingerprint=fingerprint,
            template=template,
            file=source.file,
            line=line_of(node),
            lines=fields.lines(),
        )


def _service_id(fields: Fields, services: Services) -> str | None:
    written = text_of(fields.values["id"]) if "id" in fields.values else None
    if written is not None and services.ids is not None:
        services.ids.add(written)  # even if invalid: `refer: [it]` is not a second problem
    service_id = fields.name("id", "a service id")
    if service_id is None:
        return None
    first = services.id_lines.setdefault(service_id, fields.line("id"))
    if first != fields.line("id"):
        fields.report("id", f"service id '{service_id}' is used twice (first on line {first})")
        return None
    return service_id


def _email(fields: Fields) -> str | None:
    email = fields.text("email", expected="an email address")
    if email is None:
        return None
    local, _, domain = email.rpartition("@")
    if not local or not domain or any(char.isspace() for char in email):
        expected = "an email address such as advice@example.ac.uk"
        fields.report("email", f"{fields.label('email')} must be {expected}, not '{email}'")
        return None
    return email


def _fingerprint(fields: Fields) -> str | None:
    node = fields.values.get("fingerprint")
    if node is None:
        return None
    expected = "40 hexadecimal digits (spaces allowed)"
    written = expect_scalar(fields.source, node, fields.label("fingerprint"), expected)
    if written is None:
        return None
    fingerprint = "".join(written.split()).upper()
    if not _FINGERPRINT.fullmatch(fingerprint):
        count = f"{len(fingerprint)} characters"
        message = f"{fields.label('fingerprint')} must be {expected}, not '{written}' ({count})"
        fields.report("fingerprint", message)
        return None
    return fingerprint
