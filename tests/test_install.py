"""A regular (non-editable) install works from any folder: the package carries its configs and every module."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CHECK = r"""
import importlib, pkgutil, sys
from pathlib import Path
import talkinghead, data_modules
target = Path(sys.argv[1]).resolve()
for pkg in (talkinghead, data_modules):
    assert Path(pkg.__file__).resolve().is_relative_to(target), (pkg.__file__, target)
    for mod in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        if mod.name.startswith("talkinghead.experiments"):
            continue
        importlib.import_module(mod.name)  # every module of the source tree is in the install
from talkinghead.config import compose, config_dir, group_options
assert Path(config_dir()).resolve().is_relative_to(target), config_dir()
for exp in group_options("experiment"):
    compose("meta_learn", [f"experiment={exp}", "++data.root=/nonexistent"])
compose("finetune", ["id=syn0035/v00"])
compose("evaluate", [])
print("composed", len(group_options("experiment")), "experiments from", config_dir())
"""


@pytest.mark.slow
def test_a_regular_install_composes_every_experiment_from_another_folder(tmp_path: Path) -> None:
    target = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "--target", str(target), str(REPO)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    assert not (target / "talkinghead" / "__editable__").exists()
    env = {k: v for k, v in os.environ.items() if k not in ("TALKINGHEAD_CONFIG_DIR", "PYTHONPATH")}
    env["PYTHONPATH"] = str(target)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run([sys.executable, "-c", CHECK, str(target)], capture_output=True, text=True,
                          timeout=600, cwd=elsewhere, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    experiments = sorted(p.stem for p in (REPO / "experiments" / "experiment").glob("*.yaml"))
    assert f"composed {len(experiments)} experiments from {target.resolve()}" in proc.stdout, proc.stdout
