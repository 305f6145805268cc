"""`talkinghead meta-learn` end to end through the CLI, with the default W&B logger (offline here)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_meta_learn_cli_writes_checkpoint_samples_and_an_offline_wandb_run(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    env["HOME"] = str(tmp_path)  # no ~/.netrc: W&B must go offline by itself
    proc = subprocess.run(
        [sys.executable, "-m", "talkinghead.cli", "meta-learn", "iterations=3", "data.batch_size=2",
         f"run_dir={tmp_path / 'run'}", "callbacks.sample_every_n_iterations=2",
         "callbacks.metrics_every_n_iterations=1000", "callbacks.val_every_n_iterations=1000"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "samples" / "latest.png").is_file() and (run / "samples" / "iter_000002.png").is_file()
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb")), "an offline W&B run with its data file"
    assert "checkpoint:" in proc.stdout and "W&B run:" in proc.stdout and "wandb sync" in proc.stdout
