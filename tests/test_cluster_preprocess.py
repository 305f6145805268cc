"""VoxCeleb at cluster scale: symlinked dataset roots, preprocessing in parts (--part i/N, --merge), and the same
parts submitted with submitit's local executor (real processes)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from data_modules.preprocess import PARTS, Part, PreprocessConfig, PreprocessError, merge, preprocess
from data_modules.shards import MANIFEST, load_manifest
from data_modules.sources import discover

CFG = PreprocessConfig(size=64, frames_per_video=12, min_face=20, videos_per_shard=2)


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("shard-*.tar"))}


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'src'}{os.pathsep}{REPO}")
    return subprocess.run([sys.executable, "-m", "data_modules.preprocess", *args], capture_output=True,
                          text=True, env=env, timeout=120)

# ------------------------------------------------------------------------------------------ symlinked roots
def test_symlinked_dataset_root_is_followed_and_a_link_cycle_ends(tmp_path, synthetic_vox):
    """``src/dev/mp4 -> /big/disk/...`` as users lay out large sets; a link back up the tree must not hang."""
    import threading

    real, _ = synthetic_vox
    src = tmp_path / "src"
    (src / "dev").mkdir(parents=True)
    (src / "dev" / "mp4").symlink_to(real, target_is_directory=True)
    # a person folder that is itself a link, and a cycle: a link inside the tree pointing back at the root
    (tmp_path / "elsewhere").mkdir()
    shutil.copytree(real / "id00001", tmp_path / "elsewhere" / "id00009")
    (src / "dev" / "id00009").symlink_to(tmp_path / "elsewhere" / "id00009", target_is_directory=True)
    (src / "dev" / "loop").symlink_to(src, target_is_directory=True)

    found: list = []
    t = threading.Thread(target=lambda: found.append(discover(src)), daemon=True)
    t.start()
    t.join(timeout=60)
    assert not t.is_alive(), "discover() loops on a symlink cycle"
    clips = found[0]
    expected = sorted([f"id{i:05d}/v{j}/00001" for i in range(1, 5) for j in range(2)]
                      + [f"id00009/v{j}/00001" for j in range(2)])
    assert [c.video_id for c in clips] == expected
    assert {c.split for c in clips} == {"train"}
    assert str(clips[0].path).startswith(str(src)), "clips keep their path through the link"


def test_symlinked_root_gives_the_same_shards_as_a_copy(tmp_path, synthetic_vox, synthetic_shards):
    real, oracle = synthetic_vox
    shards, _ = synthetic_shards
    src = tmp_path / "src" / "dev"
    src.mkdir(parents=True)
    (src / "mp4").symlink_to(real, target_is_directory=True)
    out = tmp_path / "out"
    report = preprocess(src / "mp4", out, CFG, detector=oracle, workers=0, progress=False)
    assert report.complete and report.kept == 8
    for tar in sorted(shards.glob("shard-*.tar")):
        assert (out / tar.name).read_bytes() == tar.read_bytes()


# ------------------------------------------------------------------------------------------------------- parts
def test_two_parts_in_any_order_give_the_same_bytes_as_one_run(tmp_path, synthetic_vox, synthetic_shards):
    src, oracle = synthetic_vox
    ref, _ = synthetic_shards
    out = tmp_path / "out"
    r2 = preprocess(src, out, CFG, detector=oracle, progress=False, part="2/2")  # any order
    assert r2.complete and r2.part == "2/2" and r2.videos_total == 4
    assert sorted(_files(out)) == ["shard-000002.tar", "shard-000003.tar"], "part 2 writes only its groups"
    assert not (out / MANIFEST).exists(), "a part writes no manifest"
    r1 = preprocess(src, out, CFG, detector=oracle, progress=False, part=Part(1, 2))
    assert r1.complete and sorted(p.name for p in (out / PARTS).glob("*.ledger.jsonl")) == [
        "part-0001-of-0002.ledger.jsonl", "part-0002-of-0002.ledger.jsonl"]
    report = merge(src, out, CFG)
    assert report.complete and report.kept == 8 and report.shards == 4
    assert _files(out) == _files(ref), "shards byte-identical to a single-machine run"
    assert (out / MANIFEST).read_bytes() == (ref / MANIFEST).read_bytes()
    assert load_manifest(out).complete
    again = preprocess(src, out, CFG, detector=oracle, progress=False, part="1/2")  # re-run: nothing to do
    assert again.videos_read == 0 and again.videos_resumed == 4


def test_a_rerun_part_leaves_the_other_parts_files_alone(tmp_path, synthetic_vox):
    """Parts share OUT: a part that (re)starts cleans only its own temporary files, never an in-flight shard of
    another part, and a torn ledger line (killed part) is ignored."""
    src, oracle = synthetic_vox
    out = tmp_path / "out"
    preprocess(src, out, CFG, detector=oracle, progress=False, part="1/2")
    in_flight = out / "shard-000003.tar.tmp"  # part 2 is writing this right now
    in_flight.write_bytes(b"half a tar")
    mine = out / "shard-000000.tar.tmp"  # part 1 was killed while writing a group again
    mine.write_bytes(b"stale")
    with open(out / PARTS / "part-0001-of-0002.ledger.jsonl", "a") as fh:
        fh.write('{"group": 1, "sha')  # torn by a kill
    r = preprocess(src, out, CFG, detector=oracle, progress=False, part="1/2")
    assert r.complete and r.videos_read == 0
    assert in_flight.read_bytes() == b"half a tar" and not mine.exists()


def test_merge_with_a_part_missing_is_refused_with_the_list(tmp_path, synthetic_vox):
    src, oracle = synthetic_vox
    out = tmp_path / "out"
    preprocess(src, out, CFG, detector=oracle, progress=False, part="2/3")
    with pytest.raises(PreprocessError, match=r"2 of 3 parts missing or unfinished: 1/3, 3/3;"):
        merge(src, out, CFG)
    res = _cli("--src", str(src), "--out", str(out), "--size", "64", "--frames-per-video", "12", "--min-face",
               "20", "--videos-per-shard", "2", "--merge")
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "1/3, 3/3" in res.stderr
    assert not (out / MANIFEST).exists() and sorted(_files(out)) == ["shard-000001.tar"]
    with pytest.raises(PreprocessError, match="nothing to merge"):
        merge(src, tmp_path / "empty", CFG)


def test_parts_with_other_settings_are_refused(tmp_path, synthetic_vox):
    src, oracle = synthetic_vox
    out = tmp_path / "out"
    preprocess(src, out, CFG, detector=oracle, progress=False, part="1/2")
    other = PreprocessConfig(size=32, frames_per_video=12, min_face=20, videos_per_shard=2)
    with pytest.raises(PreprocessError, match="other settings .*part 1/2.*size"):
        preprocess(src, out, other, detector=oracle, progress=False, part="2/2")
    preprocess(src, out, CFG, detector=oracle, progress=False, part="2/2")
    before = _files(out)
    with pytest.raises(PreprocessError, match=r"2 part\(s\) were made with other settings than this merge's"):
        merge(src, out, other)
    assert _files(out) == before and not (out / MANIFEST).exists(), "nothing lost, nothing half-written"
    with pytest.raises(PreprocessError, match="overwrite with part would delete"):
        preprocess(src, out, CFG, detector=oracle, progress=False, part="2/2", overwrite=True)


@pytest.mark.parametrize("text", ["0/4", "5/4", "3/0", "3", "a/b"])
def test_part_index_out_of_range_is_refused(tmp_path, text):
    with pytest.raises(PreprocessError, match=f"part '?{text}'?: ") as err:  # the library's words ...
        Part.parse(text)
    assert err.value.option == "part"
    src = tmp_path / "src"
    src.mkdir()
    res = _cli("--src", str(src), "--out", str(tmp_path / "out"), "--part", text)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "(--part)" in res.stderr, res.stderr  # ... the CLI's flag
    assert not (tmp_path / "out").exists(), "nothing written"


def test_parts_cover_every_group_once():
    for groups in (0, 1, 5, 64, 65):
        for n in (1, 2, 3, 64):
            covered = [g for i in range(1, n + 1) for g in Part(i, n).groups(groups)]
            assert covered == list(range(groups))


# -------------------------------------------------------------------------------------------------- submitit
def test_submitit_local_executor_runs_two_parts_then_merge(tmp_path, synthetic_vox, synthetic_shards,
                                                            monkeypatch):
    """The code path of `make preprocess-slurm`, with submitit's local executor: two real processes."""
    from data_modules.slurm import PartJob, make_executor, submit

    src, oracle = synthetic_vox
    ref, _ = synthetic_shards
    out = tmp_path / "out"
    # the array tasks unpickle the stand-in detector of conftest: let them import it
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "tests"), str(REPO / "src"), str(REPO)]))
    executor = make_executor(out / PARTS / "submitit", cluster="local", time_min=5, cpus=1, gpus=0)
    job = PartJob(str(src), str(out), 2, CFG, workers=0, detector=oracle)
    jobs = submit(job, executor)
    assert len(jobs) == 2
    pids = set()
    for j in jobs:
        report = j.result()
        assert report.complete and report.part in ("1/2", "2/2")
        pids.add(j.job_id)
    assert len(pids) == 2
    merge(src, out, CFG)
    assert _files(out) == _files(ref)
    assert (out / MANIFEST).read_bytes() == (ref / MANIFEST).read_bytes()


def test_slurm_submitter_help_and_clear_errors(tmp_path):
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'src'}{os.pathsep}{REPO}")
    res = subprocess.run([sys.executable, "-m", "data_modules.slurm", "--help"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert res.returncode == 0 and "--slurm-partition" in res.stdout and "--parts" in res.stdout
    res = subprocess.run([sys.executable, "-m", "data_modules.slurm", "--cluster", "local", "--src",
                          str(tmp_path / "missing"), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "does not exist" in res.stderr
