"""report.md: the summary as Markdown, fit for a Buildkite annotation or a GitHub step summary.

Both cap the text at 1 MiB, so long tables are cut with a note pointing at summary.json. Both also
render HTML inside Markdown, so every text from the run (step names, messages, names from run.json)
is HTML-escaped, as report.html escapes it, and made printable.
"""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING, Any

from harness.report import costs
from harness.xmlsafe import printable

if TYPE_CHECKING:
    from harness.results.summary import Cell, RunSummary, TransitionRow

MAX_BYTES = 1_000_000  # under Buildkite's 1 MiB annotation limit, with room for the closing note
MAX_STEP_ROWS = 500
MAX_TRANSITION_ROWS = 200
MAX_CELL = 400  # a message cut short says less than a long cell

STATUS = {"fix confirmed": "PASS", "not reproduced": "INCONCLUSIVE", "not proven": "FAIL", "baseline broken": "FAIL",
          "fix insufficient": "FAIL", "regression": "FAIL"}
#: The transitions a reviewer acts on; the rest are in summary.json.
SHOWN_TRANSITIONS = ("regression", "still failing", "not proven", "fixed")


def render(summary: RunSummary) -> str:
    """report.md of a run's typed summary."""
    parts = [_title(summary), _reasons(summary), _steps(summary), _counts(summary), _stats(summary),
             _culprits(summary), _transitions(summary), _failures(summary), _cost(summary), _leaks(summary),
             _listing("Substitutions", summary.substitutions), _listing("Orphaned processes", summary.orphans),
             _listing("Probe disagreements", summary.probe_notes)]
    return _fit("\n".join(p for p in parts if p))


def _cell(value: Any, limit: int = MAX_CELL) -> str:
    """One table cell: one line, no pipes breaking the table, not too long, no HTML."""
    text = " ".join(printable(str(value)).split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return html.escape(text, quote=False).replace("|", "\\|")


def _code(value: Any) -> str:
    """An inline code span for a plain name; anything that could close it or hold markup is an
    escaped cell instead."""
    text = _cell(value)
    return text if re.search(r"[`&<>\\|]", text) else f"`{text}`"


def _table(header: list[str], rows: list[list[str]], limit: int, what: str) -> str:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows[:limit]]
    if len(rows) > limit:
        lines.append(f"\n_{len(rows) - limit} more {what} not shown; see summary.json._")
    return "\n".join(lines) + "\n"


def verdict_words(s: RunSummary) -> str:
    """The verdict as every headline says it: a rehearsal (the machine lacked the scenario's
    platform) says so right beside it, not in the small print."""
    return f"{s.verdict} (rehearsal)" if s.rehearsal else str(s.verdict)


def _title(s: RunSummary) -> str:
    verdict = s.verdict
    status = "FAIL" if s.exit_code else STATUS.get(verdict, "UNKNOWN")  # failures not allowed count too
    rehearsal = " — rehearsal" if s.rehearsal else ""
    lines = [f"## {_cell(s.scenario or 'run')}: {status} ({_cell(verdict)}, exit {_cell(s.exit_code)}){rehearsal}\n"]
    if s.incomplete:
        lines.append("> **INCOMPLETE**: the run was interrupted; these results cover only the steps that ran.\n")
    facts = [f"run {_code(s.run_id)}", f"baseline {_code(s.baseline)}",
             f"{_cell(s.repeat)} repeat(s)", f"backend {_cell(s.backend)}",
             f"platform {_cell(s.platform)}"]
    if s.rehearsal:
        facts.insert(0, "**rehearsal** (this machine lacks the scenario's platform: see Substitutions)")
    seq = s.stats.sequential or {}
    if seq.get("stopped_after"):
        facts.append(f"early stop after {seq['stopped_after']} of {seq['rounds_planned']} rounds "
                     f"(tested at level {seq['level']:.3g})")
    lines.append(" · ".join(facts) + "\n")
    return "\n".join(lines)


def _reasons(s: RunSummary) -> str:
    return "".join(f"- {_cell(r, 2000)}\n" for r in s.reasons)


def _outcome(cell: Cell | None, repeats: int) -> str:
    if not cell:
        return "-"
    if repeats > 1:
        v = cell.vram
        text = f"{cell.failed}/{cell.runs} failed"
        if cell.failed:
            text += f" ({cell.failure_class})"
        return text + f"; VRAM {v.rate:.0%} [{v.low:.0%}, {v.high:.0%}]"
    if cell.outcome == "failed":
        return f"failed: {cell.failure_class}"
    return cell.outcome


def _steps(s: RunSummary) -> str:
    variants, repeats = s.variants, s.repeat
    rows = [[row.step] + [_outcome(row.variants.get(v), repeats) for v in variants] for row in s.cases]
    note = " (failures per run; VRAM failure rate with its 95 % Wilson interval)" if repeats > 1 else ""
    return f"### Steps{note}\n\n" + _table(["step", *variants], rows, MAX_STEP_ROWS, "steps")


def _counts(s: RunSummary) -> str:
    counts = s.counts
    if not counts:
        return ""
    # Only the classes that occurred, but always the one this harness is about.
    classes = [c for c in next(iter(counts.values()))["classes"]
               if c == "vram_construction" or any(v["classes"].get(c) for v in counts.values())]
    header = ["variant", "cases", "passed", "failed", "skipped", *classes]
    rows = [[v, c["cases"], c["passed"], c["failed"], c["skipped"], *(c["classes"][k] for k in classes)]
            for v, c in counts.items()]
    return "### Counts\n\n" + _table(header, rows, len(rows), "variants")


