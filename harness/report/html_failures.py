"""The parts of report.html that say why steps failed: the transitions table (as report.md has it)
and the culprit line of a VRAM failure. Rendering only: everything comes from summary.json."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.report.markdown import SHOWN_TRANSITIONS, culprit_text
from harness.report.svg import esc

if TYPE_CHECKING:
    from harness.results.summary import RunSummary

CSS = (".culprit{font-size:.85em;margin-top:2px;overflow-wrap:anywhere}"
       "table.transitions td.message{max-width:60ch;overflow-wrap:anywhere}")


def culprit(found: dict[str, Any] | None) -> str:
    """A failed cell's culprit (summary.json's entry), visible beside its class (not folded away
    with the log)."""
    if not found:
        return ""
    return f"<div class=\"culprit\">{esc(culprit_text(found))}</div>"


def _side(side: dict[str, Any] | None) -> str:
    if not side:
        return "-"
    return f"failed: {side['failure_class']}" if side["outcome"] == "failed" else side["outcome"]


def transitions(s: RunSummary) -> str:
    """baseline → candidate: the regressions, still-failing and fixed steps with their messages."""
    out = []
    for name, t in s.transitions.items():
        rows = []
        for kind in SHOWN_TRANSITIONS:
            for c in t.cases:
                if c.transition != kind:
                    continue
                failed = next((x for x in (c.candidate, c.baseline) if x and x["outcome"] == "failed"), None)
                message = esc(failed["message"]) if failed else ""
                rows.append(f"<tr class=\"{esc(kind.replace(' ', '-'))}\"><td>{esc(kind)}</td><td>{esc(c.step)}</td>"
                            f"<td>{esc(_side(c.baseline))}</td><td>{esc(_side(c.candidate))}</td>"
                            f"<td class=\"message\">{message}{culprit(failed.get('culprit') if failed else None)}</td></tr>")
        if rows:
            out.append(f"<h2>{esc(s.baseline)} → {esc(name)}</h2>\n<div class=\"scroll\">"
                       "<table class=\"transitions\"><thead><tr><th>transition</th><th>step</th><th>baseline</th>"
                       f"<th>candidate</th><th>message</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>")
    return "\n".join(out)
