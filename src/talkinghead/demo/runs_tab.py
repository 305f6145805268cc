"""The page's Runs tab: a meta-learning run's sample grids over iterations and loss curves (``api.list_runs``,
``api.loss_curves``), and the tables ``make evaluate`` wrote (``api.list_evaluations``).  Pictures are sent as
pixels, never as paths under runs/."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from PIL import Image

from talkinghead import api
from talkinghead.demo.server import DemoError, PageServer, error_line, safe_child
from talkinghead.errors import TalkingHeadError


class RunsTab(PageServer):
    """The Runs tab's handlers."""

    def runs(self) -> list[str]:
        return [r.name for r in api.list_runs(self.config.runs_dir)]

    def show_run(self, name: str | None) -> tuple[str, list[Any], Any]:
        """-> (status markdown, sample grids over iterations, loss curves as a long table)"""
        import pandas as pd  # Gradio's dependency (the demo extra), imported where used

        empty = pd.DataFrame({"step": [], "value": [], "metric": []})
        try:
            if not name:
                return "No run chosen (meta-learn one with `make meta-learn`).", [], empty
            safe_child(Path(self.config.runs_dir), str(name))
            run = next((r for r in api.list_runs(self.config.runs_dir) if r.name == name), None)
            if run is None:
                raise DemoError(f"no run named {name!r}")
            curves = api.loss_curves(run)
            rows = [(s, v, k) for k, pts in curves.items()
                    if k.startswith(("train/", "val/")) and k != "train/iteration" for s, v in pts]
            df = pd.DataFrame(rows, columns=["step", "value", "metric"]) if rows else empty
            grids = [(_image(p), f"iteration {i}") for i, p in run.samples]
            lines = [
                f"**{run.name}**: {len(run.samples)} sample grids (K sources | target landmarks | generated | real)"
                + (f", up to iteration {run.iterations}" if run.iterations else "")
                + ("; checkpoint: `checkpoints/last.ckpt`" if run.checkpoint else ""),
            ]
            if not rows:
                lines.append("No CSV log in this run (loss curves need `logger=csv`; W&B runs: see W&B).")
            return "\n\n".join(lines), grids, df
        except TalkingHeadError as exc:
            return error_line(exc), [], empty

    def evaluations(self) -> tuple[str, list[Any]]:
        found = api.list_evaluations(self.config.evaluate_dir)
        if not found:
            return "No evaluation yet: `make evaluate` writes its tables here.", []
        text = "\n\n".join(f"### {e.name}\n\n{e.table}" for e in found[:5])
        return text, [(_image(e.examples), e.name) for e in found[:5] if e.examples]


def _image(path: Path) -> np.ndarray:
    """A picture of the runs folder as pixels: the page sends a copy, never a path under runs/."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def layout(gr: Any, demo: RunsTab) -> SimpleNamespace:
    """The Runs tab's components: a meta-learning run's curves and sample grids, and the evaluations."""
    with gr.Tab("Runs"):
        with gr.Row():
            run = gr.Dropdown(choices=demo.runs(), value=(demo.runs() or [None])[0], label="Meta-learning run",
                              elem_id="run")
            refresh = gr.Button("Refresh")
        run_status = gr.Markdown()
        curves = gr.LinePlot(x="step", y="value", color="metric", label="Losses (CSV logger)", height=300)
        grids = gr.Gallery(label="Sample grids over iterations", columns=2, height="auto")
        gr.Markdown("### Evaluations (`make evaluate`)")
        eval_text = gr.Markdown()
        eval_examples = gr.Gallery(label="Example frames: per T, sources | landmarks | FT | FF | real", columns=1,
                                   height="auto")

    return SimpleNamespace(**{k: v for k, v in locals().items() if k not in ("gr", "demo")})


def wire(gr: Any, demo: RunsTab, tabs: SimpleNamespace, app: Any) -> None:
    """Refresh and choose a run; the page opens on the newest."""
    r = tabs.runs
    views = [r.run, r.run_status, r.grids, r.curves, r.eval_text, r.eval_examples]

    def on_refresh(name):
        runs = demo.runs()
        name = name if name in runs else (runs[0] if runs else None)
        status, grids, curves = demo.show_run(name)
        text, examples = demo.evaluations()
        return gr.update(choices=runs, value=name), status, grids, curves, text, examples

    r.refresh.click(on_refresh, [r.run], views, api_name="runs")
    r.run.change(lambda n: demo.show_run(n), [r.run], [r.run_status, r.grids, r.curves], api_name="show_run")
    app.load(on_refresh, [r.run], views, api_name=False)
