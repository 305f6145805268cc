"""DDP on 2 CPU processes (gloo) with the real trainer=ddp config: every rank ends with identical parameters."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_ddp_two_cpu_processes_stay_in_sync(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    cmd = [
        sys.executable, str(ROOT / "tests" / "ddp_check.py"), str(tmp_path),
        "iterations=4", "data.batch_size=2", "data.num_identities=6", "data.test_identities=2",
        "data.videos_per_identity=2", "K=2", "callbacks.val_every_n_iterations=1000",
        "callbacks.sample_every_n_iterations=1000", "trainer.enable_progress_bar=false",
    ]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["iteration"] == r1["iteration"] == 4
    assert "discriminator.W.weight" in r0["state"]
    for key, v0 in r0["state"].items():
        assert torch.equal(v0, r1["state"][key]), f"rank 0 and rank 1 differ in {key}"
    # and training moved the parameters (so equality is not trivial)
    assert r0["state"]["discriminator.W.weight"].abs().sum() > 0
