"""``make rehearse``: the paper configuration's optimisation at VoxCeleb2's scale, on this CPU, in minutes.

E, G and D at the paper's widths (64 -> 512 channels, 512-d embeddings) at a reduced image size (64² by default:
attention at the same relative resolutions, 8² in the down-sampling parts and 16² in G's up-sampling part), the
paper's losses (``loss=paper``; the VGG19 / VGGFace content terms are off when their weight files are absent, as
they are here, and the run says so) and optimisers (``optim=paper``), and a W table with VoxCeleb2's row count
(145k videos; ``--rows 1090000`` for the per-utterance count), trained on episodes of the embedded synthetic heads:
the data's videos are mapped to rows spread evenly over the table (row = video x (rows // videos)).

It prints over time ‖ê‖, ‖W_i‖, mean |W_i - ê_i|, D's hinge and real/fake scores and G's terms; at the end the
memory of W and of its optimiser state, the step time, the per-step cost of W's update (``--w-cost``: bytes of W's
gradient, i.e. what DDP all-reduces for W, optimiser state, step time, dense before vs sparse after) and a verdict.
Exit status: 0 healthy, 1 ê collapsed (its norm fell below ``--collapse-fraction`` of its start), 2 a term went
non-finite.

    python -m talkinghead.tools.rehearse                      # the paper config as it is (plain, sparse W)
    python -m talkinghead.tools.rehearse model.discriminator.w_norm=spectral    # FSTH's normalised W (the old default)
    python -m talkinghead.tools.rehearse --quick              # tiny sizes, seconds (tests)
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

#: Exit statuses.
HEALTHY, COLLAPSED, NON_FINITE = 0, 1, 2
VOX2_VIDEOS = 145_000        # VoxCeleb2 dev: ~145k videos (the paper's W_i: one per video)
VOX2_UTTERANCES = 1_090_000  # ... and ~1.09M utterances (one row per utterance: the per-utterance table)
COLUMNS = ("e_norm", "w_norm", "w_e_dist", "d_hinge", "d_real", "d_fake", "g_adversarial", "g_feature_matching",
           "g_match", "g_content_vgg19", "g_content_vggface", "g_total")


def paper_overrides(size: int, quick: bool) -> list[str]:
    """Overrides that turn ``experiment=vox2_paper`` into the CPU rehearsal: synthetic episodes at ``size``²,
    the paper's widths (or tiny ones with ``quick``), attention at the paper's relative resolutions."""
    down, up = max(size // 8, 8), max(size // 4, 8)  # 32² and 64² at 256²
    ov = ["experiment=vox2_paper", "data=synthetic", "trainer=cpu", "logger=csv", f"model.image_size={size}",
          f"model.embedder.attn_res={down}", f"model.discriminator.attn_res={down}",
          f"model.generator.attn_res_down={down}", f"model.generator.attn_res_up={up}",
          f"model.generator.num_down={int(math.log2(size)) - 2}", "data.num_identities=12", "data.test_identities=2",
          "data.videos_per_identity=2", "data.frames_per_video=16", "data.heldout_frames=10",
          "optim.g_first=false"]  # D's updates first: the order docs/training.md's rehearsal numbers were measured in
    if quick:
        ov += ["K=2", "model.emb_dim=32", "model.embedder.base_channels=8", "model.embedder.max_channels=32",
               "model.generator.base_channels=8", "model.generator.max_channels=32", "model.generator.num_res=1",
               "model.discriminator.base_channels=8", "model.discriminator.max_channels=32"]
    return ov


class SpreadRows:
    """A training loader whose video indices are spread over a table of ``rows`` rows (index x stride)."""

    def __init__(self, loader: Any, stride: int) -> None:
        self.loader, self.stride = loader, stride

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict]:
        for batch in self.loader:
            batch = dict(batch)
            batch["video_index"] = batch["video_index"] * self.stride
            yield batch


@dataclass
class Trace:
    """What the rehearsal saw: one row of ``COLUMNS`` per logged iteration."""

    rows: list[dict[str, float]] = field(default_factory=list)
    non_finite: str | None = None
    step_s: list[float] = field(default_factory=list)


class Watch(pl.Callback):
    """Prints ``COLUMNS`` every ``every`` iterations, stops at the first non-finite term."""

    def __init__(self, trace: Trace, every: int, out: Any = sys.stdout) -> None:
        self.trace, self.every, self.out, self._t = trace, every, out, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.trace.step_s.append(time.perf_counter() - self._t)
        m = {k.split("/", 1)[1]: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
        bad = [k for k, v in m.items() if not math.isfinite(v)]
        it = pl_module.iteration
        if bad:
            self.trace.non_finite = f"iteration {it}: {', '.join(sorted(bad))} not finite"
            trainer.should_stop = True
        row = {"iteration": it, **{k: m[k] for k in COLUMNS if k in m}}
        self.trace.rows.append(row)
        if it == 1 or it % self.every == 0 or bad:
            if len(self.trace.rows) == 1 or it == 1:
                print("  iter " + " ".join(f"{c[:12]:>12}" for c in COLUMNS), file=self.out)
            print(f"{it:6d} " + " ".join(f"{row[c]:12.4g}" if c in row else f"{'-':>12}" for c in COLUMNS),
                  file=self.out, flush=True)


def tensor_bytes(t: torch.Tensor) -> int:
    if t.is_sparse:
        t = t.coalesce()
        return tensor_bytes(t.indices()) + tensor_bytes(t.values())
    return t.numel() * t.element_size()


def state_bytes(optimizer: torch.optim.Optimizer, param: torch.Tensor) -> int:
    """Bytes of the optimiser's moments for ``param`` (its step counter left out)."""
    return sum(tensor_bytes(v) for k, v in optimizer.state.get(param, {}).items() if torch.is_tensor(v) and k != "step")


