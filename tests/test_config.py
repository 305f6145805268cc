"""The real configs compose, and config mistakes are one-line errors before any training starts."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from talkinghead.config import compose, group_options
from talkinghead.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("experiment", group_options("experiment"))
def test_every_experiment_composes(experiment: str) -> None:
    cfg = compose("meta_learn", [f"experiment={experiment}", "data.root=/nonexistent"]
                  if experiment != "embedded" else [f"experiment={experiment}"])
    assert cfg.name == experiment
    assert cfg.model.generator.image_size == cfg.model.image_size
    assert cfg.data.K == cfg.K


def test_paper_experiment_uses_the_papers_numbers() -> None:
    cfg = compose("meta_learn", ["experiment=vox2_paper", "data.root=/x"])
    assert cfg.model.image_size == 256 and cfg.model.emb_dim == 512 and cfg.K == 8
    w = cfg.loss.weights
    assert (w.content_vgg19, w.content_vggface, w.feature_matching) == (0.15, 0.025, 10.0)
    # The match term takes FSTH's weight, not the paper's 10: at 10 the rehearsal collapses ê (docs/paper.md row 28).
    assert w.match == 0.01
    assert (cfg.optim.g.lr, cfg.optim.d.lr) == (5e-5, 2e-4)


def test_command_line_group_override_wins_over_experiment() -> None:
    cfg = compose("meta_learn", ["experiment=embedded", "model=paper"])
    assert cfg.model.image_size == 256


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["experiment=embeded"], "unknown experiment 'embeded' (did you mean embedded?)"),
        (["model.generator.num_rse=3"], "no config key 'model.generator.num_rse'; did you mean model.generator.num_res"),
        (["trainer=gpuu"], "unknown trainer 'gpuu'"),
    ],
)
def test_config_mistakes_are_explained(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        compose("meta_learn", overrides)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_cli_prints_one_line_and_exits_2() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "talkinghead.cli", "meta-learn", "experiment=nope"],
        capture_output=True, text=True, cwd=Path.cwd(), timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: unknown experiment 'nope'")


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "talkinghead.cli", "meta-learn", *args], capture_output=True,
                          text=True, cwd=Path.cwd(), timeout=300, env={**os.environ, **(env or {})})


def test_missing_weight_file_is_one_line_naming_make_weights(tmp_path: Path) -> None:
    proc = run_cli("loss=paper", f"run_dir={tmp_path}", env={"TALKINGHEAD_WEIGHTS": str(tmp_path / "none")})
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip()
    assert err.count("\n") == 0 and "make weights" in err and "loss.weights.content_vgg19=0" in err
    assert not (tmp_path / "checkpoints").exists(), "nothing may start before the error"


def test_K_larger_than_the_frames_of_a_video_is_one_line(tmp_path: Path) -> None:
    proc = run_cli("K=40", f"run_dir={tmp_path}")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: K=40 needs K+1=41 frames but videos have 32; lower K or raise frames_per_video"


def test_missing_data_root_is_one_line(tmp_path: Path) -> None:
    proc = run_cli("experiment=vox2_paper", f"data.root={tmp_path / 'nope'}", f"run_dir={tmp_path}")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.strip().count("\n") == 0


def test_gpu_trainer_without_a_gpu_says_to_use_cpu(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = run_cli("trainer=gpu", f"run_dir={tmp_path}", "logger=csv")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "add trainer=cpu" in proc.stderr


def test_the_metrics_block_is_written_once_for_meta_learning_and_evaluation() -> None:
    from omegaconf import OmegaConf

    experiments = Path(__file__).resolve().parents[1] / "experiments"
    for f in (experiments / "callbacks" / "default.yaml", experiments / "evaluate.yaml"):
        assert "csim_encoder" not in f.read_text(), f"{f.name} repeats the metrics block"
    meta = OmegaConf.to_container(compose("meta_learn").callbacks.metrics, resolve=True)
    ev = OmegaConf.to_container(compose("evaluate").metrics, resolve=True)
    assert meta == ev and meta["csim_encoder"] == "dlib"
    assert compose("evaluate", ["metrics.csim_encoder=arcface"]).metrics.csim_encoder == "arcface"
    assert compose("meta_learn", ["callbacks.metrics.csim_encoder=arcface"]).callbacks.metrics.csim_encoder == "arcface"
