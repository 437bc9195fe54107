"""The nightly trend (results/history.py's model), shown: a rich table per scenario in the terminal, and
trend.html with its pass-rate and release-latency charts (drawn by svg.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from harness.report.console import shown
from harness.report.html import page
from harness.report.svg import SERIES_COLOURS, esc, line_chart

if TYPE_CHECKING:  # the model is the history's; a view needs only its attributes
    from harness.results.history import NightCell, ScenarioTrend


def _skipped(cell: NightCell) -> str:
    return f", {cell.skipped} skipped" if cell.skipped else ""


def _pct(cell: NightCell) -> str:
    rate = cell.pass_rate
    return "-" if rate is None else f"{rate:.0%} ({cell.passed}/{cell.runs}{_skipped(cell)})"


def _lat(cell: NightCell) -> str:
    return "-" if cell.latency is None else f"{cell.latency:.2f} s"


def print_trend(trends: list[ScenarioTrend], console: Any = None) -> None:
    """Per scenario: one row per night, one column per variant (pass rate, median release latency).
    History records are input: their names are shown as text, never as rich markup or escapes."""
    console = console or Console(highlight=False)
    for tr in trends:
        table = Table(title=f"{shown(tr.scenario)}: last {len(tr.nights)} night(s)",
                      caption="pass rate (passed/ran) · median release latency")
        table.add_column("night", no_wrap=True)
        for v in tr.variants:
            table.add_column(shown(v) + (" (baseline)" if v == tr.baseline else ""))
        table.add_column("verdict")
        table.add_column("vLLM")
        for n in tr.nights:
            cells = [tr.cells[v][n] for v in tr.variants]
            versions = sorted({x for c in cells for x in c.versions})
            row = [shown(n)]
            for c in cells:
                colour = "" if c.pass_rate is None else "green" if c.pass_rate == 1 and not c.skipped else "red"
                text = f"{c.pass_rate:.0%} {c.passed}/{c.runs}{_skipped(c)} · {_lat(c).replace(' s', 's')}" \
                    if c.pass_rate is not None else "-"
                row.append(f"[{colour}]{text}[/]" if colour else text)
            row += [shown(", ".join(sorted(set(tr.verdicts[n]))) or "-"), shown(", ".join(versions) or "-")]
            table.add_row(*row)
        console.print(table)
        if tr.flaky:
            console.print(f"[bold red]newly flaky[/] in {shown(tr.scenario)} (passed in every earlier night, "
                          "failed recently):")
            for f in tr.flaky:
                console.print(shown(f"  - {f.variant} / {f.step}: failed {f.failures}/{f.runs} run(s) on "
                                    f"{', '.join(f.failed_nights)} ({f.failure_class or 'failed'})"))
        else:
            console.print(f"{shown(tr.scenario)}: no newly flaky step")


# --------------------------------------------------------------------------- the trend page
def render_html(trends: list[ScenarioTrend]) -> str:
    body = ["<h1>Nightly trend</h1>"]
    for tr in trends:
        colours = {v: SERIES_COLOURS[i % len(SERIES_COLOURS)] for i, v in enumerate(tr.variants)}
        legend = "".join(f"<span><span class=\"sw\" style=\"background:{c}\"></span>{esc(v)}"
                         f"{' (baseline)' if v == tr.baseline else ''}</span>" for v, c in colours.items())
        rates = {v: [None if tr.cells[v][n].pass_rate is None else 100 * tr.cells[v][n].pass_rate
                     for n in tr.nights] for v in tr.variants}
        lats = {v: [tr.cells[v][n].latency for n in tr.nights] for v in tr.variants}
        body.append(f"<h2>{esc(tr.scenario)}</h2>")
        if tr.flaky:
            items = "".join(f"<li><b>{esc(f.variant)} / {esc(f.step)}</b>: failed {f.failures}/{f.runs} run(s) on "
                            f"{esc(', '.join(f.failed_nights))} ({esc(f.failure_class or 'failed')}); passed in "
                            f"all {f.earlier_nights} earlier night(s)</li>" for f in tr.flaky)
            body.append(f"<div class=\"card failed flaky\"><h3 style=\"color:#cf222e\">Newly flaky steps</h3>"
                        f"<ul>{items}</ul></div>")
        else:
            body.append("<p class=\"muted\">No newly flaky step.</p>")
        body.append("<div class=\"grid\">"
                    f"<div class=\"card\"><h3>Pass rate per night (%)</h3>"
                    f"{line_chart(tr.nights, rates, colours, y_max=100, unit='%')}"
                    f"<div class=\"legend\">{legend}</div></div>"
                    f"<div class=\"card\"><h3>Median release latency per night (s)</h3>"
                    f"{line_chart(tr.nights, lats, colours, unit='s')}"
                    f"<div class=\"legend\">{legend}</div></div></div>")
        head = "".join(f"<th>{esc(v)} pass rate</th><th>{esc(v)} release</th>" for v in tr.variants)
        rows = []
        for n in tr.nights:
            tds = "".join(f"<td>{esc(_pct(tr.cells[v][n]))}</td><td>{esc(_lat(tr.cells[v][n]))}</td>"
                          for v in tr.variants)
            versions = sorted({x for v in tr.variants for x in tr.cells[v][n].versions})
            rows.append(f"<tr><td>{esc(n)}</td>{tds}<td>{esc(', '.join(sorted(set(tr.verdicts[n]))) or '-')}</td>"
                        f"<td>{esc(', '.join(versions) or '-')}</td></tr>")
        body.append(f"<div class=\"scroll\"><table><thead><tr><th>night</th>{head}<th>verdict</th><th>vLLM</th>"
                    f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")
    return page("Nightly trend", "\n".join(body))


def print_flaky(tests: list[Any], min_runs: int, console: Any = None) -> None:
    """`trend --flaky`: tests by flip rate, then failure rate, with the runs behind each figure;
    tests that never failed are counted, not listed; too few runs are marked, not ranked."""
    console = console or Console(highlight=False)
    shown_tests = [t for t in tests if t.failures]
    table = Table(title="flakiness: outcome flips between runs of the same code revision",
                  caption=f"ranked when at least {min_runs} runs of one revision are behind the flip rate")
    for column in ("rank", "scenario", "variant", "test", "flip rate (flips/pairs, runs)", "failure rate (failed/ran)"):
        table.add_column(column)
    rank = 0
    for t in shown_tests:
        rank += t.enough
        flip = "-" if t.flip_rate is None else f"{t.flip_rate:.0%} ({t.flips}/{t.pairs}, {t.flip_runs} runs)"
        table.add_row(str(rank) if t.enough else f"too few runs ({t.flip_runs})", shown(t.scenario),
                      shown(t.variant), shown(t.test), flip, f"{t.failure_rate:.0%} ({t.failures}/{t.runs})")
    console.print(table)
    console.print(f"{len(tests) - len(shown_tests)} test(s) passed in every run", markup=False)
