"""Every SVG drawing of the reports: a variant's device-memory timeline (report.html), the nightly
trend's line charts (trend.html), and the axis ticks both use.

Inline SVG only (no script libraries), so a page stays one self-contained file; every piece of
text from a run is escaped.
"""

from __future__ import annotations

import html
import math
from typing import Any

from harness.device import GIB
from harness.report import timeline as timelines


PHASE_COLOURS = {"settle": "#8c959f", "construct": "#0969da", "workload": "#1a7f37", "expect": "#1a7f37",
                 "teardown": "#bf8700"}
ACTION_COLOURS = ("#8250df", "#e16f24", "#0a7ea4", "#bf3989", "#6e7781", "#2da44e", "#953800", "#1b7c83")
FAIL = "#cf222e"
SERIES_COLOURS = ("#cf222e", "#1a7f37", "#0969da", "#8250df", "#bf8700", "#1b7c83", "#bf3989", "#57606a")


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


# --------------------------------------------------------------------------- memory timeline
def memory_chart(tl: timelines.Timeline, colours: dict[str, str], classes: dict[tuple[str, int], str],
                 step_numbers: dict[str, int], width: int = 460, height: int = 270, fit: bool = False) -> str:
    """One variant's device memory as an inline SVG, on a time axis of its own run. ``fit``: the
    memory axis fits the trace, not the total (host memory on a CPU rehearsal is far larger than
    anything an engine there uses)."""
    lanes = list(colours) or sorted({a.name for a in tl.actions})  # the same lanes in every chart
    lane_h = 8
    height += lane_h * len(lanes) + (4 if lanes else 0)
    left, right, top, bottom = 50, 12, 24, 36 + lane_h * len(lanes) + (4 if lanes else 0)
    pw = width - left - right
    duration = max(tl.duration, 1e-3)
    label_rows = _label_rows([left + pw * min(max(st.start / duration, 0.0), 1.0) for st in tl.steps],
                             [len(str(step_numbers.get(st.name, st.index + 1))) for st in tl.steps])
    if any(row == 1 for row in label_rows):  # room for the second row of step numbers
        top += STEP_ROW_H
        height += STEP_ROW_H
    ph = height - top - bottom
    axis_y = top + ph + (lane_h * len(lanes) + 4 if lanes else 0)  # the time axis sits under the lanes
    ymax = float(max(tl.total or 0, tl.peak, max((st.threshold or 0 for st in tl.steps), default=0), 1))
    if fit:
        ymax = float(max(tl.peak, 1))
    if not tl.total or fit:  # rebuilt from JUnit (the device's size is unknown), or fitted: leave headroom
        ymax = nice_ticks(ymax * 1.1 / GIB, 5)[-1] * GIB
    yticks = [v for v in nice_ticks(ymax / GIB, 4) if v * GIB <= ymax * 1.0001]

    def x(t: float) -> float:
        return left + pw * min(max(t / duration, 0.0), 1.0)

    def y(b: float) -> float:
        return top + ph - ph * min(max(b / ymax, 0.0), 1.0)

    out = [f"<svg class=\"chart\" viewBox=\"0 0 {width} {height}\" role=\"img\" "
           f"aria-label=\"device memory of {esc(tl.variant)}\" xmlns=\"http://www.w3.org/2000/svg\">",
           f"<rect x=\"{left}\" y=\"{top}\" width=\"{pw}\" height=\"{ph}\" fill=\"#fff\" stroke=\"#d1d9e0\"/>"]
    # phases of every step, shaded behind everything
    for sp in tl.spans:
        colour = PHASE_COLOURS.get(sp.phase, "#8c959f")
        x0, x1 = x(sp.start), x(sp.end)
        out.append(f"<rect class=\"phase {esc(sp.phase)}\" x=\"{x0:.1f}\" y=\"{top}\" width=\"{max(x1 - x0, 0.6):.1f}\" "
                   f"height=\"{ph}\" fill=\"{colour}\" fill-opacity=\"0.16\"><title>{esc(_step_title(tl, sp.step))}: "
                   f"{esc(sp.phase)} {sp.end - sp.start:.2f} s</title></rect>")
    # axes and grid
    for v in yticks:
        yy = y(v * GIB)
        out.append(f"<line x1=\"{left}\" x2=\"{left + pw}\" y1=\"{yy:.1f}\" y2=\"{yy:.1f}\" stroke=\"#eaeef2\"/>"
                   f"<text x=\"{left - 4}\" y=\"{yy + 4:.1f}\" text-anchor=\"end\">{_num_label(v)}</text>")
    if yticks and (ymax / GIB - yticks[-1]) / (ymax / GIB) > 0.08:  # label the top: the device's size
        out.append(f"<text x=\"{left - 4}\" y=\"{top + 4}\" text-anchor=\"end\">{_num_label(round(ymax / GIB, 1))}</text>")
    out.append(f"<text x=\"4\" y=\"{top - 8}\">GiB</text>")
    for v in nice_ticks(duration, 6):
        if v > duration * 1.0001:
            continue
        xx = x(v)
        out.append(f"<line x1=\"{xx:.1f}\" x2=\"{xx:.1f}\" y1=\"{axis_y}\" y2=\"{axis_y + 4}\" stroke=\"#8c959f\"/>"
                   f"<text x=\"{xx:.1f}\" y=\"{axis_y + 16}\" text-anchor=\"middle\">{_num_label(v)}</text>")
    out.append(f"<text x=\"{left + pw}\" y=\"{height - 3}\" text-anchor=\"end\">seconds</text>")
    # repeat boundaries
    if len(tl.repeats) > 1:
        for start, r in tl.repeats:
            xx = x(start)
            out.append(f"<line x1=\"{xx:.1f}\" x2=\"{xx:.1f}\" y1=\"{top}\" y2=\"{top + ph}\" stroke=\"#57606a\" "
                       f"stroke-width=\"1.2\"/><text x=\"{xx + 2:.1f}\" y=\"{top + ph - 4}\" fill=\"#57606a\">r{r}</text>")
    # the start threshold: vLLM needs util × total free, i.e. used ≤ (1 - util) × total
    thr = _threshold_path(tl, x, y)
    if thr:
        out.append(f"<polyline class=\"threshold\" points=\"{thr}\" fill=\"none\" stroke=\"{FAIL}\" "
                   f"stroke-width=\"1.5\" stroke-dasharray=\"5 3\"/>")
    # memory used: one line per worker (repeat); a new process starts from what the device holds then.
    # Drawn as steps: a reading holds until the next one, so a hold that ends at once (ROCm's lazy
    # release, a wait_memory) is not drawn as a slow slope between two samples.
    segments: dict[int, list[str]] = {}
    for p in tl.points:
        repeat = tl.steps[p.step].repeat if 0 <= p.step < len(tl.steps) else 0
        pts = segments.setdefault(repeat, [])
        if pts:
            pts.append(f"{x(p.t):.1f},{pts[-1].split(',')[1]}")
        pts.append(f"{x(p.t):.1f},{y(p.used):.1f}")
    for repeat, pts in segments.items():
        out.append(f"<polyline class=\"memory\" data-repeat=\"{repeat}\" points=\"{' '.join(pts)}\" fill=\"none\" "
                   "stroke=\"#24292f\" stroke-width=\"2\" stroke-linejoin=\"round\"/>")
    # a hung or dead worker: no samples from its last event to when it was stopped
    for st in tl.steps:
        if st.events_end is not None and st.fail_t is not None and st.fail_t > st.events_end:
            yy = y(_used_at(tl, st.events_end))
            out.append(f"<line class=\"nosamples\" x1=\"{x(st.events_end):.1f}\" x2=\"{x(st.fail_t):.1f}\" "
                       f"y1=\"{yy:.1f}\" y2=\"{yy:.1f}\" stroke=\"#24292f\" stroke-width=\"1.5\" "
                       f"stroke-dasharray=\"2 3\"><title>{esc(_step_title(tl, st.pos))}: no samples for "
                       f"{st.fail_t - st.events_end:.1f} s: the worker stopped responding</title></line>")
    # teardown actions
    for a in tl.actions:
        if a.used is None:
            continue
        colour = colours.get(a.name, "#6e7781")
        extra = "" if a.ok else f" failed: {a.error}"
        out.append(f"<circle class=\"action\" cx=\"{x(a.t):.1f}\" cy=\"{y(a.used):.1f}\" r=\"3\" fill=\"{colour}\" "
                   f"stroke=\"#fff\" stroke-width=\"0.8\"><title>{esc(_step_title(tl, a.step))}: after {esc(a.name)}: "
                   f"{esc(_gib(a.used))}{esc(extra)}</title></circle>")
    # one lane per teardown action under the plot, so actions at the same instant stay apart
    for i, name in enumerate(lanes):
        ly = top + ph + 4 + lane_h * i + lane_h / 2
        out.append(f"<line x1=\"{left}\" x2=\"{left + pw}\" y1=\"{ly:.1f}\" y2=\"{ly:.1f}\" stroke=\"#eaeef2\"/>")
        for a in tl.actions:
            if a.name != name:
                continue
            ring = "" if a.ok else f" stroke=\"{FAIL}\" stroke-width=\"1.5\""
            out.append(f"<circle class=\"lane\" cx=\"{x(a.t):.1f}\" cy=\"{ly:.1f}\" r=\"2.8\" "
                       f"fill=\"{colours.get(name, '#6e7781')}\"{ring}><title>{esc(_step_title(tl, a.step))}: "
                       f"{esc(name)} {'ok' if a.ok else 'failed: ' + esc(a.error)}</title></circle>")
    # step numbers along the top, failures marked, in up to two rows; a number that would overprint
    # both rows' neighbours is left out (its step's line, cross and tooltips remain)
    for st, row in zip(tl.steps, label_rows):
        number = step_numbers.get(st.name, st.index + 1)
        failed = st.outcome != "passed"
        xx = x(st.start)
        out.append(f"<line x1=\"{xx:.1f}\" x2=\"{xx:.1f}\" y1=\"{top}\" y2=\"{top + ph}\" stroke=\"#afb8c1\" "
                   "stroke-width=\"0.6\"/>")
        if row is not None:
            colour = f" fill=\"{FAIL}\" style=\"fill:{FAIL};font-weight:700\"" if failed else ""
            out.append(f"<text class=\"stepno\" x=\"{xx + 2:.1f}\" y=\"{top - 6 - STEP_ROW_H * row}\"{colour}>"
                       f"{number}<title>{esc(_step_title(tl, st.pos))}</title></text>")
    for st in tl.steps:
        if st.outcome == "passed" or st.fail_t is None:
            continue
        cls = classes.get((st.name, st.repeat)) or ("crash/timeout" if st.outcome == "unfinished" else "failed")
        fx = x(st.fail_t)
        fy = y(_used_at(tl, st.fail_t))
        title = esc(f"{_step_title(tl, st.pos)}: {cls} in {st.phase or 'step'}: {st.message}"[:600])
        out.append(f"<g class=\"failure\" data-class=\"{esc(cls)}\"><title>{title}</title>"
                   f"<line x1=\"{fx:.1f}\" x2=\"{fx:.1f}\" y1=\"{top}\" y2=\"{top + ph}\" stroke=\"{FAIL}\" "
                   "stroke-width=\"1\" stroke-opacity=\"0.55\"/>"
                   f"<path d=\"M{fx - 5:.1f},{fy - 5:.1f}L{fx + 5:.1f},{fy + 5:.1f}M{fx - 5:.1f},{fy + 5:.1f}"
                   f"L{fx + 5:.1f},{fy - 5:.1f}\" stroke=\"{FAIL}\" stroke-width=\"2.6\" stroke-linecap=\"round\"/></g>")
    out.append("</svg>")
    return "".join(out)


