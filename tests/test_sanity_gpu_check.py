"""``make sanity`` tells a G that sees its input from one that does not; ``make gpu-check CPU=1`` runs end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_sanity_passes_on_the_embedded_data_and_fails_with_the_landmark_image_zeroed() -> None:
    from talkinghead.tools.sanity import sanity

    seeing = sanity()
    assert seeing.passed, seeing.line()
    blind = sanity(blind=True)
    assert not blind.passed, blind.line()
    assert blind.l1 > seeing.l1


def test_gpu_check_cpu_mode_completes_and_writes_its_json(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, "-m", "talkinghead.tools.gpu_check", "--cpu", "--out", str(out)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["mode"] == "cpu"
    assert {s: v["status"] for s, v in res["sections"].items()} == dict.fromkeys(
        ("pytest", "meta", "memory", "reenact", "ddp"), "ok")
    meta = res["sections"]["meta"]["result"]
    for name in ("eager", "compiled"):
        assert meta[name]["ms_per_iteration"] > 0 and meta[name]["peak_mb"] > 0
    assert meta["eager"]["flops_per_iteration"] > 1e6, "FlopCounterMode counted the iteration"
    assert set(res["sections"]["memory"]["result"]) >= {"1", "2"}
    assert res["sections"]["reenact"]["result"]["batch_1"]["frames_per_s"] > 0
    assert res["sections"]["ddp"]["result"]["iterations"] == 2
    assert "meta eager" in proc.stdout and "DDP step" in proc.stdout, proc.stdout