def w_cost(rows: int, w_norm: str, batch: int = 8, emb_dim: int = 512, steps: int = 4,
           d_steps: int = 2) -> dict[str, float]:
    """Per-step cost of W in D's update for a table of ``rows`` rows (the trunk left out: it does not depend on
    the table): bytes of W's gradient (what DDP all-reduces for W), its optimiser's state, ms per D step of W
    (row lookup, spectral norm's power iteration and sigma when normalised, hinge backward, optimiser step)."""
    from talkinghead.losses.adversarial import hinge_d_loss
    from talkinghead.modules.meta_learning import sparse_adam_like
    from talkinghead.nets.discriminator import ProjectionDiscriminator
    from talkinghead.nets.spectral import power_iteration

    import functools

    torch.manual_seed(0)
    D = ProjectionDiscriminator(rows, 16, emb_dim, 8, 8, None, w_norm=w_norm)
    table = D.w_table
    adam = functools.partial(torch.optim.Adam, lr=2e-4, betas=(0.0, 0.999), eps=1e-5)
    opt = sparse_adam_like(adam)([table]) if D.sparse_w else adam([table])
    grad_b, times = 0, []
    for s in range(steps * d_steps + 1):
        idx = torch.randint(0, rows, (batch,))
        v_real, v_fake = torch.rand(batch, emb_dim), torch.rand(batch, emb_dim)
        t0 = time.perf_counter()
        if not D.sparse_w:
            power_iteration(D.W)
        w_i = D.w_rows(idx)
        loss = hinge_d_loss((v_real * w_i).sum(1), (v_fake * w_i.detach()).sum(1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_b = tensor_bytes(table.grad)
        opt.step()
        if s:  # the first step allocates the optimiser's state
            times.append(time.perf_counter() - t0)
    return {"rows": rows, "w_norm": w_norm, "W_bytes": tensor_bytes(table), "grad_bytes": grad_b,
            "state_bytes": state_bytes(opt, table), "ms_per_d_step": 1000 * sum(times) / len(times)}


def print_w_cost(rows_list: Sequence[int], batch: int, out: Any = sys.stdout) -> list[dict[str, float]]:
    mb = 2 ** 20
    results = []
    print(f"\nW's per-step cost (batch {batch}, 512-d; W's part of one D step; DDP all-reduces W's gradient):", file=out)
    print(f"  {'rows':>9} {'design':<38} {'W MiB':>8} {'grad MiB/step':>14} {'Adam state MiB':>15} {'ms/D step':>10}",
          file=out)
    for rows in rows_list:
        for w_norm, design in (("spectral", "before: SN'd W, dense grad, Adam"),
                               ("none", "after: plain W, sparse rows, SparseAdam")):
            r = w_cost(rows, w_norm, batch)
            results.append(r)
            print(f"  {rows:>9} {design:<38} {r['W_bytes'] / mb:8.1f} {r['grad_bytes'] / mb:14.3f} "
                  f"{r['state_bytes'] / mb:15.1f} {r['ms_per_d_step']:10.2f}", file=out, flush=True)
    print("  (SparseAdam's two moments are full-size tensors, but a step reads and writes only the batch's rows;"
          " dense Adam reads and writes all of them every step)", file=out)
    return results


@dataclass
class Result:
    status: int
    verdict: str
    trace: Trace
    e_start: float
    e_end: float


def rehearse(overrides: Sequence[str] = (), rows: int = VOX2_VIDEOS, iterations: int = 150, size: int = 64,
             batch: int = 2, every: int = 10, collapse_fraction: float = 0.1, quick: bool = False,
             out: Any = sys.stdout) -> Result:
    """Run the rehearsal (see the module docstring); returns its status, verdict and trace."""
    from omegaconf import OmegaConf

    from talkinghead.config import compose
    from talkinghead.training.build import build_module, resolve_speed

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose("meta_learn", [*paper_overrides(size, quick), f"data.batch_size={batch}", f"run_dir={tmp}",
                                     *overrides])
        content = "config"
        w = cfg.loss.weights
        if w.content_vgg19 or w.content_vggface:
            try:
                from talkinghead.training.build import build_content_loss

                content = build_content_loss(cfg.loss)
            except Exception as exc:  # noqa: BLE001 - the weight files are absent here
                print(f"content terms off: {str(exc).splitlines()[0][:150]}", file=out)
                OmegaConf.update(cfg, "loss.weights.content_vgg19", 0.0)
                OmegaConf.update(cfg, "loss.weights.content_vggface", 0.0)
                content = None
        pl.seed_everything(int(cfg.seed), verbose=False)
        dm = __import__("hydra.utils", fromlist=["instantiate"]).instantiate(cfg.data)
        dm.prepare_data()
        dm.setup("fit")
        n = dm.num_videos
        if rows < n:
            raise ValueError(f"--rows {rows} is less than the data's {n} videos")
        speed = resolve_speed(cfg)
        module = build_module(cfg, rows, speed, content_loss=content)
        D = module.discriminator
        d_steps = int(cfg.optim.d_steps_per_g)
        print(f"rehearsal: {size}², K={cfg.K}, batch {batch}, {iterations} iterations; E/G/D widths "
              f"{cfg.model.embedder.base_channels}->{cfg.model.embedder.max_channels}, emb {cfg.model.emb_dim}, "
              f"E pools {module.embedder.pool}; "
              f"W {rows} x {cfg.model.emb_dim} (w_norm={D.w_norm}; the data's {n} videos spread over it); "
              f"match weight {module.loss_weights['match']}, FM weight {module.loss_weights['feature_matching']}; "
              f"{speed.precision}", file=out, flush=True)
        trace = Trace()
        trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=iterations * (1 + d_steps), max_epochs=-1,
                             logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, limit_val_batches=0, precision=speed.precision,
                             callbacks=[Watch(trace, every, out)], num_sanity_val_steps=0)
        trainer.fit(module, train_dataloaders=SpreadRows(dm.train_dataloader(), rows // n))
        opts = module.trainer.optimizers
        table = D.w_table
        opt_state = sum(state_bytes(o, table) for o in opts)
    es = [r["e_norm"] for r in trace.rows if "e_norm" in r]
    e_start = es[0] if es else float("nan")
    tail = es[-max(1, len(es) // 10):]
    e_end = sum(tail) / len(tail) if tail else float("nan")
    steady = trace.step_s[min(3, len(trace.step_s) - 1):] if trace.step_s else [float("nan")]
    mb = 2 ** 20
    print(f"\nW: {tensor_bytes(table) / mb:.1f} MiB, its optimiser state {opt_state / mb:.1f} MiB; "
          f"step (one iteration: {d_steps} D + 1 G/E update) {sum(steady) / len(steady):.2f} s "
          f"(median {sorted(steady)[len(steady) // 2]:.2f} s)", file=out)
    if trace.non_finite:
        status, verdict = NON_FINITE, f"NON-FINITE: {trace.non_finite}"
    elif not es or e_end < collapse_fraction * e_start:
        status = COLLAPSED
        verdict = (f"COLLAPSE: ‖ê‖ {e_start:.3g} -> {e_end:.3g} (mean of the last {len(tail)} logged), below "
                   f"{collapse_fraction:g} of its start")
    else:
        status = HEALTHY
        verdict = (f"OK: ‖ê‖ {e_start:.3g} -> {e_end:.3g} (>= {collapse_fraction:g} of its start), every term "
                   "finite")
    print(f"verdict: {verdict}", file=out, flush=True)
    return Result(status, verdict, trace, e_start, e_end)


def read_log(path: str | Path) -> tuple[str, list[dict[str, float]]]:
    """A rehearsal's printed output (``make rehearse > run.log``): its label (W's normalisation, the match
    weight and E's pooling order when it is FSTH's, from the ``rehearsal:`` line) and the printed rows
    (``iteration`` plus ``COLUMNS``)."""
    import re

    label, rows = None, []
    for line in Path(path).read_text(errors="replace").splitlines():
        if line.startswith("rehearsal:"):
            norm = re.search(r"w_norm=(\w+)", line)
            weight = re.search(r"match weight ([\d.eE+-]+)", line)
            pool = re.search(r"E pools (\w+)", line)
            label = (f"W {'normalised' if norm and norm.group(1) == 'spectral' else 'plain'}, match weight "
                     f"{float(weight.group(1)):g}" if norm and weight else line[:40])
            if pool and pool.group(1) == "relu_sum":
                label += ", E: ReLU then sum (FSTH)"
        fields = line.split()
        if len(fields) == 1 + len(COLUMNS) and fields[0].isdigit():
            rows.append({"iteration": float(fields[0]),
                         **{c: (float(v) if v != "-" else math.nan) for c, v in zip(COLUMNS, fields[1:])}})
    if label is None or not rows:
        raise ValueError(f"{path}: not the output of a rehearsal (no 'rehearsal:' line or no printed rows)")
    return label, rows


def read_logs(logs: Sequence[str | Path]) -> list[tuple[str, list[dict[str, float]]]]:
    """``read_log`` of each log, with distinct labels: logs whose settings label the same (two seeds, or logs
    printed before a setting was) are told apart by their file names."""
    runs = [read_log(p) for p in logs]
    labels = [label for label, _ in runs]
    return [(f"{label} ({Path(p).stem})" if labels.count(label) > 1 else label, rows)
            for p, (label, rows) in zip(logs, runs)]


def chart_logs(logs: Sequence[str | Path], out: str | Path) -> Path:
    """‖ê‖, ‖W_i‖, mean |W_i - ê_i| and D's hinge over iterations of several rehearsals, as one PNG."""
    from talkinghead.tools.charts import Panel, line_chart

    runs = read_logs(logs)

    def series(col: str) -> dict[str, tuple[list[float], list[float]]]:
        return {label: ([r["iteration"] for r in rows], [r[col] for r in rows]) for label, rows in runs}

    start = runs[0][1][0]["e_norm"]
    return line_chart([
        Panel("norm of e_hat (batch mean)", series("e_norm"), log=True, floor=1e-3,
              hlines={"collapse: 0.1 of the start": 0.1 * start}),
        Panel("mean |W_i - e_hat_i| per entry", series("w_e_dist"), log=True),
        Panel("norm of W_i", series("w_norm"), log=True),
        Panel("D's hinge loss", series("d_hinge")),
    ], out)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m talkinghead.tools.rehearse", description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. model.discriminator.w_norm=spectral")
    p.add_argument("--rows", type=int, default=VOX2_VIDEOS, help=f"W rows (default {VOX2_VIDEOS}: VoxCeleb2's "
                   f"videos; {VOX2_UTTERANCES}: its utterances)")
    p.add_argument("--iterations", type=int, default=None, help="G/E updates (default 150; --quick 30)")
    p.add_argument("--size", type=int, default=None, help="image side (default 64; --quick 32)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--every", type=int, default=None, help="print every N iterations")
    p.add_argument("--collapse-fraction", type=float, default=0.1,
                   help="ê has collapsed when its final norm is below this fraction of its start (default 0.1)")
    p.add_argument("--quick", action="store_true", help="tiny widths, 32², 30 iterations: a smoke run, seconds")
    p.add_argument("--w-cost", default="145000,1090000",
                   help="row counts for the W cost table (comma-separated; 'none' skips it)")
    p.add_argument("--chart", nargs="+", metavar=("OUT.png", "LOG"), default=None,
                   help="draw the printed outputs of earlier rehearsals (make rehearse > run.log) into OUT.png, "
                        "then exit (no training)")
    a = p.parse_args(argv)
    if a.chart:
        if len(a.chart) < 2:
            p.error("--chart needs OUT.png and at least one log")
        print(f"wrote {chart_logs(a.chart[1:], a.chart[0])}")
        return HEALTHY
    iterations = a.iterations or (30 if a.quick else 150)
    result = rehearse(a.overrides, rows=a.rows, iterations=iterations, size=a.size or (32 if a.quick else 64),
                      batch=a.batch, every=a.every or (5 if a.quick else 10),
                      collapse_fraction=a.collapse_fraction, quick=a.quick)
    if a.w_cost != "none":
        print_w_cost([int(r) for r in a.w_cost.split(",")], batch=8)
    return result.status


if __name__ == "__main__":
    sys.exit(main())
