"""The house's floors: data_modules stands below the stages.

data_modules may use only the project's lower floors (landmarks, crops, visualisation, errors, configs); an
import of a stage (training, fine-tuning, reenactment, the API, the CLI, the page, benchmarks) from data would
put the data floor above the stages that consume it.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: talkinghead modules (and packages) that data_modules may import.
ALLOWED_BELOW_DATA = ("talkinghead.landmarks", "talkinghead.crop", "talkinghead.visualize", "talkinghead.errors",
                      "talkinghead.config", "talkinghead.decode")


def talkinghead_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every talkinghead import in a file, at any depth (imports inside functions count)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "talkinghead"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "talkinghead":
            found.append((node.lineno, node.module))
    return found


def offending(path: Path) -> list[str]:
    return [f"{path.name}:{line} imports {mod}" for line, mod in talkinghead_imports(path)
            if not any(mod == ok or mod.startswith(ok + ".") for ok in ALLOWED_BELOW_DATA)]


def test_data_modules_import_no_stage_of_talkinghead() -> None:
    files = sorted((REPO / "data_modules").rglob("*.py"))
    assert len(files) > 5
    bad = [line for f in files for line in offending(f)]
    assert not bad, "data_modules must stand below the stages:\n" + "\n".join(bad)


def test_the_rule_sees_imports_inside_functions(tmp_path: Path) -> None:
    f = tmp_path / "x.py"
    f.write_text("import os\nfrom talkinghead.landmarks.draw import draw_landmarks\n\ndef g():\n"
                 "    from talkinghead.shots import resolve\n    import talkinghead.train\n")
    assert [m for _, m in talkinghead_imports(f)] == ["talkinghead.landmarks.draw", "talkinghead.shots",
                                                       "talkinghead.train"]
    assert offending(f) == ["x.py:5 imports talkinghead.shots", "x.py:6 imports talkinghead.train"]


PKG = REPO / "src" / "talkinghead"

#: the modules allowed to import the meta-learning stage (talkinghead.train): the CLI that runs it and the tools
#: that run a short meta-learning (make sanity, the data benchmark).
MAY_IMPORT_TRAIN = {"cli.py", "launch.py", "tools/sanity.py", "tools/bench_data.py"}  # launch: the cluster surface

#: what the building layer (talkinghead.build) and the logging setup (talkinghead.loggers) may stand on.
BELOW_BUILD = ("talkinghead.errors", "talkinghead.speed", "talkinghead.modules", "talkinghead.nets",
               "talkinghead.losses", "talkinghead.backbones", "talkinghead.loggers")


def test_only_the_cli_and_its_tools_import_the_meta_learning_stage() -> None:
    importers = {str(f.relative_to(PKG)) for f in PKG.rglob("*.py")
                 if any(mod == "talkinghead.train" for _, mod in talkinghead_imports(f))}
    assert "cli.py" in importers  # the rule sees the one import that must be there
    assert importers <= MAY_IMPORT_TRAIN, f"build from talkinghead.build, not train: {sorted(importers - MAY_IMPORT_TRAIN)}"


def test_building_and_logging_import_no_stage() -> None:
    for name in ("build.py", "loggers.py"):
        mods = [m for _, m in talkinghead_imports(PKG / name)]
        bad = [m for m in mods if not any(m == ok or m.startswith(ok + ".") for ok in BELOW_BUILD)]
        assert not bad, f"{name} must stand below the stages, imports {bad}"
    assert "talkinghead.modules.meta_learning" in [m for _, m in talkinghead_imports(PKG / "build.py")]


def test_the_tools_stand_on_top_nothing_imports_them() -> None:
    tools = sorted((PKG / "tools").glob("*.py"))
    assert {"bench.py", "gpu_check.py", "charts.py", "gallery.py"} <= {f.name for f in tools}
    others = [f for f in [*PKG.rglob("*.py"), *(REPO / "data_modules").rglob("*.py")] if "tools" not in f.parts]
    bad = [f"{f.relative_to(REPO)}:{line} imports {mod}" for f in others for line, mod in talkinghead_imports(f)
           if mod == "talkinghead.tools" or mod.startswith("talkinghead.tools.")]
    assert not bad, "tools are over the API, not under it:\n" + "\n".join(bad)
