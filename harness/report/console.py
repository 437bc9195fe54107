"""What people see in the terminal: progress while running, a compact table and the verdict at the end.

On a terminal, a live `rich` display (variant, step i/N, phase, elapsed, device memory); in CI logs
(not a terminal), one plain line per step, so the log reads top to bottom.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from harness.device import GIB
from harness import events as vocab
from harness.report.markdown import culprit_groups, culprit_text
from harness.results import cost, leaks
from harness.results.summary import RunSummary
from harness.xmlsafe import one_line, printable



def shown(text: Any) -> str:
    """Text from the run inside rich markup: printable, and its brackets not read as markup."""
    return escape(printable(str(text)))


def _gib(n: float | None) -> str:
    return "-" if n is None else f"{n / GIB:.2f} GiB"


class Progress:
    """Receives worker events (runner.RunOptions.progress) and shows them."""

    def __init__(self, total_steps: int, console: Console | None = None, live: bool | None = None):
        self.console = console or Console(stderr=False, highlight=False)
        self.total = total_steps
        self.live_enabled = self.console.is_terminal if live is None else live
        self.state: dict[str, Any] = {}
        self._live: Live | None = None

    def __enter__(self) -> "Progress":
        if self.live_enabled:
            # get_renderable: redrawn on every refresh, so the elapsed time moves during a long phase
            self._live = Live(console=self.console, refresh_per_second=4, transient=True,
                              get_renderable=self._render)
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def _render(self) -> Table:
        s = self.state
        table = Table.grid(padding=(0, 2))
        if "step" not in s:
            where = f"[bold]{shown(s['variant'])}[/] r{s.get('repeat', 0)}: " if "variant" in s else ""
            table.add_row(f"{where}[dim]starting the worker…[/]")
            return table
        elapsed = time.monotonic() - s["t0"] if "t0" in s else 0.0
        table.add_row(f"[bold]{shown(s.get('variant', ''))}[/] r{s.get('repeat', 0)}",
                      f"step {s.get('index', -1) + 1}/{self.total} {shown(s.get('step', ''))}",
                      shown(s.get("phase", "")), f"{elapsed:.1f}s", _gib(s.get("used")))
        return table

    def __call__(self, variant: str, repeat: int, ev: dict) -> None:
        kind = ev.get("event")
        if (variant, repeat) != (self.state.get("variant"), self.state.get("repeat")):
            self.state = {"variant": variant, "repeat": repeat}  # a new worker: no step yet
        if kind == vocab.COLLECTED:  # a pytest suite: the tests are known once collected
            self.total = len(ev["tests"])
        elif kind == vocab.STEP_START:
            self.state.update(step=ev["step"], index=ev["index"], t0=time.monotonic(), phase="", peak=None)
            self.state.setdefault("builds", []).append((ev["step"], []))
        elif kind == vocab.PHASE_START:
            self.state["phase"] = ev["phase"]
        elif kind == vocab.MEMORY:
            self.state["used"] = ev["used_bytes"]
            self.state["peak"] = max(self.state.get("peak") or 0, ev["used_bytes"])
            if self.state.get("builds"):
                self.state["builds"][-1][1].append((ev.get("label", ""), ev["used_bytes"]))
                if "build" in ev:  # a pytest suite's test: its engine builds' readings
                    self.state.setdefault("tests", set()).add(ev["step"])
        elif kind == vocab.STEP_END:
            self._step_line(variant, repeat, ev)
        if self._live is not None:
            self._live.refresh()

    def worker_done(self, variant: str, repeat: int, steps: list) -> None:
        """Lines for the steps the worker never finished itself (timeout, crash, skipped after them):
        the runner decided those, so no step_end event announced them."""
        for res in steps:
            if res.step in self.state.setdefault("ended", set()):
                continue
            mark = {"skipped": "[yellow]SKIP[/]"}.get(str(res.outcome), "[red]FAIL[/]")
            why = f"  {res.failure_class}: {_one_line(res.message)}" if res.message else ""
            self.console.print(Text.from_markup(mark) + Text(printable(f" {variant} r{repeat} {res.step}{why}")),
                               highlight=False, soft_wrap=True)

    def _step_line(self, variant: str, repeat: int, ev: dict) -> None:
        self.state.setdefault("ended", set()).add(ev["step"])
        ok = ev["outcome"] == "passed"
        mark = "[green]PASS[/]" if ok else "[yellow]SKIP[/]" if ev["outcome"] == "skipped" else "[red]FAIL[/]"
        why = "" if ok else self._why(ev)
        if ev["outcome"] == "skipped":  # a pytest suite's skipped test
            why = f"  {_one_line(str(ev.get('message', '')))}"
        elapsed = time.monotonic() - self.state.get("t0", time.monotonic())
        line = f" {variant} r{repeat} {ev['step']} ({elapsed:.1f}s, {self._peak(ev)}){why}"
        self.console.print(Text.from_markup(mark) + Text(printable(line)), highlight=False, soft_wrap=True)

    def _peak(self, ev: dict) -> str:
        """The peak of the step's device-memory readings (report.html's "peak", per step); a step
        that never built an engine has none of its own: its readings are an earlier engine's."""
        readings = self.state["builds"][-1][1] if self.state.get("builds") else []
        built = any(label == "after_construct" for label, _ in readings)
        if not built and (ev.get("phase") in ("construct", "settle") or any(label for label, _ in readings)):
            return "no engine built"
        return f"peak {_gib(self.state.get('peak'))}"

    def _why(self, ev: dict) -> str:
        """The failure; a message and culprit already printed for an earlier step of this worker
        are named, not repeated: every victim of one leak fails with the same text."""
        message = _one_line(str(ev.get("message", "")))
        head = f"  {ev.get('phase', '')}: "
        found = self._culprit(ev)
        if found is None:
            return f"{head}{ev.get('error_type', '')}: {message}"
        said = self.state.setdefault("culprits", {})
        if found.step not in said:
            said[found.step] = (ev["step"], message)
            return f"{head}{ev.get('error_type', '')}: {message} — {found.describe()}"
        first, first_message = said[found.step]
        if message == first_message:
            return f"{head}same error as {first} (culprit: {found.step})"
        return f"{head}{ev.get('error_type', '')}: {message} — culprit: {found.step}, as for {first}"

    def _culprit(self, ev: dict):
        """The culprit (harness.results.culprit.Culprit) of a construction that failed for lack of
        memory; None otherwise."""
        from harness.model import FailureClass, Phase
        from harness.results import classify, culprit

        if ev.get("phase") != "construct":
            return None
        cls = classify.classify_step(Phase.CONSTRUCT, str(ev.get("error_type", "")), str(ev.get("message", "")),
                                     str(ev.get("traceback", "")), "")
        if cls is not FailureClass.VRAM_CONSTRUCTION:
            return None
        tests = self.state.get("tests", set())
        builds = [culprit.Build(name, culprit.step_readings(readings, name in tests))
                  for name, readings in self.state.get("builds", [])]
        return culprit.find(builds, len(builds) - 1) if builds else None


