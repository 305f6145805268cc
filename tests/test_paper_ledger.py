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


def ledger_entries() -> list[tuple[str, str, str, str]]:
    """(row number, stage, key, value text) of every config entry in the ledger."""
    return [(r["#"], stage or "vox2_paper", key, value)
            for r in ledger_rows() for stage, key, value in ENTRY.findall(r["config"])]


@lru_cache(maxsize=None)
def _config(stage: str) -> Any:
    name, overrides = STAGES[stage]
    return OmegaConf.to_container(compose(name, overrides), resolve=True)


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
