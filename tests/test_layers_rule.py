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
                 "    from talkinghead.inference.shots import resolve\n    import talkinghead.training.train\n")
    assert [m for _, m in talkinghead_imports(f)] == ["talkinghead.landmarks.draw", "talkinghead.inference.shots",
                                                       "talkinghead.training.train"]
    assert offending(f) == ["x.py:5 imports talkinghead.inference.shots", "x.py:6 imports talkinghead.training.train"]


PKG = REPO / "src" / "talkinghead"

#: the modules allowed to import the meta-learning stage (talkinghead.training.train): the CLI that runs it and the tools
#: that run a short meta-learning (make sanity, the data benchmark).
MAY_IMPORT_TRAIN = {"cli.py", "training/launch.py", "tools/sanity.py", "tools/bench_data.py"}  # launch: the cluster surface

#: what the building layer (talkinghead.training.build) and the logging setup (talkinghead.training.loggers) may stand on.
BELOW_BUILD = ("talkinghead.errors", "talkinghead.speed", "talkinghead.modules", "talkinghead.nets",
               "talkinghead.losses", "talkinghead.backbones", "talkinghead.training.loggers")


def test_only_the_cli_and_its_tools_import_the_meta_learning_stage() -> None:
    importers = {str(f.relative_to(PKG)) for f in PKG.rglob("*.py")
                 if any(mod == "talkinghead.training.train" for _, mod in talkinghead_imports(f))}
    assert "cli.py" in importers  # the rule sees the one import that must be there
    assert importers <= MAY_IMPORT_TRAIN, f"build from talkinghead.training.build, not train: {sorted(importers - MAY_IMPORT_TRAIN)}"


def test_building_and_logging_import_no_stage() -> None:
    for name in ("training/build.py", "training/loggers.py"):
        mods = [m for _, m in talkinghead_imports(PKG / name)]
        bad = [m for m in mods if not any(m == ok or m.startswith(ok + ".") for ok in BELOW_BUILD)]
        assert not bad, f"{name} must stand below the stages, imports {bad}"
    assert "talkinghead.modules.meta_learning" in [m for _, m in talkinghead_imports(PKG / "training" / "build.py")]


def test_the_tools_stand_on_top_nothing_imports_them() -> None:
    tools = sorted((PKG / "tools").glob("*.py"))
    assert {"bench.py", "gpu_check.py", "charts.py", "gallery.py"} <= {f.name for f in tools}
    others = [f for f in [*PKG.rglob("*.py"), *(REPO / "data_modules").rglob("*.py")] if "tools" not in f.parts]
    bad = [f"{f.relative_to(REPO)}:{line} imports {mod}" for f in others for line, mod in talkinghead_imports(f)
           if mod == "talkinghead.tools" or mod.startswith("talkinghead.tools.")]
    assert not bad, "tools are over the API, not under it:\n" + "\n".join(bad)


#: the stages' floors as folders of talkinghead, lowest first: a floor imports only the floors before it (and the
#: lower modules: nets, losses, landmarks, config, ...), which import none of them.  The CLI and the page stand side
#: by side on the API (the CLI starts the page).
FLOORS = ("training", "inference", "evaluation", "api", "demo", "cli")
SIDE_BY_SIDE = {("cli", "demo")}


def floor_of(module: str) -> str | None:
    """The floor of a talkinghead module name (``talkinghead.inference.fewshot`` -> inference), None below."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in FLOORS else None


def floor_breaches(root: Path = PKG) -> list[str]:
    bad = []
    for f in sorted(root.rglob("*.py")):
        rel = f.relative_to(root)
        here = rel.parts[0].removesuffix(".py")
        if here == "tools":
            continue
        for line, mod in talkinghead_imports(f):
            there = floor_of(mod)
            if there is None or there == here or (here, there) in SIDE_BY_SIDE:
                continue
            if here not in FLOORS or FLOORS.index(there) > FLOORS.index(here):
                bad.append(f"{rel}:{line} imports {mod} ({there} stands above {here if here in FLOORS else 'it'})")
    return bad


def test_each_floor_imports_only_the_floors_below_it() -> None:
    for floor in FLOORS:
        assert (PKG / floor).is_dir() or (PKG / f"{floor}.py").is_file(), f"no floor {floor}"
    bad = floor_breaches()
    assert not bad, "imports run downward only:\n" + "\n".join(bad)


def test_the_floor_rule_sees_an_import_upward(tmp_path: Path) -> None:
    (tmp_path / "inference").mkdir()
    (tmp_path / "nets").mkdir()
    (tmp_path / "inference" / "x.py").write_text("from talkinghead.training.build import build_networks\n"
                                                 "def f():\n    from talkinghead.evaluation import evaluate\n")
    (tmp_path / "nets" / "y.py").write_text("import talkinghead.inference.render\n")
    assert floor_breaches(tmp_path) == [
        "inference/x.py:3 imports talkinghead.evaluation (evaluation stands above inference)",
        "nets/y.py:1 imports talkinghead.inference.render (inference stands above it)",
    ]