STEP_ROW_H = 12  # px between the two rows of step numbers
DIGIT_W = 9.0  # px a digit takes: 11 px chart font, 15 px on a phone (svg.chart text in the CSS)


def _label_rows(xs: list[float], digits: list[int]) -> list[int | None]:
    """The row (0 or 1) each step number is printed in, left to right, or None where it would
    overprint the numbers already in both rows."""
    ends = [-1e9, -1e9]  # where each row's last number ends
    rows: list[int | None] = []
    for xx, n in zip(xs, digits):
        row = next((r for r in (0, 1) if xx + 2 >= ends[r] + 3), None)
        if row is not None:
            ends[row] = xx + 2 + DIGIT_W * n
        rows.append(row)
    return rows


def _step_title(tl: timelines.Timeline, pos: int) -> str:
    if 0 <= pos < len(tl.steps):
        st = tl.steps[pos]
        return f"{st.name}" + (f" r{st.repeat}" if len(tl.repeats) > 1 else "")
    return ""


def _threshold_path(tl: timelines.Timeline, x, y) -> str:
    pts: list[str] = []
    for i, st in enumerate(tl.steps):
        if st.threshold is None:
            continue
        end = tl.steps[i + 1].start if i + 1 < len(tl.steps) else tl.duration
        start = 0.0 if not pts else st.start
        yy = y(st.threshold)
        pts += [f"{x(start):.1f},{yy:.1f}", f"{x(end):.1f},{yy:.1f}"]
    return " ".join(pts)


