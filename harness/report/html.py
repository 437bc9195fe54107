"""report.html: one self-contained page a maintainer can read on a phone.

The verdict on top; per variant a device-memory timeline (inline SVG: memory used over time, the
phases of every step shaded, each teardown action marked, the ``gpu_memory_utilization`` start
threshold drawn, failures marked with a red cross); then the steps × variants table, a failed
cell opening its error, traceback and log tail. No network, no script libraries: inline CSS and
SVG only, so the file can be mailed, archived as a CI artifact or opened offline. Every piece of
text from the run is escaped.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from harness.results.junitread import Case
from harness.results.summary import Cell, RunSummary
from harness.results.verdict import step_of
from harness.report import costs, html_failures
from harness.report import timeline as timelines
from harness.report.markdown import STATUS, verdict_words
# the drawings live in svg.py
from harness.report.svg import ACTION_COLOURS, FAIL, PHASE_COLOURS, _gib, esc, memory_chart

MAX_TEXT = 6000  # characters of a traceback or log tail shown in a cell
MAX_FAILED_REPEATS = 5  # failed repeats opened per cell; the rest are counted

CSS = """
:root{--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg:#f6f8fa}
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;margin:0;
 color:var(--fg);background:var(--bg)}
main{max-width:1320px;margin:0 auto;padding:12px}
h1{margin:0;font-size:1.45em;line-height:1.25}
h2{font-size:1.15em;margin:18px 0 8px}
h3{font-size:1em;margin:0 0 4px}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.92em}
.verdict{border-radius:8px;padding:12px 16px;color:#fff;background:var(--warn)}
.verdict.pass{background:var(--ok)}.verdict.fail{background:var(--bad)}
.verdict ul{margin:6px 0 0;padding-left:1.2em}
.verdict li{margin:2px 0;overflow-wrap:anywhere}
.facts{color:var(--muted);margin:8px 2px 0;font-size:.9em;overflow-wrap:anywhere}
.banner{border:2px solid var(--warn);background:#fff8c5;border-radius:6px;padding:6px 10px;margin-top:8px}
.grid+.scroll{margin-top:12px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,440px),1fr));gap:12px}
.card{background:#fff;border:1px solid var(--line);border-radius:8px;padding:10px;min-width:0}
.card .sub{color:var(--muted);font-size:.88em;margin-bottom:4px}
.card.failed{border-color:var(--bad)}
svg.chart{width:100%;height:auto;display:block}
svg.chart text{font-size:11px;fill:#1f2328}
.legend{display:flex;flex-wrap:wrap;gap:2px 12px;font-size:.82em;color:var(--muted);margin-top:4px}
.legend span{white-space:nowrap}
.sw{display:inline-block;width:12px;height:10px;border-radius:2px;margin-right:4px;vertical-align:-1px}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;background:#fff;width:100%}
th,td{border:1px solid var(--line);padding:5px 7px;vertical-align:top;text-align:left}
th{background:#eef1f4;font-weight:600}
td.step{overflow-wrap:break-word;min-width:9em}
td.step .n{color:var(--muted);margin-right:4px}
tr.changed td.step{box-shadow:inset 3px 0 0 var(--warn)}
.badge{display:inline-block;border-radius:10px;padding:0 8px;font-size:.85em;font-weight:600;color:#fff}
.badge.passed{background:var(--ok)}.badge.failed{background:var(--bad)}.badge.skipped{background:#8c959f}
.cls{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.85em;color:var(--bad)}
.t{color:var(--muted);font-size:.82em}
details{margin-top:3px}
summary{cursor:pointer;color:#0969da;font-size:.88em}
details .msg{font-weight:600;overflow-wrap:anywhere;margin:4px 0}
.tail{display:flex;flex-direction:column-reverse;max-height:22em;overflow:auto;margin:4px 0;
 border:1px solid var(--line);border-radius:4px;background:var(--bg)}
pre{white-space:pre-wrap;overflow-wrap:anywhere;font-size:12px;padding:6px;margin:0}
.muted{color:var(--muted)}
footer{color:var(--muted);font-size:.8em;margin:18px 2px}
@media (max-width:640px){body{font-size:14px}main{padding:6px}.verdict{padding:10px 12px}
 svg.chart text{font-size:15px}th,td{padding:4px 5px}.phases{display:none}td.step{min-width:7em}}
"""


#: After layout, each chart records how wide its line was drawn and where the chart sits (CSS
#: pixels): a headless browser reading the DOM back can tell a drawn chart from an empty or broken
#: one, and side-by-side charts from stacked ones.
DRAWN_JS = """
document.querySelectorAll("svg.chart").forEach(function (svg) {
  var w = 0;
  svg.querySelectorAll("polyline.memory, polyline.series").forEach(function (p) {
    w = Math.max(w, p.getBoundingClientRect().width);
  });
  var box = svg.getBoundingClientRect();
  svg.setAttribute("data-drawn", String(Math.round(w)));
  svg.setAttribute("data-box", [box.left, box.top, box.width, box.height].map(Math.round).join(","));
});
"""


def page(title: str, body: str, css: str = "") -> str:
    """A self-contained HTML page (report.html, trend.html) around ``body``."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<meta name=\"color-scheme\" content=\"light\">"
            f"<title>{esc(title)}</title><style>{CSS}{css}</style></head>\n<body><main>\n{body}\n</main>"
            f"<script>{DRAWN_JS}</script></body></html>\n")


# --------------------------------------------------------------------------- the run report
def render(summary: RunSummary) -> str:
    """The page of a run, from its summary and the parsed run directory it was decided from
    (``summary.results``: the cases, log tails and events); reads no file."""
    results = summary.results
    if results is None:
        raise ValueError("report.html is rendered from a freshly decided summary (summary.results)")
    run_dir = results.run_dir
    variants = list(summary.variants)
    parsed = {v: results.variants.get(v) for v in variants}
    cases = {v: r.cases if r else [] for v, r in parsed.items()}
    suite = next((r.properties for r in parsed.values() if r and r.properties), {})
    repeats = int(summary.repeat or 1)
    ran = {v: {_step_repeat(c, repeats): c.time for c in cases[v]} for v in variants}
    tls = timelines.from_results(results, variants, ran)
    for v in variants:
        if v not in tls and cases.get(v):
            tls[v] = timelines.from_cases(v, cases[v])
    step_numbers = {row.step: i + 1 for i, row in enumerate(summary.cases)}
    body = [_verdict(summary, suite), _charts(summary, variants, tls, cases, step_numbers, repeats),
            _steps(summary, variants, cases, repeats, step_numbers), html_failures.transitions(summary),
            _counts(summary), _rows("Teardown cost (seconds waiting for memory)", costs.COST_HEADER,
                                    costs.cost_rows(summary)),
            _rows("Leaks", costs.LEAK_HEADER, costs.leak_rows(summary)[:costs.MAX_LEAK_ROWS], costs.LEAKS_NOTE),
            _listing("Substitutions", summary.substitutions),
            _listing("Orphaned processes", summary.orphans),
            f"<footer>run directory <code>{esc(run_dir.name)}</code> · summary.json holds every number shown here"
            "</footer>"]
    title = f"{summary.scenario or 'run'}: {STATUS.get(summary.verdict, 'UNKNOWN')}"
    return page(title, "\n".join(b for b in body if b), html_failures.CSS)


def _verdict(s: RunSummary, props: dict[str, str]) -> str:
    verdict = s.verdict
    status = STATUS.get(verdict, "UNKNOWN")
    kind = {"PASS": "pass", "FAIL": "fail"}.get(status, "inconclusive")
    reasons = "".join(f"<li>{esc(r)}</li>" for r in s.reasons)
    facts = [f"run <code>{esc(s.run_id)}</code>", f"baseline <code>{esc(s.baseline)}</code>",
             f"{esc(s.repeat)} repeat(s)", f"backend {esc(s.backend)}",
             f"platform {esc(s.platform)}"]
    if s.rehearsal:
        facts.insert(0, "<b>rehearsal</b> (this machine lacks the scenario's platform: see Substitutions)")
    if props.get("device_name"):
        facts.append(esc(props["device_name"]))
    if props.get("vllm_version"):
        facts.append(f"vLLM {esc(props['vllm_version'])}")
    if s.started:
        facts.append(f"started {esc(s.started)}")
    out = [f"<section class=\"verdict {kind}\" id=\"verdict\"><h1>{esc(s.scenario or 'run')}: "
           f"<span class=\"status\">{esc(status)}</span> — {esc(verdict_words(s))}</h1><ul>{reasons}</ul></section>"]
    if s.incomplete:
        out.append("<div class=\"banner\"><b>INCOMPLETE</b>: the run was interrupted; "
                   "these results cover only the steps that ran.</div>")
    out.append(f"<p class=\"facts\">{' · '.join(facts)}</p>")
    return "\n".join(out)


# --------------------------------------------------------------------------- charts
def _charts(s, variants, tls, cases, step_numbers, repeats) -> str:
    if not tls:
        return "<h2>Device memory</h2><p class=\"muted\">No memory samples in this run directory.</p>"
    actions = sorted({a.name for tl in tls.values() for a in tl.actions})
    fit = s.platform == "cpu"
    colours = {name: ACTION_COLOURS[i % len(ACTION_COLOURS)] for i, name in enumerate(actions)}
    cards = []
    for v in variants:
        tl = tls.get(v)
        if tl is None:
            cards.append(f"<div class=\"card\"><h3>{esc(v)}</h3><p class=\"muted\">no results</p></div>")
            continue
        classes = _classes_by_step(cases.get(v, []), repeats)
        failed = [st for st in tl.steps if st.outcome != "passed"]
        lat = [float(c.properties["release_latency_s"]) for c in cases.get(v, [])
               if _num(c.properties.get("release_latency_s")) is not None]
        sub = [f"{len(tl.steps) - len(failed)}/{len(tl.steps)} steps passed",
               f"peak {_gib(tl.peak)}", f"{tl.duration:.1f} s"]
        if lat:
            sub.append(f"release latency median {_median(lat):.2f} s")
        if tl.source == "junit":
            sub.append("approximate: rebuilt from JUnit, no events.jsonl")
        card_cls = "card failed" if failed else "card"
        base = " <span class=\"muted\">(baseline)</span>" if v == s.baseline else ""
        cards.append(
            f"<div class=\"{card_cls}\" data-variant=\"{esc(v)}\">"
            f"<h3>{esc(v)}{base}</h3>"
            f"<div class=\"sub\">{esc(' · '.join(sub))}</div>"
            f"{memory_chart(tl, colours, classes, step_numbers, fit=fit)}{_legend(tl, colours)}</div>")
    # a shared time axis would squeeze a baseline that fails fast into a sliver of a long fixed run,
    # its step numbers printed over each other: each chart spans its own run, and says how long
    spans = ", ".join(f"{v} {tls[v].duration:.1f} s" for v in variants if v in tls)
    note = (f"<p class=\"muted\">Each chart's time axis spans its own variant's run ({esc(spans)})"
            + ("; memory axes fit the trace (host memory: a CPU rehearsal has no device memory)" if fit else "")
            + ".</p>")
    return "<h2>Device memory over time</h2>\n" + note + "<div class=\"grid charts\">" + "\n".join(cards) + "</div>"


def _step_repeat(case: Case, repeats: int) -> tuple[str, int]:
    """(step, repeat) of a JUnit case: ``step`` alone, or ``step[r]`` with repeats."""
    m = re.search(r"\[(\d+)\]$", case.name) if repeats > 1 else None
    return step_of(case.name, repeats), int(m.group(1)) if m else 0


def _classes_by_step(cases: list[Case], repeats: int) -> dict[tuple[str, int], str]:
    return {_step_repeat(c, repeats): c.failure_class.value for c in cases if c.failed}


def _legend(tl: timelines.Timeline, colours: dict[str, str]) -> str:
    phases = [p for p in ("settle", "construct", "workload", "teardown") if any(s.phase == p for s in tl.spans)]
    # the threshold's value is said here, not on the plot, where it would sit on the memory line
    last = next((st.threshold for st in reversed(tl.steps) if st.threshold is not None), None)
    threshold = f": the next engine starts only below {_gib(last)} used" if last is not None else ""
    items = ["<span><span class=\"sw\" style=\"background:#24292f;height:3px\"></span>memory used</span>",
             f"<span><span class=\"sw\" style=\"background:none;border-top:2px dashed {FAIL};height:0\"></span>"
             f"start threshold{esc(threshold)}</span>"]
    items += [f"<span><span class=\"sw\" style=\"background:{PHASE_COLOURS[p]};opacity:.35\"></span>{esc(p)}</span>"
              for p in phases]
    for name in sorted({a.name for a in tl.actions}):
        items.append(f"<span><span class=\"sw\" style=\"background:{colours[name]};border-radius:50%;width:10px\">"
                     f"</span>{esc(name)}</span>")
    if any(st.events_end is not None for st in tl.steps):
        items.append("<span><span class=\"sw\" style=\"background:none;border-top:2px dotted #24292f;height:0\">"
                     "</span>no samples (worker hung or died)</span>")
    if any(st.outcome != "passed" for st in tl.steps):
        items.append(f"<span><b style=\"color:{FAIL}\">✕</b> failure</span>")
    return "<div class=\"legend\">" + "".join(items) + "</div>"


def _num(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


# --------------------------------------------------------------------------- steps table
TIMED = (("settle", "settle"), ("construct", "construct"), ("workload", "workload"), ("teardown", "teardown"))


def _steps(s, variants, cases, repeats, step_numbers) -> str:
    per = {v: _group(cases.get(v, []), repeats) for v in variants}
    head = "".join(f"<th>{esc(v)}</th>" for v in variants)
    rows = []
    for row in s.cases:
        step = row.step
        cells = row.variants
        outcomes = {c.outcome for c in cells.values()}
        changed = " class=\"changed\"" if len(outcomes) > 1 else ""
        tds = "".join(_cell(cells.get(v), per[v].get((row.classname, step), []), repeats)
                      for v in variants)
        rows.append(f"<tr{changed}><td class=\"step\"><span class=\"n\">{step_numbers.get(step, '')}</span>"
                    f"{_breakable(step)}</td>{tds}</tr>")
    return ("<h2>Steps</h2>\n<div class=\"scroll\"><table class=\"steps\"><thead><tr><th>step</th>"
            f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")


def _breakable(name: str) -> str:
    """Escaped, with break opportunities after ``_``, ``/``, ``.``, ``[``, so long test names wrap
    at their parts on a phone."""
    return re.sub(r"([_/.\[-])", r"\1<wbr>", esc(name))


def _group(cases: list[Case], repeats: int) -> dict[tuple[str, str], list[Case]]:
    out: dict[tuple[str, str], list[Case]] = {}
    for c in cases:
        out.setdefault((c.classname, step_of(c.name, repeats)), []).append(c)
    return out


def _timings(cases: list[Case]) -> str:
    ran = [c for c in cases if c.outcome.value != "skipped"]
    if not ran:
        return ""
    total = f"{sum(c.time for c in ran) / len(ran):.2f} s"
    parts = []
    for key, label in TIMED:
        vals = [v for v in (_num(c.properties.get(f"{key}_s")) for c in ran) if v is not None]
        if vals:
            parts.append(f"{label} {sum(vals) / len(vals):.2f}")
    lat = [v for v in (_num(c.properties.get("release_latency_s")) for c in ran) if v is not None]
    if lat:
        parts.append(f"release {_median(lat):.2f}")
    detail = " · ".join(parts) + (" (mean of runs)" if len(ran) > 1 else "")
    return f"{esc(total)}<span class=\"phases\"> · {esc(detail)}</span>" if detail else esc(total)


def _cell(cell: Cell | None, cases: list[Case], repeats: int) -> str:
    if not cell:
        return "<td class=\"muted\">-</td>"
    outcome = cell.outcome
    if repeats > 1:
        label = f"{cell.failed}/{cell.runs} failed" if cell.failed else \
            f"{cell.runs}/{cell.runs} passed" if cell.runs else "skipped"
    else:
        label = outcome
    badge = f"<span class=\"badge {esc(outcome)}\">{esc(label)}</span>"
    cls = f" <span class=\"cls\">{esc(cell.failure_class)}</span>" if outcome == "failed" else ""
    cls += html_failures.culprit(cell.culprit)
    timing = f"<div class=\"t\">{_timings(cases)}</div>" if cases else ""
    details = ""
    failed = [c for c in cases if c.failed]
    if failed:
        parts = []
        for c in failed[:MAX_FAILED_REPEATS]:
            tail = c.log
            parts.append(
                (f"<div class=\"muted\">{esc(c.name)}</div>" if repeats > 1 else "")
                + f"<div class=\"msg\">{esc(c.message)}</div>"
                + (f"<div class=\"muted\">traceback</div>{_pre(c.text)}" if c.text.strip()
                   and c.text.strip() != c.message.strip() else "")
                + (f"<div class=\"muted\">log tail</div>{_pre(tail)}" if tail.strip() else
                   "<div class=\"muted\">log tail: empty (the step wrote no log output)</div>"))
        if len(failed) > MAX_FAILED_REPEATS:
            parts.append(f"<div class=\"muted\">{len(failed) - MAX_FAILED_REPEATS} more failed run(s): "
                         "see the JUnit file</div>")
        details = f"<details><summary>error and log</summary>{''.join(parts)}</details>"
    elif outcome == "skipped" and cases:
        details = f"<div class=\"t\">{esc(cases[0].message)}</div>"
    return f"<td class=\"{esc(outcome)}\">{badge}{cls}{timing}{details}</td>"


def _pre(text: str, limit: int = MAX_TEXT) -> str:
    """The end of a long text, in a box that opens scrolled to its bottom (where the error is)."""
    text = text if len(text) <= limit else "…" + text[-limit:]
    return f"<div class=\"tail\"><pre>{esc(text)}</pre></div>"


# --------------------------------------------------------------------------- the rest
def _counts(s: RunSummary) -> str:
    counts = s.counts
    if not counts:
        return ""
    classes = [c for c in next(iter(counts.values()))["classes"]
               if c == "vram_construction" or any(v["classes"].get(c) for v in counts.values())]
    head = "".join(f"<th>{esc(h)}</th>" for h in ["variant", "cases", "passed", "failed", "skipped", *classes])
    rows = "".join("<tr>" + "".join(f"<td>{esc(x)}</td>" for x in
                                    [v, c["cases"], c["passed"], c["failed"], c["skipped"],
                                     *(c["classes"][k] for k in classes)]) + "</tr>" for v, c in counts.items())
    return f"<h2>Counts</h2>\n<div class=\"scroll\"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>"


def _rows(title: str, header: list[str], rows: list[list[str]], note: str = "") -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(x)}</td>" for x in row) + "</tr>" for row in rows)
    note = f"<p class=\"muted\">{esc(note)}</p>" if note else ""
    return (f"<h2>{esc(title)}</h2>{note}\n<div class=\"scroll\"><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table></div>")


def _listing(title: str, items: Iterable | None) -> str:
    items = list(items or [])
    if not items:
        return ""

    def line(item: Any) -> str:
        return ", ".join(f"{k}={v}" for k, v in item.items()) if isinstance(item, dict) else str(item)
    return f"<h2>{esc(title)}</h2><ul>" + "".join(f"<li>{esc(line(i))}</li>" for i in items) + "</ul>"