def _stats(s: RunSummary) -> str:
    fisher = s.stats.fisher
    if not fisher:
        return ""
    rows = []
    for name, f in fisher.items():
        (bk, bn), (ck, cn) = f.table
        rows.append([name, f"{bk}/{bk + bn}", f"{ck}/{ck + cn}", f"{f.p:.3g}"])
    return ("### VRAM failures, pooled over all steps (Fisher's exact test)\n\n"
            + _table(["candidate", f"baseline {s.baseline}", "candidate", "p"], rows, len(rows), "rows"))


def _side(side: dict[str, Any] | None) -> str:
    if not side:
        return "-"
    return f"failed: {side['failure_class']}" if side["outcome"] == "failed" else side["outcome"]


def _message(c: TransitionRow) -> str:
    """The failure worth reading: the candidate's when it fails, else what the baseline failed with;
    a VRAM failure with a culprit points at the Culprits table, which says its message once."""
    for side in (c.candidate, c.baseline):
        if side and side["outcome"] == "failed":
            return _see_culprit(side.get("culprit")) or side["message"]
    return ""


def _see_culprit(culprit: dict[str, Any] | None) -> str:
    return f"culprit {culprit['step']}: see Culprits" if culprit else ""


def culprit_text(c: dict[str, Any]) -> str:
    """summary.json's culprit entry as one line (harness.results.culprit.Culprit.describe)."""
    from harness.results.culprit import Culprit

    return Culprit.from_dict(c).describe()


def culprit_groups(s: RunSummary) -> list[dict[str, Any]]:
    """The VRAM failures of each variant grouped by culprit, in step order: {variant, culprit (the
    first victim's entry), message (the first victim's), victims: [step, ...]}. One leak fails every
    construction after it with the same text; a reader needs it once, then who it hit."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for row in s.cases:
        for v, cell in row.variants.items():
            if cell is not None and cell.culprit:
                group = groups.setdefault((v, cell.culprit["step"]), {"variant": v, "culprit": cell.culprit,
                                                                       "message": cell.message, "victims": []})
                group["victims"].append(row.step)
    return list(groups.values())


def _culprits(s: RunSummary) -> str:
    rows = [[g["variant"], culprit_text(g["culprit"]),
             f"{len(g['victims'])}: {', '.join(g['victims'])}", g["message"]] for g in culprit_groups(s)]
    if not rows:
        return ""
    return ("### Culprits\n\nEach engine whose memory was still held when later engines failed to start "
            "(`vram_construction`), the constructions it failed, and their message once.\n\n"
            + _table(["variant", "culprit", "failed constructions", "message"],
                     rows, MAX_TRANSITION_ROWS, "culprits"))


def _failures(s: RunSummary) -> str:
    """Every failed step of a run without a comparison (one variant): its message and culprit.
    With candidates, the transitions tables carry them."""
    if s.transitions:
        return ""
    rows = []
    for row in s.cases:
        for v, cell in row.variants.items():
            if cell.outcome == "failed":
                rows.append([v, row.step, cell.failure_class, _see_culprit(cell.culprit) or cell.message])
    if not rows:
        return ""
    return "### Failures\n\n" + _table(["variant", "step", "class", "message"], rows,
                                        MAX_TRANSITION_ROWS, "failures")


def _transitions(s: RunSummary) -> str:
    out = []
    for name, t in s.transitions.items():
        rows = [[c.transition, c.step, _side(c.baseline), _side(c.candidate), _message(c)]
                for kind in SHOWN_TRANSITIONS for c in t.cases if c.transition == kind]
        if rows:
            out.append(f"### {_cell(s.baseline)} → {_cell(name)}\n\n" + _table(
                ["transition", "step", "baseline", "candidate", "message"], rows, MAX_TRANSITION_ROWS,
                "transitions"))
    return "\n".join(out)


def _cost(s: RunSummary) -> str:
    rows = costs.cost_rows(s)
    if not rows:
        return ""
    return "### Teardown cost (seconds waiting for memory)\n\n" + _table(costs.COST_HEADER, rows, len(rows), "variants")


def _leaks(s: RunSummary) -> str:
    rows = costs.leak_rows(s)
    if not rows:
        return ""
    return (f"### Leaks\n\n_{costs.LEAKS_NOTE}._\n\n"
            + _table(costs.LEAK_HEADER, rows, costs.MAX_LEAK_ROWS, "leaks"))


def _listing(title: str, items: list | None) -> str:
    if not items:
        return ""
    def line(item: Any) -> str:
        if isinstance(item, dict):
            return ", ".join(f"{k}={v}" for k, v in item.items())
        return str(item)
    return f"### {title}\n\n" + "".join(f"- {_cell(line(i), 500)}\n" for i in items)


def _fit(text: str) -> str:
    data = text.encode("utf-8", errors="backslashreplace")
    if len(data) <= MAX_BYTES:
        return text
    cut = data[: MAX_BYTES - 200].decode("utf-8", errors="ignore")
    cut = cut[: cut.rfind("\n") + 1]
    return cut + "\n_Report truncated to fit the 1 MiB annotation limit; see summary.json._\n"