def _used_at(tl: timelines.Timeline, t: float) -> float:
    """Memory used at ``t``: the latest sample at or before it."""
    used = tl.points[0].used if tl.points else 0
    for p in tl.points:
        if p.t > t + 1e-9:
            break
        used = p.used
    return used


def nice_ticks(maximum: float, count: int = 5) -> list[float]:
    """0, step, 2·step, ... up to at least ``maximum``, with a 1/2/2.5/5 × 10^k step."""
    if maximum <= 0 or not math.isfinite(maximum):
        return [0.0, 1.0]
    raw = maximum / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    n = math.ceil(maximum / step - 1e-9)
    return [round(i * step, 10) for i in range(n + 1)]


def _num_label(v: float) -> str:
    return f"{v:g}" if abs(v) >= 0.01 or v == 0 else f"{v:.2g}"


def _gib(b: float | None) -> str:
    return "-" if b is None else f"{b / GIB:.2f} GiB"


# --------------------------------------------------------------------------- trend
def line_chart(categories: list[str], series: dict[str, list[float | None]], colours: dict[str, str],
               y_max: float | None = None, unit: str = "", width: int = 460, height: int = 230) -> str:
    """Values per category (night) as lines; a missing value breaks the line."""
    left, right, top, bottom = 44, 12, 12, 44
    pw, ph = width - left - right, height - top - bottom
    values = [v for vs in series.values() for v in vs if v is not None]
    top_value = y_max if y_max is not None else max(values, default=1.0) * 1.1 or 1.0
    ticks = nice_ticks(top_value, 4)
    y_top = y_max if y_max is not None else ticks[-1]
    n = max(len(categories), 1)

    def x(i: int) -> float:
        return left + (pw * (i + 0.5) / n)

    def y(v: float) -> float:
        return top + ph - ph * min(max(v / y_top, 0.0), 1.0) if y_top else top + ph

    out = [f"<svg class=\"chart trend\" viewBox=\"0 0 {width} {height}\" role=\"img\" "
           "xmlns=\"http://www.w3.org/2000/svg\">",
           f"<rect x=\"{left}\" y=\"{top}\" width=\"{pw}\" height=\"{ph}\" fill=\"#fff\" stroke=\"#d1d9e0\"/>"]
    for t in ticks:
        if t > y_top * 1.0001:
            continue
        out.append(f"<line x1=\"{left}\" x2=\"{left + pw}\" y1=\"{y(t):.1f}\" y2=\"{y(t):.1f}\" stroke=\"#eaeef2\"/>"
                   f"<text x=\"{left - 4}\" y=\"{y(t) + 4:.1f}\" text-anchor=\"end\">{t:g}</text>")
    every = max(1, round(n / 8))
    for i, c in enumerate(categories):
        if i % every == 0 or i == n - 1:
            out.append(f"<text x=\"{x(i):.1f}\" y=\"{top + ph + 14}\" text-anchor=\"end\" "
                       f"transform=\"rotate(-30 {x(i):.1f} {top + ph + 14})\">{esc(c[5:] if len(c) == 10 else c)}"
                       "</text>")
    for name, vs in series.items():
        colour = colours.get(name, "#24292f")
        run: list[str] = []
        for i, v in enumerate(vs + [None]):
            if v is None:
                if run:
                    out.append(f"<polyline class=\"series\" data-series=\"{esc(name)}\" points=\"{' '.join(run)}\" "
                               f"fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>")
                run = []
                continue
            run.append(f"{x(i):.1f},{y(v):.1f}")
        for i, v in enumerate(vs):
            if v is not None:
                out.append(f"<circle cx=\"{x(i):.1f}\" cy=\"{y(v):.1f}\" r=\"3\" fill=\"{colour}\">"
                           f"<title>{esc(name)} {esc(categories[i])}: {v:.3g}{esc(unit)}</title></circle>")
    out.append("</svg>")
    return "".join(out)
