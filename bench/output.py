"""The bench's figures: the passes' raw results in, a JSON-ready dict and a text table out.

`figures_json` names every figure (seconds, MB of 2**20 bytes, ratios project/floor) and sets
`complete`: every pass ran and the project delivered every referral it owed. `table` prints the
same figures for a terminal.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from bench.backlog import Message, referrals
from bench.floor import FloorResult
from bench.passes import Drain, Forms, GpgCount, Memory, percentile


def figures_json(
    about: dict[str, Any], raw: dict[str, Any], postgres_note: str | None
) -> dict[str, Any]:
    base: FloorResult = raw["floor"]
    figures: dict[str, Any] = {
        "bench": about,
        "backlog": backlog_figures(raw["backlog"]),
        "floor": {
            "seconds": _s(base.seconds),
            "ms_per_report": _ms(base.seconds, base.reports),
            "reports": base.reports,
            "referrals_sent": base.referrals_sent,
        },
        "sqlite": drain_figures(raw["sqlite"], base),
        "postgres": drain_figures(raw["postgres"], base)
        if "postgres" in raw
        else {"skipped": postgres_note},
        "gpg_processes": gpg_figures(raw["gpg"]),
        "memory": memory_figures(raw["memory"]),
        "idle": idle_figures(raw["idle_floor"], raw["idle_project"]),
        "forms": forms_figures(raw["forms"]),
        "pass_seconds": raw["pass_seconds"],
    }
    drains = [figures["sqlite"]] + ([figures["postgres"]] if "postgres" in raw else [])
    figures["complete"] = (
        all(drain["all_delivered"] for drain in drains)
        and base.referrals_sent == figures["backlog"]["referrals"]
        and figures["memory"]["referrals_delivered"] == figures["memory"]["referrals_expected"]
        and figures["forms"]["seconds"] is not None
        and figures["forms"]["mail_latency"] is not None
    )
    return figures


def backlog_figures(messages: list[Message]) -> dict[str, int]:
    return {
        "reports": len(messages),
        "referrals": referrals(messages),
        "anonymous": sum(m.anonymous for m in messages),
        "html": sum(m.html for m in messages),
        "with_image": sum(m.image for m in messages),
        "bytes": sum(len(m.raw) for m in messages),
    }


def drain_figures(drain: Drain, base: FloorResult) -> dict[str, Any]:
    return {
        "seconds": _s(drain.seconds),
        "ms_per_report": _ms(drain.seconds, base.reports),
        "ratio": round(drain.seconds / base.seconds, 2),
        "first_start_seconds": _s(drain.first_start),
        "runs": len(drain.runs),
        "exit_codes": [run.returncode for run in drain.runs],
        "peak_rss_mb": _mb(drain.peak_rss_mb),
        "referrals_expected": drain.referrals_expected,
        "referrals_delivered": drain.referrals_delivered,
        "referrals_encrypted": drain.referrals_encrypted,
        "acknowledgements": drain.acknowledgements,
        "inbox_left": drain.inbox_left,
        "all_delivered": drain.referrals_delivered == drain.referrals_expected
        and drain.referrals_encrypted == drain.referrals_expected
        and drain.inbox_left == 0,
    }


def gpg_figures(count: GpgCount) -> dict[str, Any]:
    def per_report(found: Counter[str]) -> dict[str, float]:
        return {name: round(n / count.reports, 2) for name, n in found.most_common()}

    floor_total = sum(count.floor.values()) / count.reports
    project_total = sum(count.project.values()) / count.reports
    how = (
        f"a separate pass of {count.reports} reports on SQLite; the timed passes use gpg itself"
        if count.separate
        else f"in the timed drain of {count.reports} reports on SQLite (timings include the "
        "wrapper's cost, for floor and project alike)"
    )
    return {
        "how": how + "; floor and project each through a counting gpg wrapper, the project's "
        "first start not counted",
        "reports": count.reports,
        "floor_per_report": round(floor_total, 2),
        "project_per_report": round(project_total, 2),
        "ratio": round(project_total / floor_total, 2),
        "floor_by_command": per_report(count.floor),
        "project_by_command": per_report(count.project),
    }


def memory_figures(memory: Memory) -> dict[str, Any]:
    return {
        "messages": memory.messages,
        "large_messages": memory.large,
        "attachment_mib": round(memory.attachment_bytes / 2**20, 1),
        "seconds": _s(memory.seconds),
        "idle_rss_mb": _mb(memory.idle_rss_mb),
        "peak_rss_mb": _mb(memory.peak_rss_mb),
        "after_rss_mb": _mb(memory.after_rss_mb),
        "large_delivered": memory.large_delivered,
        "referrals_expected": memory.referrals_expected,
        "referrals_delivered": memory.referrals_delivered,
    }


def idle_figures(floor: list[float], project: list[float]) -> dict[str, Any]:
    def summary(values: list[float]) -> dict[str, float]:
        return {"p50": _s(percentile(values, 0.50)), "p95": _s(percentile(values, 0.95))}

    low, high = summary(floor), summary(project)
    return {
        "rounds": len(project),
        "floor": low,
        "project": high,
        "p50_difference": _s(high["p50"] - low["p50"]),
        "p95_difference": _s(high["p95"] - low["p95"]),
    }


def forms_figures(forms: Forms) -> dict[str, Any]:
    return {
        "rows": forms.rows,
        "seconds": _s(forms.seconds) if forms.seconds is not None else None,
        "rows_per_second": round(forms.rows / forms.seconds, 1) if forms.seconds else None,
        "export_running_when_mailed": forms.export_running_when_mailed,
        "mail_latency": _s(forms.mail_latency) if forms.mail_latency is not None else None,
        "mail_before_export_done": forms.mail_before_export_done,
        "form_referrals_delivered": forms.form_referrals_delivered,
    }


def table(figures: dict[str, Any]) -> str:
    about, backlog, base = figures["bench"], figures["backlog"], figures["floor"]
    dirty = " + uncommitted changes" if about["uncommitted_changes"] else ""
    lines = [
        f"report-intake bench: {about['command']}  ({about['cores']} cores, load average "
        f"{about['load_average_at_start'][0]} at start, {about['load_average_at_end'][0]} at end; "
        f"commit {about['commit']}{dirty})",
        f"backlog: {backlog['reports']} reports, {backlog['referrals']} referrals, "
        f"{backlog['anonymous']} anonymous, {backlog['html']} HTML, {backlog['with_image']} with "
        f"a 100 KB image, {backlog['bytes'] / 2**20:.1f} MB",
        "",
        f"{'backlog drain':<34}{'floor':>10}{'SQLite':>12}{'PostgreSQL':>12}",
    ]
    drains = [figures["sqlite"], figures["postgres"]]

    def row(label: str, floor_value: object, key: str, fmt: str = "{}") -> str:
        cells = [fmt.format(d[key]) if key in d else "-" for d in drains]
        return f"{label:<34}{floor_value!s:>10}" + "".join(f"{c:>12}" for c in cells)

    lines += [
        row("seconds", f"{base['seconds']:.2f}", "seconds", "{:.2f}"),
        row("ms per report", f"{base['ms_per_report']:.1f}", "ms_per_report", "{:.1f}"),
        row("ratio project/floor", "1", "ratio", "{:.2f}x"),
        row("referrals delivered", base["referrals_sent"], "referrals_delivered"),
        row("acknowledgements sent", "-", "acknowledgements"),
        row("run --once runs (exit codes)", "-", "exit_codes"),
        row("first start, not in the drain (s)", "-", "first_start_seconds", "{:.2f}"),
        row("peak RSS of run --once (MB)", "-", "peak_rss_mb", "{:.0f}"),
    ]
    if "skipped" in figures["postgres"]:
        lines.append(f"PostgreSQL {figures['postgres']['skipped']}")
    gpg = figures["gpg_processes"]
    lines += [
        "",
        f"gpg processes per report: floor {gpg['floor_per_report']}, project "
        f"{gpg['project_per_report']} ({gpg['ratio']}x)",
        f"  ({gpg['how']})",
        "  project by command: "
        + ", ".join(f"{name} {n}" for name, n in gpg["project_by_command"].items()),
    ]
    memory = figures["memory"]
    lines += [
        "",
        f"memory: {memory['messages']} messages, {memory['large_messages']} with a "
        f"{memory['attachment_mib']} MiB attachment: intake RSS idle {memory['idle_rss_mb']:.0f} "
        f"MB, peak {memory['peak_rss_mb']:.0f} MB, after {memory['after_rss_mb']:.0f} MB; "
        f"large ones delivered {memory['large_delivered']}/{memory['large_messages']}, "
        f"referrals {memory['referrals_delivered']}/{memory['referrals_expected']}, "
        f"{memory['seconds']:.1f} s",
    ]
    idle = figures["idle"]
    lines += [
        f"IDLE latency, APPEND to referral accepted ({idle['rounds']} rounds): floor p50 "
        f"{idle['floor']['p50']:.3f} s p95 {idle['floor']['p95']:.3f} s; project p50 "
        f"{idle['project']['p50']:.3f} s p95 {idle['project']['p95']:.3f} s; difference p50 "
        f"{idle['p50_difference']:+.3f} s p95 {idle['p95_difference']:+.3f} s",
    ]
    forms = figures["forms"]
    exported = (
        f"{forms['rows']} rows in {forms['seconds']:.1f} s = {forms['rows_per_second']} rows/s"
        if forms["seconds"] is not None
        else f"{forms['rows']} rows not done in time"
    )
    mail = f"{forms['mail_latency']:.2f} s" if forms["mail_latency"] is not None else "not in time"
    lines += [
        f"form export: {exported}; a mail appended meanwhile (export still running: "
        f"{'yes' if forms['export_running_when_mailed'] else 'no'}) reached its service after "
        f"{mail}, {'before' if forms['mail_before_export_done'] else 'after'} the export was done",
    ]
    if not figures["complete"]:
        lines.append("INCOMPLETE: a pass did not deliver everything it owed; see the JSON")
    return "\n".join(lines)


def _s(seconds: float) -> float:
    return round(seconds, 3)


def _ms(seconds: float, reports: int) -> float:
    return round(1000 * seconds / max(1, reports), 1)


def _mb(value: float) -> float:
    return round(value, 1)