def _one_line(text: str) -> str:
    """A message on one line, whole unless it is very long (report.md and the JUnit keep it all)."""
    return one_line(text, 2000, "… (see report.md)")


def summary_table(summary: RunSummary, console: Console | None = None) -> None:
    """Steps x variants with outcome and class, then the verdict and its reasons."""
    console = console or Console(highlight=False)
    variants = summary.variants
    table = Table(title=shown(f"{summary.scenario or ''} — {summary.run_id or ''}"), show_lines=False)
    table.add_column("step")
    for v in variants:
        table.add_column(shown(v))
    unproven = {(v, c.classname, c.step) for v, t in summary.transitions.items()
                for c in t.cases if c.transition == "not proven"}
    for row in summary.cases:
        cells = []
        for v in variants:
            cell = row.variants.get(v)
            if not cell:
                cells.append("-")
            elif (v, row.classname, row.step) in unproven:  # passed, but built no engine
                cells.append("[yellow]not proven[/]")
            elif cell.outcome == "passed":
                cells.append("[green]passed[/]")
            elif cell.outcome == "skipped":
                cells.append("[yellow]skipped[/]")
            else:
                cells.append(f"[red]{shown(cell.failure_class)}[/]")
        table.add_row(shown(row.step), *cells)
    console.print(table)
    colour = "green" if summary.exit_code == 0 else "red"
    if summary.incomplete:
        console.print("[yellow bold]INCOMPLETE[/]: the run was interrupted; partial results only")
    for group in culprit_groups(summary):  # each leak once, then the constructions it failed
        console.print(printable(f"{group['variant']}: {culprit_text(group['culprit'])}; it failed "
                                f"{len(group['victims'])} construction(s): {', '.join(group['victims'])}"),
                      markup=False, highlight=False)
    rehearsal = " [yellow](rehearsal: this machine lacks the scenario's platform)[/]" if summary.rehearsal else ""
    console.print(f"verdict: [bold {colour}]{shown(summary.verdict)}[/]{rehearsal}")
    for reason in summary.reasons:
        console.print(f"  - {printable(reason)}", markup=False)
    for variant, c in summary.teardown_cost.items():
        if c.get("total_s", 0) >= 0.05:  # a variant that never waited has no cost to tell
            console.print(f"teardown cost: {printable(cost.describe(variant, c, summary.baseline))}",
                          markup=False)
    found = summary.leaks
    if found:
        console.print(f"leaks: {len(found)} test(s) left memory behind (run.py report RUN_DIR --leaks)")


def print_leaks(summary: RunSummary, console: Console | None = None) -> None:
    """`run.py report RUN_DIR --leaks`: every test that left memory behind, largest first."""
    console = console or Console(highlight=False)
    found = summary.leaks
    if not found:
        console.print("no leaks: every test gave back what it took", markup=False)
    for leak in found:
        console.print(printable(leaks.describe(leak)), markup=False, soft_wrap=True)


def plain_lines() -> bool:
    return not sys.stdout.isatty()
