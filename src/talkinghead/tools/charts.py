"""Line charts as PNG files, drawn with Pillow (no plotting library is installed here): training curves in docs.

``line_chart(panels, path)``: one panel per metric, stacked on one x range, each with its series (label -> (x, y)),
optional log y-axis, shared x-axis label, a legend beside each panel.  Values that are not finite (or <= 0 on a log axis) break
a line rather than failing.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: Series colours (colour-blind-friendly Okabe-Ito), cycled.
COLOURS = ((0, 114, 178), (213, 94, 0), (0, 158, 115), (204, 121, 167), (230, 159, 0), (86, 180, 233))


@dataclass
class Panel:
    """One metric: ``series`` label -> (x values, y values); ``log``: log10 y-axis."""

    title: str
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]]
    log: bool = False
    hlines: Mapping[str, float] = field(default_factory=dict)  # label -> y of a dashed reference line
    floor: float | None = None  # log axis: values below it (0 too) are drawn on it, the axis labelled "<= floor"


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= n:
            step *= m
            break
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def _fmt(v: float) -> str:
    if float(v).is_integer() and abs(v) < 1e7:
        return str(int(v))
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.1e}"


def line_chart(panels: Sequence[Panel], path: str | Path, x_label: str = "iteration", width: int = 1000,
               panel_height: int = 230) -> Path:
    """Draw ``panels`` one above the other on one x range, each with its legend to the right of its plot, into the
    PNG ``path`` (its folder is made).  Text is ASCII-safe: Pillow's default font has no glyphs for symbols such
    as ‖ or ê."""
    from PIL import Image, ImageDraw, ImageFont

    if not panels:
        raise ValueError("line_chart needs at least one panel")
    font = ImageFont.load_default(size=13)
    labels = list(dict.fromkeys(label for panel in panels for label in panel.series))
    legend_w = 40 + max(int(draw_len) for draw_len in (font.getlength(label) for label in labels))
    left, right, top, bottom = 70, 20 + legend_w, 26, 34
    img = Image.new("RGB", (width, panel_height * len(panels)), "white")
    draw = ImageDraw.Draw(img)
    all_x = [float(x) for panel in panels for xv, _ in panel.series.values() for x in xv if math.isfinite(float(x))]
    for p_i, panel in enumerate(panels):
        y0 = p_i * panel_height
        for s_i, label in enumerate(panel.series):  # this panel's legend, beside its plot
            lx, ly = width - legend_w + 6, y0 + top + 8 + 18 * s_i
            draw.line((lx, ly, lx + 22, ly), fill=COLOURS[labels.index(label) % len(COLOURS)], width=3)
            draw.text((lx + 30, ly), label, fill="black", font=font, anchor="lm")
        box = (left, y0 + top, width - right, y0 + panel_height - bottom)

        def tr(v: float) -> float | None:
            if panel.log and panel.floor is not None and math.isfinite(v):
                v = max(v, panel.floor)
            if not math.isfinite(v) or (panel.log and v <= 0):
                return None
            return math.log10(v) if panel.log else v

        xs = [float(x) for xv, _ in panel.series.values() for x in xv]
        ys = [t for _, yv in panel.series.values() for y in yv if (t := tr(float(y))) is not None]
        ys += [t for v in panel.hlines.values() if (t := tr(float(v))) is not None]
        if not xs or not ys:
            raise ValueError(f"panel {panel.title!r} has no finite values to draw")
        xs = all_x or xs  # one x range for every panel, so that the panels line up
        x_lo, x_hi = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
        y_lo, y_hi = min(ys), max(ys)
        pad = (y_hi - y_lo) * 0.05 or 0.5
        y_lo, y_hi = y_lo - pad, y_hi + pad

        def px(x: float, t: float) -> tuple[float, float]:
            return (box[0] + (x - x_lo) / (x_hi - x_lo) * (box[2] - box[0]),
                    box[3] - (t - y_lo) / (y_hi - y_lo) * (box[3] - box[1]))

        draw.rectangle(box, outline=(120, 120, 120))
        draw.text((left, y0 + 6), panel.title + ("  (log scale)" if panel.log else ""), fill="black", font=font)
        y_ticks = (range(math.ceil(y_lo), math.floor(y_hi) + 1) if panel.log else _ticks(y_lo, y_hi))
        for t in y_ticks:
            _, yy = px(x_lo, float(t))
            draw.line((box[0], yy, box[2], yy), fill=(232, 232, 232))
            text = _fmt(10 ** t if panel.log else t)
            if panel.log and panel.floor is not None and 10 ** t <= panel.floor * 1.0001:
                text = "<=" + text
            draw.text((box[0] - 6, yy), text, fill="black", font=font, anchor="rm")
        if panel.log and panel.floor is not None and y_lo <= math.log10(panel.floor) <= y_hi:
            _, yy = px(x_lo, math.log10(panel.floor))  # the floor's own label, where values below it are drawn
            draw.text((box[0] - 6, yy), "<=" + _fmt(panel.floor), fill="black", font=font, anchor="rm")
        for t in sorted({x_lo, *_ticks(x_lo, x_hi)}):
            xx, _ = px(t, y_lo)
            draw.text((xx, box[3] + 4), _fmt(t), fill="black", font=font, anchor="mt")
        for label, v in panel.hlines.items():
            t = tr(float(v))
            if t is None:
                continue
            _, yy = px(x_lo, t)
            for xx in range(int(box[0]), int(box[2]), 12):
                draw.line((xx, yy, min(xx + 6, box[2]), yy), fill=(90, 90, 90))
            draw.text((box[2] - 4, yy - 2), label, fill=(90, 90, 90), font=font, anchor="rb")
        for label, (xv, yv) in panel.series.items():
            colour = COLOURS[labels.index(label) % len(COLOURS)]
            line: list[tuple[float, float]] = []
            for x, y in [*zip(xv, yv), (math.nan, math.nan)]:
                t = tr(float(y))
                if t is None or not math.isfinite(float(x)):
                    if len(line) > 1:
                        draw.line(line, fill=colour, width=2)
                    elif line:
                        draw.ellipse((line[0][0] - 2, line[0][1] - 2, line[0][0] + 2, line[0][1] + 2), fill=colour)
                    line = []
                else:
                    line.append(px(float(x), t))
        if p_i == len(panels) - 1:
            draw.text(((box[0] + box[2]) / 2, box[3] + 18), x_label, fill="black", font=font, anchor="mt")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


#: What ``run_curves`` draws: panel title -> (metric names of a run's CSV log, log axis).
RUN_PANELS: dict[str, tuple[tuple[str, ...], bool]] = {
    "G's terms (weighted total and its parts)": (("train/g_total", "train/g_adversarial", "train/g_feature_matching",
                                                  "train/g_pixel"), False),
    "D: hinge loss, real and fake scores (health monitor's window means)": (("health/d_hinge", "health/d_real",
                                                                              "health/d_fake"), False),
    "embedding: norm of e_hat, mean |W_i - e_hat_i|": (("train/e_norm", "train/w_e_dist"), True),
    "e_hat of different persons against one person's (between / within, validation)": (("health/e_between_within",),
                                                                                        False),
    "G's output: spread across the batch / the data's, colour gap": (("health/g_spread_ratio", "health/g_colour_gap"),
                                                                     False),
    "held-out frames: L1, SSIM": (("val/l1", "val/ssim"), False),
}


def read_metrics_csv(run_dir: str | Path) -> dict[str, tuple[list[float], list[float]]]:
    """Every metric of a run's CSV logs (``<run_dir>/csv/version_*/metrics.csv``, a resumed run's versions in
    order; a later version's rows win at the same iteration): name -> (iterations, values)."""
    import csv

    files = sorted(Path(run_dir).glob("csv/version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    if not files:
        raise FileNotFoundError(f"no CSV logs under {run_dir}/csv/ (meta-learn with logger=csv writes them)")
    per: dict[str, dict[float, float]] = {}
    for f in files:
        with open(f, newline="") as fh:
            rows = list(csv.DictReader(fh))
        last_it = 0.0
        for row in rows:
            it = row.get("train/iteration") or ""
            if it:
                last_it = float(it)
            for k, v in row.items():
                if k in ("epoch", "step", "train/iteration") or v in ("", None):
                    continue
                per.setdefault(k, {})[last_it] = float(v)
    return {k: (sorted(d), [d[i] for i in sorted(d)]) for k, d in per.items()}


def run_curves(run_dir: str | Path, out: str | Path, title: str | None = None) -> Path:
    """The loss and health curves of a meta-learning run (its CSV logs) as one PNG: ``RUN_PANELS``' metrics,
    panels without any logged metric left out."""
    metrics = read_metrics_csv(run_dir)
    panels = []
    for name, (keys, log) in RUN_PANELS.items():
        series = {k.split("/", 1)[1] if not k.startswith("health/") else k: metrics[k] for k in keys if k in metrics}
        if series:
            panels.append(Panel(name, series, log=log, floor=1e-3 if log else None))
    if not panels:
        raise ValueError(f"{run_dir}: its CSV logs hold none of the charted metrics")
    return line_chart(panels, out, x_label=title or "iteration (generator updates)")


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m talkinghead.tools.charts",
                                description="Draw a meta-learning run's loss and health curves (its CSV logs) as a PNG.")
    p.add_argument("run_dir", help="the run's folder, e.g. runs/embedded (trained with logger=csv)")
    p.add_argument("out", help="the PNG to write")
    a = p.parse_args(argv)
    try:
        print(f"wrote {run_curves(a.run_dir, a.out)}")
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}")
        return 2
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
