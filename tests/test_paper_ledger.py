"""docs/paper.md, the fidelity ledger, cannot drift from the configs: every `key=value` it names is checked
against the composed config of the stage it names."""
from __future__ import annotations

import ast
import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from talkinghead.config import compose

LEDGER = Path(__file__).resolve().parents[1] / "docs" / "paper.md"
COLUMNS = ["#", "choice", "paper", "FSTH", "vt", "config", "verdict"]
# Which composed config a ledger entry is read from: `stage:key=value`; no stage = the paper experiment.
STAGES: dict[str, tuple[str, list[str]]] = {
    "vox2_paper": ("meta_learn", ["experiment=vox2_paper", "data.root=/ledger"]),
    "vox1_paper": ("meta_learn", ["experiment=vox1_paper", "data.root=/ledger"]),
    "vox2_paper_ff": ("meta_learn", ["experiment=vox2_paper_ff", "data.root=/ledger"]),
    "vox1_paper_ff": ("meta_learn", ["experiment=vox1_paper_ff", "data.root=/ledger"]),
    "finetune": ("finetune", ["id=ledger"]),
    "evaluate": ("evaluate", []),
}
ENTRY = re.compile(r"`(?:(\w+):)?([\w.\[\]]+)=([^`]*)`")


def ledger_rows() -> list[dict[str, str]]:
    """The ledger's table as dicts keyed by COLUMNS (header and separator rows dropped)."""
    rows = []
    for line in LEDGER.read_text().splitlines():
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "#":
            assert cells == COLUMNS, f"ledger header changed: {cells}"
            continue
        assert len(cells) == len(COLUMNS), f"row with {len(cells)} cells (a stray '|'?): {line[:80]}"
        rows.append(dict(zip(COLUMNS, cells)))
    return rows


#: The paper's meta-learning runs: an entry without a stage holds for each of them, unless an entry names that
#: stage for the same key (``vox2_paper_ff:loss.weights.match=0.0``).
META_STAGES = ("vox2_paper", "vox1_paper", "vox2_paper_ff", "vox1_paper_ff")


def ledger_entries() -> list[tuple[str, str, str, str]]:
    """(row number, stage, key, value text) of every config entry in the ledger, one per stage it holds for."""
    raw = [(r["#"], stage, key, value) for r in ledger_rows() for stage, key, value in ENTRY.findall(r["config"])]
    named = {(stage, key) for _, stage, key, _ in raw if stage}
    out = []
    for row, stage, key, value in raw:
        stages = [stage] if stage else [s for s in META_STAGES if (s, key) not in named]
        out.extend((row, s, key, value) for s in stages)
    return out


def compose_stage(stage: str) -> Any:
    """The resolved config ``stage`` reads, from the config folder in use (``TALKINGHEAD_CONFIG_DIR``)."""
    name, overrides = STAGES[stage]
    return OmegaConf.to_container(compose(name, overrides), resolve=True)


@lru_cache(maxsize=None)
def _config(stage: str) -> Any:
    return compose_stage(stage)


def _select(cfg: Any, key: str) -> Any:
    node = cfg
    for part in re.findall(r"[^.\[\]]+", key):
        if isinstance(node, list):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise KeyError(key)
    return node


def _parse(text: str) -> Any:
    text = text.strip()
    if text in ("null", "None"):
        return None
    if text in ("true", "false"):
        return text == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def mismatches(configs: dict[str, Any]) -> list[str]:
    """Every ledger entry whose value is not the one in ``configs`` (stage -> composed config), as messages."""
    bad = []
    for row, stage, key, value in ledger_entries():
        try:
            actual = _select(configs[stage], key)
        except KeyError:
            bad.append(f"row {row}: no config key '{key}' in the {stage} config")
            continue
        if not _same(_parse(value), actual):
            bad.append(f"row {row}: ledger says {key}={value}, the {stage} config has {actual!r}")
    return bad


