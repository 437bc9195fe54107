"""The parts of report.html that say why steps failed: the transitions table (as report.md has it)
and the culprit line of a VRAM failure. Rendering only: everything comes from summary.json."""

from __future__ import annotations

from typing import Any

from harness.report.markdown import SHOWN_TRANSITIONS, culprit_text
from harness.report.svg import esc

CSS = (".culprit{font-size:.85em;margin-top:2px;overflow-wrap:anywhere}"
       "table.transitions td.message{max-width:60ch;overflow-wrap:anywhere}")


def culprit(cell: dict[str, Any] | None) -> str:
    """The culprit of a failed cell, visible beside its class (not folded away with the log)."""
    if not cell or not cell.get("culprit"):
        return ""
    return f"<div class=\"culprit\">{esc(culprit_text(cell['culprit']))}</div>"


def _side(side: dict[str, Any] | None) -> str:
    if not side:
        return "-"
    return f"failed: {side['failure_class']}" if side["outcome"] == "failed" else side["outcome"]


def transitions(s: dict[str, Any]) -> str:
    """baseline → candidate: the regressions, still-failing and fixed steps with their messages."""
    out = []
    for name, t in (s.get("transitions") or {}).items():
        rows = []
        for kind in SHOWN_TRANSITIONS:
            for c in t["cases"]:
                if c["transition"] != kind:
                    continue
                failed = next((x for x in (c["candidate"], c["baseline"]) if x and x["outcome"] == "failed"), None)
                message = esc(failed["message"]) if failed else ""
                rows.append(f"<tr class=\"{esc(kind.replace(' ', '-'))}\"><td>{esc(kind)}</td><td>{esc(c['step'])}</td>"
                            f"<td>{esc(_side(c['baseline']))}</td><td>{esc(_side(c['candidate']))}</td>"
                            f"<td class=\"message\">{message}{culprit(failed)}</td></tr>")
        if rows:
            out.append(f"<h2>{esc(s.get('baseline'))} → {esc(name)}</h2>\n<div class=\"scroll\">"
                       "<table class=\"transitions\"><thead><tr><th>transition</th><th>step</th><th>baseline</th>"
                       f"<th>candidate</th><th>message</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>")
    return "\n".join(out)