def test_ledger_has_a_row_per_choice_with_a_verdict() -> None:
    rows = ledger_rows()
    assert len(rows) >= 30, f"the ledger has {len(rows)} rows; it promises at least 30"
    numbers = [r["#"] for r in rows]
    assert len(set(numbers)) == len(numbers), "row numbers repeat"
    for r in rows:
        assert r["verdict"].startswith(("same", "deviation:")), f"row {r['#']}: verdict must be 'same' or 'deviation: why'"
        if r["verdict"].startswith("deviation:"):
            assert len(r["verdict"]) > len("deviation: ") + 10, f"row {r['#']}: a deviation needs its reason"
        assert r["paper"] and r["FSTH"] and r["vt"], f"row {r['#']}: every source column is filled (— if silent)"
    assert len(ledger_entries()) >= 30, "fewer than 30 config entries: most rows should name their config key"


@pytest.mark.parametrize("row, stage, key, value", ledger_entries())
def test_ledger_value_is_the_config_value(row: str, stage: str, key: str, value: str) -> None:
    assert stage in STAGES, f"row {row}: unknown stage '{stage}' (one of {', '.join(STAGES)})"
    cfg = _config(stage)
    try:
        actual = _select(cfg, key)
    except KeyError:
        pytest.fail(f"row {row}: no config key '{key}' in the {stage} config")
    assert _same(_parse(value), actual), f"row {row}: ledger says {key}={value}, the {stage} config has {actual!r}"


def test_the_checker_catches_a_wrong_value() -> None:
    cfg = _config("vox2_paper")
    assert not _same(_parse("0.5"), _select(cfg, "loss.weights.content_vgg19"))
    assert _same(_parse("[1, 2.0]"), [1.0, 2])
    with pytest.raises(KeyError):
        _select(cfg, "model.no_such_key")


# --------------------------------------------------------------------------------------- coverage of the configs
def test_every_stage_is_checked() -> None:
    used = {stage for _, stage, _, _ in ledger_entries()}
    assert used == set(STAGES), f"stages without a ledger entry: {sorted(set(STAGES) - used)}"


def test_same_verdicts_name_whose_choice_they_follow() -> None:
    """vt is shown for comparison and never followed: a "same" verdict that follows it would be a deviation.  Where
    the paper is silent, "same" must say that it is FSTH's (or the authors') choice."""
    for r in ledger_rows():
        verdict = r["verdict"]
        if not verdict.startswith("same"):
            continue
        assert not re.search(r"\bvt\b", verdict), f"row {r['#']}: a 'same' verdict that follows vt: {verdict}"
        if r["paper"].startswith("—"):
            assert re.search(r"FSTH|the authors'", verdict), f"row {r['#']}: the paper is silent; same as whom?"


def test_the_fine_tuning_settings_of_both_stages_are_checked() -> None:
    """`make finetune` reads the fine-tuning settings at its top level, `make evaluate` (Table 1's FT rows) under
    `finetune.`: every setting is in the ledger for both."""
    entries = {(stage, key) for _, stage, key, _ in ledger_entries()}
    settings = set(_config("evaluate")["finetune"]) - {"seed", "device"}
    missing = sorted({f"finetune:{k}" for k in settings if ("finetune", k) not in entries}
                     | {f"evaluate:finetune.{k}" for k in settings if ("evaluate", f"finetune.{k}") not in entries})
    assert not missing, f"fine-tuning settings the ledger does not check: {missing}"


#: Composed keys that no paper choice is made with (where files go, logging, progress, the speed path, which
#: held-out videos...), so the ledger does not check them.  Everything else a paper stage reads is a ledger entry.
NOT_PAPER_CHOICES = (
    # where files go, what is logged and shown, how fast it runs, which run / person / video
    "name", "run_dir", "runs_dir", "out_dir", "out", "ckpt", "ff_ckpt", "data_root", "resume", "weights_dir",
    "logger.", "trainer.", "speed.", "progress", "seed", "device", "finetune.seed", "finetune.device",
    "callbacks.ckpt_every_n_iterations", "callbacks.val_every_n_iterations", "callbacks.sample_every_n_iterations",
    "callbacks.num_samples", "callbacks.metrics", "callbacks.metrics_every_n_iterations",
    "callbacks.metrics_max_batches", "metrics.weights_dir", "metrics.fid_weights",
    "callbacks.health.",  # the health monitor watches a run; it changes nothing the paper specifies
    # the callbacks built, by _target_, from copies of the callbacks.* values above (interpolations, checked where set:
    # test_callbacks_are_built_from_interpolations_only holds the file to that)
    "callbacks.build.",
    # the LightningModule's class (build_module gives it loss.weights, optim.d_steps_per_g, optim.g_first, ...)
    "module._target_",
    "id", "T", "mode", "detector", "max_frames", "preview_frames", "synthetic_video_length", "videos",
    # the classes built, and copies of K, model.image_size, model.emb_dim (interpolations, checked where set)
    "data._target_", "model.embedder._target_", "model.generator._target_", "model.discriminator._target_",
    "data.K", "data.image_size", "model.embedder.image_size", "model.generator.image_size",
    "model.discriminator.image_size", "model.embedder.emb_dim", "model.generator.emb_dim",
    "model.discriminator.emb_dim",
    # the data pipeline: shard root, loader, held-out split (the evaluation rows 48-51 say what is evaluated)
    "data.root", "data.num_workers", "data.pin_memory", "data.persistent_workers", "data.prefetch_factor",
    "data.max_val_videos", "data.shuffle_buffer", "data.seed", "data.test_fraction", "data.test_persons",
    "data.samples_per_video",
    # evaluate's unit: null keeps the checkpoint's data.unit (row 37a checks it); a value is for comparing versions
    "unit",
    # beyond the paper: the cross-identity protocol of `make evaluate` (not Table 1's), the eye scores (extra columns
    # beside Table 1's) and the CLI's overwrite switch
    "protocols", "cross.", "eyes", "overwrite",
)


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        return {k: v for key, val in node.items() for k, v in _leaves(val, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


def _mutate(node: Any) -> Any:
    """Another value of the same kind for every leaf (the defaults lists and bare interpolations are kept: what
    an interpolation copies is changed where it is set)."""
    if isinstance(node, dict):
        if not node:
            return {"mutated": 1}
        return {k: v if k in ("defaults", "_partial_") else _mutate(v) for k, v in node.items()}
    if isinstance(node, list):
        return node + [7]
    if isinstance(node, bool):
        return not node
    if isinstance(node, (int, float)):
        return node * 3 + 1
    if node is None:
        return 12345
    if isinstance(node, str) and node != "???" and not re.fullmatch(r"\$\{[^}]*\}", node):
        return node + "_mutated"
    return node


def _mutated_copy(src: Path, dst: Path, only: Path | None = None) -> None:
    """``src``'s config tree at ``dst`` with every leaf of every file (or of ``only``) given another value."""
    import shutil

    shutil.copytree(src, dst)
    for path in sorted(dst.rglob("*.yaml")):
        if only is not None and path.relative_to(dst) != only:
            continue
        text = path.read_text()
        header = "".join(line + "\n" for line in text.splitlines() if line.startswith("# @package"))
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=False, throw_on_missing=False)
        path.write_text(header + OmegaConf.to_yaml(OmegaConf.create(_mutate(data))))


def test_changing_any_config_value_fails_the_ledger_or_is_declared_no_paper_choice(tmp_path: Path, monkeypatch) -> None:
    """Every leaf of every config file is changed at once (a copy under TALKINGHEAD_CONFIG_DIR): then every ledger
    entry must fail, and every value a paper stage reads that changed must be a ledger entry or NOT_PAPER_CHOICES.
    So a value in any file (experiments/evaluate.yaml's, experiment/vox1_paper.yaml's...) cannot change unchecked."""
    from talkinghead.config import config_dir

    original = {stage: _config(stage) for stage in STAGES}
    _mutated_copy(config_dir(), tmp_path / "experiments")
    monkeypatch.setenv("TALKINGHEAD_CONFIG_DIR", str(tmp_path / "experiments"))
    mutated = {stage: compose_stage(stage) for stage in STAGES}
    still = [(row, stage, key) for row, stage, key, value in ledger_entries()
             if _same(_parse(value), _select(mutated[stage], key))]
    assert not still, f"ledger entries that no config file sets (a change would go unnoticed): {still}"
    checked = {(stage, key) for _, stage, key, _ in ledger_entries()}
    unchecked = []
    for stage in STAGES:
        before, after = _leaves(original[stage]), _leaves(mutated[stage])
        for key in sorted(set(before) | set(after)):
            if _same(before.get(key), after.get(key)) or (stage, key) in checked:
                continue
            if any(key == p or key.startswith(p.rstrip(".") + ".") for p in NOT_PAPER_CHOICES):
                continue
            if any(key.startswith(k + ".") or k.startswith(key + ".") for s, k in checked if s == stage):
                continue  # a list or table checked as a whole (data.augment={})
            unchecked.append(f"{stage}:{key}")
    assert not unchecked, f"config values a paper stage reads that the ledger does not check: {unchecked}"


def test_one_changed_fine_tuning_value_fails_the_ledger_for_both_stages(tmp_path: Path, monkeypatch) -> None:
    """The issue's case: lr_g x10 in the one fine-tuning file fails `make finetune`'s and `make evaluate`'s rows."""
    import shutil

    from talkinghead.config import config_dir

    shutil.copytree(config_dir(), tmp_path / "experiments")
    recipe = tmp_path / "experiments" / "finetuning" / "paper.yaml"
    recipe.write_text(recipe.read_text().replace("lr_g: 5.0e-4", "lr_g: 5.0e-3"))
    monkeypatch.setenv("TALKINGHEAD_CONFIG_DIR", str(tmp_path / "experiments"))
    configs = {stage: compose_stage(stage) for stage in STAGES}
    bad = mismatches(configs)
    assert any("finetune config" in b and "lr_g" in b for b in bad), bad
    assert any("evaluate config" in b and "finetune.lr_g" in b for b in bad), bad
    assert len(bad) == 2, bad


def test_the_rows_on_fsth_s_batch_order_crop_and_psi_are_there_and_say_what_the_code_does() -> None:
    """Rows 38 and 61-62 as corrected, and 66-68 (the batch on N GPUs, the update order, VGGFace's crop, ψ''s P):
    their config keys are checked above; here the facts they state that are not config values."""
    rows = {r["#"]: r for r in ledger_rows()}
    entries = {(row, key) for row, _, key, _ in ledger_entries()}
    assert {("38", "data.global_batch_size"), ("38", "data.batch_size"), ("66", "optim.g_first"),
            ("66", "g_first"), ("66", "finetune.g_first"), ("67", "loss.vggface_zoom")} <= entries
    assert "global batch" in rows["38"]["FSTH"] and "batch_size // num_gpus" in rows["38"]["FSTH"]
    bound = f"{math.sqrt(512 / 145_000):.3f}"  # W's rows' RMS norm bound under spectral norm at 145k rows
    assert bound == "0.059" and bound in rows["61"]["verdict"]
    assert "eps/√(1−β₂ᵗ)" in rows["62"]["verdict"] and "eps·√(1−β₂ᵗ)" not in rows["62"]["verdict"]
    assert "perc_weight" in rows["22"]["FSTH"] and "idt_embed_weight" in rows["22"]["FSTH"]
    assert "ReLU, then sum" in rows["18"]["FSTH"] and "sum then ReLU" in rows["18"]["verdict"]
    assert rows["68"]["verdict"].startswith("same") and "trained G's P" in rows["68"]["verdict"]


def test_callbacks_are_built_from_interpolations_only() -> None:
    """``callbacks.build`` and ``module`` name classes and copy values set elsewhere, so their exemptions above hide
    no value."""
    from talkinghead.config import config_dir

    raw = OmegaConf.to_container(OmegaConf.load(config_dir() / "callbacks" / "default.yaml"), resolve=False)
    root = OmegaConf.to_container(OmegaConf.load(config_dir() / "meta_learn.yaml"), resolve=False)
    leaves = {**_leaves(raw["build"], "callbacks.build."), **_leaves(root["module"], "module.")}
    assert len(leaves) >= 9 and list(_leaves(root["module"], "module.")) == ["module._target_"]
    bad = {k: v for k, v in leaves.items()
           if not (k.endswith("_target_") or (isinstance(v, str) and re.fullmatch(r"\$\{[^}]*\}(/\w+)?", v)))}
    assert not bad, f"callbacks.build may hold only _target_ and interpolations: {bad}"
