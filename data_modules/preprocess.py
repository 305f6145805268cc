"""Preprocess talking-head videos into WebDataset shards: decode, find the face, crop, landmarks, write.

Usage (``make preprocess SRC=... OUT=...`` runs this)::

    python -m data_modules.preprocess --src /data/voxceleb2/dev/mp4 --out /data/vox2-shards

For every clip (VoxCeleb utterance, video-preprocessing clip, image folder or single video) it

1. decodes ``--frames-per-video`` frames spread evenly over the clip (PyAV),
2. finds the largest face and its 68 landmarks in each (``--backend``: face-alignment or dlib); with
   ``--landmarks track`` (default) the face is detected on key frames only and followed in between
   (``talkinghead.landmarks.track``), ``--landmarks detect`` runs the detector on every sampled frame;
   ``--landmark-set ibug68+iris`` adds each frame's irises (``talkinghead.landmarks.iris``, located in the whole
   frame; 72 points, NaN rows where an iris is absent) and the manifest records the set
   (``python -m data_modules.upgrade_irises`` adds them to shards made without),
3. builds ONE crop box for the clip (a face track): the union of the per-frame landmark boxes after
   dropping frames whose face jumps away from the track, made square, enlarged by ``--margin`` and padded
   with black where it leaves the frame, and resizes the crop to ``--size``; landmarks are mapped into
   crop pixels,
4. writes the kept frames (JPEG) + landmarks + metadata as one sample of a tar shard
   (see ``data_modules.shards``); ``manifest.json`` records each clip's video (``person/youtube id`` for
   VoxCeleb), the unit of D's W table.

Clips are sorted by id and cut into groups of ``--videos-per-shard``; group ``i`` becomes ``shard-i.tar``.
Each shard is written atomically and then recorded in ``ledger.jsonl``, so a run stopped at any moment
(Ctrl-C, kill, full disk) resumes where it stopped when re-run with the same arguments and produces the
same shards as one uninterrupted run. ``manifest.json`` is rebuilt from the ledger at the end of every run.

A clip is skipped, with its reason in the report, when it does not decode, is truncated, has no face in
enough frames, or its face is narrower than ``--min-face`` pixels.

On many machines (``--part i/N``, then ``--merge``): part ``i`` of ``N`` (1-based) processes the ``i``-th of N
contiguous, balanced runs of shard groups. Parts may run at the same time on different machines writing to one
shared OUT: each keeps its own settings, ledger and report under ``OUT/parts/`` and only ever touches the shards of
its own groups, so parts can run in any order and be killed and re-run. The shards are byte-identical to one
single-machine run. ``--merge`` writes ``manifest.json`` and ``report.json`` once every group is committed, and
otherwise names the parts still missing. ``data_modules.slurm`` submits the parts with submitit.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import multiprocessing as mp
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Iterator
from typing import Any, Callable

import numpy as np

from data_modules.shards import (
    JPEG_QUALITY,
    MANIFEST,
    SHARD_NAME,
    TMP_SUFFIX,
    Manifest,
    VideoRecord,
    VideoSample,
    encode_jpeg,
    remove_partial,
    sample_key,
    write_shard,
)
from data_modules.sources import LAYOUTS, Clip, DecodeBoundError, DecodeError, LayoutError, discover, read_clip
from talkinghead.crop import crop_frame, face_track, landmarks_to_crop  # noqa: F401 - also this module's API
from talkinghead.landmarks.detectors import make_detector
from talkinghead.landmarks.iris import points_with_irises
from talkinghead.landmarks.sets import IBUG68, IBUG68_IRIS, LANDMARK_SETS
from talkinghead.landmarks.track import make_landmarker

LEDGER = "ledger.jsonl"
CONFIG = "config.json"
REPORT = "report.json"
PARTS = "parts"  # OUT/parts/part-0003-of-0064.{settings.json,ledger.jsonl,report.json}: one set per --part i/N


class PreprocessError(RuntimeError):
    """Preprocessing cannot start or go on (settings differ from an earlier run in OUT, ...).  ``option``: the
    parameter it is about, for the command line to add its flag (:func:`main`)."""

    def __init__(self, *args: object, option: str | None = None) -> None:
        super().__init__(*args)
        self.option = option


@dataclass(frozen=True)
class PreprocessConfig:
    """Settings that decide the content of the shards (a resumed run must use the same)."""

    size: int = 256  # side S of the square crops written
    frames_per_video: int = 64  # frames sampled evenly from each clip (0 = all); Table 1 needs 64 (T=32 + 32 targets)
    min_face: int = 80  # skip a clip whose face (jaw width, median over frames) is narrower (px)
    margin: float = 0.8  # crop side = (1 + margin) * side of the union of landmark boxes
    min_detected: float = 0.5  # skip a clip where a face is found in fewer of its sampled frames
    min_frames: int = 2  # ... or in fewer frames than this
    videos_per_shard: int = 64  # clips per shard (group i of the sorted clip list -> shard i)
    jpeg_quality: int = JPEG_QUALITY
    landmark_set: str = IBUG68  # the points written: ibug68 | ibug68+iris (talkinghead.landmarks.sets)


@dataclass
class ClipResult:
    """Outcome of one clip: a ``sample`` to write, or the ``reason`` it was skipped."""

    video_id: str
    person_id: str
    split: str | None
    sample: VideoSample | None = None
    reason: str | None = None


@dataclass
class Report:
    """What a preprocessing run did; ``kept``/``skipped``/``frames_written`` cover the whole OUT folder."""

    src: str
    out: str
    backend: str
    videos_total: int = 0
    videos_read: int = 0  # clips processed by this run
    videos_resumed: int = 0  # clips already done by an earlier run
    kept: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    frames_written: int = 0
    shards: int = 0
    seconds: float = 0.0
    stopped: str | None = None  # why the run stopped early (None: finished)
    part: str | None = None  # "3/64" for a --part run, "merge" for --merge, None for a whole run

    @property
    def complete(self) -> bool:
        return self.stopped is None and self.kept + len(self.skipped) == self.videos_total

    def summary(self) -> str:
        rate = 60.0 * self.videos_read / self.seconds if self.seconds > 0 else 0.0
        what = f" part {self.part}" if self.part and self.part != "merge" else (" --merge" if self.part else "")
        lines = [
            f"preprocess{what} {self.src} -> {self.out} (backend {self.backend})",
            f"  videos read this run: {self.videos_read} ({rate:.1f} videos/min), "
            f"already done: {self.videos_resumed}, total in source: {self.videos_total}",
            f"  kept: {self.kept}   skipped: {len(self.skipped)}   frames written: {self.frames_written}"
            f"   shards: {self.shards}   time: {self.seconds:.1f} s",
        ]
        for s in self.skipped:
            lines.append(f"  skipped {s['video_id']}: {s['reason']}")
        if self.stopped:
            lines.append(f"  STOPPED: {self.stopped}")
        elif self.part and self.part != "merge":
            lines.append(f"  finished part {self.part}: run --merge once every part is done")
        else:
            lines.append("  finished: manifest.json is complete")
        return "\n".join(lines)


def _relative_source(path: Path, src_root: Path) -> str:
    """``path`` relative to ``--src`` as found (through symlinked folders too), else resolved, else its name."""
    for a, b in ((path, src_root), (path.resolve(), src_root.resolve())):
        try:
            return str(a.relative_to(b))
        except ValueError:
            continue
    return path.name


def process_clip(clip: Clip, detector, cfg: PreprocessConfig, src_root: Path) -> ClipResult:  # noqa: ANN001
    """Decode, detect, crop one clip; never raises for bad input (the reason goes into the result)."""
    res = ClipResult(clip.video_id, clip.person_id, clip.split)
    try:
        frames, indices, fps, asked = read_clip(clip, cfg.frames_per_video)
    except DecodeError as e:
        res.reason = f"corrupt video: {e}"
        return res
    except DecodeBoundError as e:  # one clip over a decoding bound (talkinghead.decode): skipped, the run goes on
        res.reason = str(e)
        return res
    if len(frames) < asked:
        res.reason = f"truncated video: only {len(frames)} of {asked} sampled frames decode"
        return res
    landmarks = detector.detect(frames)
    track = face_track(landmarks, cfg)
    if isinstance(track, str):
        res.reason = track
        return res
    box, kept, face_w = track
    jpgs = [encode_jpeg(crop_frame(frames[i], box, cfg.size), cfg.jpeg_quality) for i in kept]
    irises = cfg.landmark_set == IBUG68_IRIS  # located in the whole frame: more pixels per eye than the crop
    pts = np.stack([landmarks_to_crop(points_with_irises(frames[i], landmarks[i]) if irises else landmarks[i],
                                      box, cfg.size) for i in kept])
    source = _relative_source(Path(clip.path), src_root)
    meta = {
        "person_id": clip.person_id,
        "video_id": clip.video_id,
        "frame_indices": indices[kept].tolist(),
        "fps": fps,
        "source": source,
        "crop_box": [float(v) for v in box],
        "source_size": [int(frames.shape[1]), int(frames.shape[2])],
        "face_width": face_w,
        "split": clip.split,
        "detector": getattr(detector, "name", type(detector).__name__),
    }
    res.sample = VideoSample(sample_key(clip.video_id), jpgs, pts, meta)
    return res


# ---------------------------------------------------------------------------------------- worker processes
def _usable_cpus() -> int:
    """CPUs this process may use (a SLURM task's allocation, not the whole node)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


_WORKER: dict[str, Any] = {}


def _init_worker(detector_factory: Callable[[], Any] | None, cfg: PreprocessConfig, src_root: Path) -> None:
    if detector_factory is not None:
        _WORKER["detector"] = detector_factory()
    _WORKER["cfg"], _WORKER["src"] = cfg, src_root


def _work(item: tuple[int, Clip]) -> tuple[int, ClipResult]:
    group, clip = item
    return group, process_clip(clip, _WORKER["detector"], _WORKER["cfg"], _WORKER["src"])


# ------------------------------------------------------------------------------------------------ ledger etc.
def read_ledger(out: Path) -> dict[int, dict[str, Any]]:
    """Committed shard groups from ``ledger.jsonl`` and every part's ledger in ``OUT/parts`` (a torn last line
    from a kill is ignored; an entry whose shard is gone does not count)."""
    done: dict[int, dict[str, Any]] = {}
    for path in [out / LEDGER, *sorted((out / PARTS).glob("*.ledger.jsonl"))]:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            shard = entry.get("shard")
            if shard is None or (out / shard).is_file():
                done[int(entry["group"])] = entry
    return done


@dataclass(frozen=True)
class Part:
    """Part ``index`` (1-based) of ``count``: the ``index``-th of ``count`` contiguous runs of shard groups."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Part:
        """``"3/64"`` -> ``Part(3, 64)``; anything else, or an index outside 1..N, is a ``PreprocessError``."""
        try:
            i, n = (int(v) for v in str(text).strip().split("/"))
        except ValueError:
            raise PreprocessError(f"part {text!r}: expected i/N such as 3/64 (part i of N, 1 <= i <= N)",
                                  option="part") from None
        if n < 1 or not 1 <= i <= n:
            raise PreprocessError(f"part {text}: part index out of range, must be 1..{max(n, 1)} of {n}", option="part")
        return cls(i, n)

    @property
    def name(self) -> str:
        return f"part-{self.index:04d}-of-{self.count:04d}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def groups(self, num_groups: int) -> range:
        """The shard groups of this part (balanced: sizes differ by at most one)."""
        return range((self.index - 1) * num_groups // self.count, self.index * num_groups // self.count)


def _ledger_path(out: Path, part: Part | None) -> Path:
    return out / LEDGER if part is None else out / PARTS / f"{part.name}.ledger.jsonl"


def _append_ledger(out: Path, entry: dict[str, Any], part: Part | None = None) -> None:
    with open(_ledger_path(out, part), "a") as fh:
        fh.write(json.dumps(entry, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _fingerprint(cfg: PreprocessConfig, backend: str, clips: list[Clip], landmarks: str = "detect") -> dict[str, Any]:
    h = hashlib.sha256("\n".join(c.video_id for c in clips).encode()).hexdigest()
    settings = asdict(cfg)
    landmark_set = settings.pop("landmark_set")
    fp = {"settings": settings, "backend": backend, "num_clips": len(clips), "clips_sha256": h}
    if landmarks != "detect":  # detect-mode folders keep the fingerprint (and resume) of earlier versions
        fp["landmarks"] = landmarks
    if landmark_set != IBUG68:  # so do folders of 68 points (made before landmark sets)
        fp["landmark_set"] = landmark_set
    return fp


def settings_files(out: Path) -> list[Path]:
    """The settings of the whole run (``config.json``) and of every part (``parts/part-*.json``) in ``out``."""
    return [p for p in [out / CONFIG, *sorted((out / PARTS).glob("part-*-of-*.settings.json"))] if p.is_file()]


def _who(path: Path) -> str:
    """``parts/part-0003-of-0064.settings.json`` -> ``part 3/64``; ``config.json`` -> ``the whole run``."""
    if path.name == CONFIG:
        return "the whole run"
    i, n = path.name.split(".")[0].split("-")[1::2]
    return f"part {int(i)}/{int(n)}"


def _settings_diffs(path: Path, fp: dict[str, Any]) -> list[str]:
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return []  # torn by a kill before it was renamed into place: cannot be (tmp + rename)
    keys = list(fp) + sorted(set(old) - set(fp) - {"part"})  # and what only the folder records (an upgrade's set)
    return [f"{k}: {old.get(k)!r} then, {fp.get(k)!r} now" for k in keys if old.get(k) != fp.get(k)]


def _check_resume(out: Path, fp: dict[str, Any], part: Part | None = None) -> None:
    """Refuse to add to ``out`` shards made with other settings (by a whole run or any part); record ours."""
    for path in settings_files(out):
        diffs = _settings_diffs(path, fp)
        if diffs:
            who = "" if path.name == CONFIG else f" ({_who(path)})"
            raise PreprocessError(
                f"{out} holds shards made with other settings or another source{who} ({'; '.join(diffs)}): "
                "use a new --out, re-run with the same arguments to continue, or add --overwrite to start again"
            )
    own = out / CONFIG if part is None else out / PARTS / f"{part.name}.settings.json"
    if not own.is_file():
        write_json(own, {**fp, "part": None if part is None else str(part)})


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically (a reader, or a killed run, never leaves half a file)."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _clear_out(out: Path) -> None:
    for name in (LEDGER, CONFIG, REPORT, MANIFEST):
        (out / name).unlink(missing_ok=True)
    for p in out.glob("shard-*.tar*"):
        p.unlink()
    for p in (out / PARTS).glob("part-*"):
        p.unlink()


def _remove_partial_groups(out: Path, groups: range) -> None:
    """Temporary files a killed part left, of its own groups only (other parts may be writing theirs now)."""
    for g in groups:
        (out / (SHARD_NAME.format(g) + TMP_SUFFIX)).unlink(missing_ok=True)


def write_manifest(
    out: Path, groups: list[list[Clip]], done: dict[int, dict[str, Any]], size: int, backend: str,
    landmark_set: str = IBUG68,
) -> Manifest:
    """Rebuild ``manifest.json`` from the ledger (clips sorted by id: same for any completion order). Each clip's
    video comes from the source listing (``Clip.video``), so ledgers written before the field get it too."""
    video_of = {c.video_id: c.video for g in groups for c in g}
    videos, skipped, shards = [], [], []
    for g in sorted(done):
        entry = done[g]
        if entry["shard"]:
            shards.append(entry["shard"])
        videos += [(v, entry["shard"]) for v in entry["videos"]]
        skipped += entry["skipped"]
    videos.sort(key=lambda t: t[0]["video_id"])
    records = [
        VideoRecord(i, v["video_id"], v["person_id"], shard, v["key"], v["num_frames"], v.get("split"),
                    video_of.get(v["video_id"]) or v.get("video", ""))
        for i, (v, shard) in enumerate(videos)
    ]
    skipped.sort(key=lambda s: s["video_id"])
    m = Manifest(out, size, records, shards, skipped, backend, complete=len(done) == len(groups),
                 landmarks=landmark_set)
    m.save()
    return m


# --------------------------------------------------------------------------------------------------- the run
def preprocess(
    src: str | Path,
    out: str | Path,
    cfg: PreprocessConfig = PreprocessConfig(),
    backend: str = "auto",
    workers: int | None = 0,
    layout: str = "auto",
    detector: Any | None = None,
    device: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    landmarks: str = "track",
    part: Part | str | None = None,
) -> Report:
    """Preprocess every clip of ``src`` into shards in ``out``; resume an interrupted run. Returns the report.

    ``detector``: an already built ``LandmarkDetector`` (overrides ``backend``; tests pass fakes).
    ``landmarks``: ``track`` (detect on key frames, track between: ``talkinghead.landmarks.track``) or ``detect``
    (the detector on every sampled frame).
    ``workers``: 0 runs in this process, N > 0 uses N processes, None picks (dlib: one per core;
    face-alignment: 0, the GPU batches). Raises ``LayoutError`` for a source that is no supported layout,
    ``PreprocessError`` when ``out`` holds shards made with other settings. A full disk stops the run with
    ``report.stopped`` set; committed shards stay intact.

    ``part`` (``Part`` or ``"i/N"``): process only the shard groups of that part and record them under
    ``out/parts/`` (no manifest: ``merge`` writes it once every part is in); see the module doc.
    """
    t0 = time.time()
    src, out = Path(src), Path(out)
    if isinstance(part, str):
        part = Part.parse(part)
    if part is not None and overwrite:
        raise PreprocessError("overwrite with part would delete the other parts' shards: empty out once, then "
                              "submit the parts", option="overwrite")
    clips = discover(src, layout)
    src_root = src if src.is_dir() else src.parent
    if detector is None:
        detector = make_detector(backend, device=device)
    backend_name = getattr(detector, "name", type(detector).__name__)
    detector = _landmarker(detector, landmarks)
    if workers is None:  # dlib: one process per core; face-alignment batches on one GPU in this process
        workers = 0 if backend_name == "face-alignment" else _usable_cpus()
    out.mkdir(parents=True, exist_ok=True)
    if overwrite:
        _clear_out(out)
    vps = max(1, cfg.videos_per_shard)
    groups = [clips[i : i + vps] for i in range(0, len(clips), vps)]
    mine = range(len(groups)) if part is None else part.groups(len(groups))
    if part is None:
        remove_partial(out)
    else:
        (out / PARTS).mkdir(exist_ok=True)
        _remove_partial_groups(out, mine)
    fp = _fingerprint(cfg, backend_name, clips, landmarks)
    _check_resume(out, fp, part)

    done = {g: e for g, e in read_ledger(out).items() if g in mine}
    report = Report(str(src), str(out), backend_name, videos_total=sum(len(groups[g]) for g in mine))
    report.part = None if part is None else str(part)
    report.videos_resumed = sum(len(groups[g]) for g in done)
    todo = [(g, clip) for g in mine if g not in done for clip in groups[g]]
    pending: dict[int, list[ClipResult]] = {}
    bar = _progress_bar(len(clips), report.videos_resumed) if progress else None

    def counts() -> tuple[int, int]:
        return (
            sum(len(e["videos"]) for e in done.values())
            + sum(1 for rs in pending.values() for r in rs if r.sample is not None),
            sum(len(e["skipped"]) for e in done.values())
            + sum(1 for rs in pending.values() for r in rs if r.sample is None),
        )

    results = _results(todo, workers, detector, _WorkerSetup(cfg, src_root, backend_name, device, landmarks))
    try:
        for g, res in results:
            pending.setdefault(g, []).append(res)
            report.videos_read += 1
            if len(pending[g]) == len(groups[g]):
                done[g] = _commit_group(out, g, pending.pop(g), groups[g], part)
            if bar is not None:
                kept_n, skip_n = counts()
                bar.set_postfix(faces_kept=kept_n, skipped=skip_n, refresh=False)
                bar.update(1)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        remove_partial(out) if part is None else _remove_partial_groups(out, mine)
        report.stopped = (
            f"output disk is full ({e.strerror or e}) while writing to {out}: the {len(done)} shard "
            "groups committed before are intact; free space and re-run the same command to continue"
        )
    finally:
        results.close()  # stops worker processes at once on an error or Ctrl-C
        if bar is not None:
            bar.close()
    _finish(report, out, groups, done, cfg, part, mine, time.time() - t0)
    return report


def _progress_bar(total: int, resumed: int) -> Any:
    from tqdm import tqdm  # only with progress on (workers and tests run without)

    return tqdm(total=total, initial=resumed, unit="video", desc="preprocess", dynamic_ncols=True)


def _commit_group(out: Path, g: int, results: list[ClipResult], clips: list[Clip], part: Part | None) -> dict:
    """Write shard group ``g`` (its clips' ``results``, in any order) and append it to the ledger: its entry."""
    results = sorted(results, key=lambda r: r.video_id)
    kept = [r for r in results if r.sample is not None]
    video = {c.video_id: c.video for c in clips}
    name = SHARD_NAME.format(g) if kept else None
    if kept:
        write_shard(out / name, [r.sample for r in kept])
    entry = {
        "group": g,
        "shard": name,
        "videos": [
            {
                "video_id": r.video_id,
                "person_id": r.person_id,
                "key": r.sample.key,
                "num_frames": len(r.sample.frames),
                "split": r.split,
                "video": video[r.video_id],
            }
            for r in kept
        ],
        "skipped": [{"video_id": r.video_id, "reason": r.reason} for r in results if r.sample is None],
    }
    _append_ledger(out, entry, part)
    return entry


@dataclass(frozen=True)
class _WorkerSetup:
    """What a worker process needs to build its detector and read clips."""

    cfg: PreprocessConfig
    src_root: Path
    backend_name: str
    device: str | None
    landmarks: str


def _results(todo: list, workers: int, detector: Any, setup: _WorkerSetup) -> Iterator[tuple[int, ClipResult]]:
    """(group, result) of each clip of ``todo``: in this process (``workers`` <= 0) or a pool of them."""
    if workers <= 0:
        _init_worker(None, setup.cfg, setup.src_root)
        _WORKER["detector"] = detector
        for item in todo:
            yield _work(item)
        return
    # fork shares the already built detector; face-alignment on CUDA must not fork an initialised context
    method = "fork" if "fork" in mp.get_all_start_methods() and setup.backend_name != "face-alignment" else "spawn"
    ctx = mp.get_context(method)
    if method == "fork":
        _WORKER["detector"] = detector
        factory = None
    else:
        factory = _Factory(setup.backend_name, setup.device, setup.landmarks)
    with ctx.Pool(workers, initializer=_init_worker, initargs=(factory, setup.cfg, setup.src_root)) as pool:
        yield from pool.imap(_work, todo, chunksize=1)


def _finish(report: Report, out: Path, groups: list, done: dict, cfg: PreprocessConfig, part: Part | None,
            mine: range | list, seconds: float) -> None:
    """The report's totals, then the manifest and report files (a part: its report only); a full disk is noted."""
    report.kept = sum(len(e["videos"]) for e in done.values())
    report.skipped = sorted((s for e in done.values() for s in e["skipped"]), key=lambda s: s["video_id"])
    report.frames_written = sum(v["num_frames"] for e in done.values() for v in e["videos"])
    report.shards = sum(1 for e in done.values() if e["shard"])
    report.seconds = seconds
    try:
        if part is None:
            write_manifest(out, groups, done, cfg.size, report.backend, cfg.landmark_set)
            (out / REPORT).write_text(json.dumps({**asdict(report), "complete": report.complete}, indent=1))
        else:
            write_json(out / PARTS / f"{part.name}.report.json", {**asdict(report), "complete": report.complete})
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        remove_partial(out) if part is None else _remove_partial_groups(out, mine)
        report.stopped = report.stopped or (
            f"output disk is full ({e.strerror}): manifest.json could not be "
            "written; free space and re-run the same command"
        )


def merge(
    src: str | Path,
    out: str | Path,
    cfg: PreprocessConfig = PreprocessConfig(),
    backend: str = "auto",
    layout: str = "auto",
    landmarks: str = "track",
) -> Report:
    """Write ``manifest.json`` and ``report.json`` of ``out`` once every part has committed all its groups.

    Builds no detector and reads no video: it re-lists ``src`` (the clip list decides the groups) and the
    ledgers. Raises ``PreprocessError`` naming the parts still missing, or the parts made with other settings
    than ``cfg``/``backend`` (``auto``: whichever backend the parts used).
    """
    t0 = time.time()
    src, out = Path(src), Path(out)
    clips = discover(src, layout)
    settings = settings_files(out) if out.is_dir() else []
    if not settings:
        raise PreprocessError(f"nothing to merge in {out}: preprocess part i/N into it for i = 1..N first",
                              option="part")
    recorded = {p: json.loads(p.read_text()) for p in settings}
    if backend == "auto":
        used = sorted({str(c.get("backend")) for c in recorded.values()})
        if len(used) > 1:
            raise PreprocessError(f"parts in {out} used different landmark backends ({', '.join(used)}): "
                                  "re-run the odd ones with the same --backend")
        backend = used[0]
    fp = _fingerprint(cfg, backend, clips, landmarks)
    bad = [(p, d) for p in settings if (d := _settings_diffs(p, fp))]
    if bad:
        names = ", ".join(_who(p) for p, _ in bad[:5])
        raise PreprocessError(
            f"cannot merge {out}: {len(bad)} part(s) were made with other settings than this merge's ({names}; "
            f"{'; '.join(bad[0][1])}): merge with the arguments the parts were run with"
        )
    vps = max(1, cfg.videos_per_shard)
    groups = [clips[i : i + vps] for i in range(0, len(clips), vps)]
    done = {g: e for g, e in read_ledger(out).items() if g < len(groups)}
    missing = [g for g in range(len(groups)) if g not in done]
    if missing:
        counts = [int(str(c["part"]).split("/")[1]) for c in recorded.values() if c.get("part")]
        if not counts:
            raise PreprocessError(f"cannot merge {out}: {len(missing)} of {len(groups)} shard groups are not done; "
                                  "re-run the same preprocess command to finish them")
        n = max(counts)
        parts = [Part(i, n) for i in range(1, n + 1) if any(g in Part(i, n).groups(len(groups)) for g in missing)]
        listed = ", ".join(str(p) for p in parts[:32]) + (f", ... ({len(parts) - 32} more)" if len(parts) > 32 else "")
        raise PreprocessError(
            f"cannot merge {out}: {len(parts)} of {n} parts missing or unfinished: {listed}; run "
            f"`--part i/{n}` for each (re-running a part continues it)"
        )
    if not (out / CONFIG).is_file():
        write_json(out / CONFIG, {**fp, "part": None})  # a later whole run in OUT sees the same settings
    report = Report(str(src), str(out), backend, videos_total=len(clips), part="merge")
    report.videos_resumed = len(clips)
    report.kept = sum(len(e["videos"]) for e in done.values())
    report.skipped = sorted((s for e in done.values() for s in e["skipped"]), key=lambda s: s["video_id"])
    report.frames_written = sum(v["num_frames"] for e in done.values() for v in e["videos"])
    report.shards = sum(1 for e in done.values() if e["shard"])
    write_manifest(out, groups, done, cfg.size, backend, cfg.landmark_set)
    report.seconds = time.time() - t0
    write_json(out / REPORT, {**asdict(report), "complete": report.complete})
    return report


@dataclass(frozen=True)
class _Factory:
    """Picklable detector factory for spawned workers."""

    backend: str
    device: str | None
    landmarks: str = "detect"

    def __call__(self):
        return _landmarker(make_detector(self.backend, device=self.device), self.landmarks)


def _landmarker(detector: Any, landmarks: str) -> Any:
    """The detector itself (``detect``) or a face tracker over it (``track``)."""
    return make_landmarker(detector, landmarks)


# -------------------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m data_modules.preprocess",
        description="Crop faces of talking-head videos (VoxCeleb1/2 mp4, video-preprocessing clips, a "
        "folder of images, one video), find 68 landmarks, and write WebDataset shards + manifest.json "
        "for the VoxCeleb DataModules. Stop it at any time and re-run the same command to continue.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d = PreprocessConfig()
    p.add_argument(
        "--src", required=True, help="source: e.g. /data/voxceleb2/dev/mp4 (<person>/<video>/<utt>.mp4)"
    )
    p.add_argument("--out", required=True, help="output folder for shards, manifest.json, report.json")
    p.add_argument("--layout", default="auto", choices=LAYOUTS, help="source layout (auto detects it)")
    p.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "dlib", "face-alignment"),
        help="landmarks: face-alignment (paper's FAN, GPU, downloads weights once), dlib (offline), "
        "auto = face-alignment if its weights are cached, else dlib",
    )
    p.add_argument(
        "--landmarks",
        default="track",
        choices=("track", "detect"),
        help="track: detect the face on key frames (first, every 32nd sampled frame, scene cuts, tracking "
        "failures) and fit the 68 points from the previous frame's box in between (~3x faster); detect: run the "
        "detector on every sampled frame (earlier versions' shards, byte for byte)",
    )
    p.add_argument(
        "--landmark-set",
        default=d.landmark_set,
        choices=tuple(LANDMARK_SETS),
        help="points written per frame: ibug68 (the paper's 68) or ibug68+iris (and each eye's iris centre and "
        "rim point, located in the frame; for models with model.landmarks=ibug68+iris)",
    )
    p.add_argument(
        "--device", default=None, help="device for face-alignment (cuda, cpu; default cuda if present)"
    )
    p.add_argument("--size", type=int, default=d.size, help="side of the square face crops, px")
    p.add_argument(
        "--frames-per-video",
        type=int,
        default=d.frames_per_video,
        help="frames sampled evenly from each clip (0 = all; VoxCeleb is huge; make evaluate needs 64 per "
        "held-out clip: T=32 sources + 32 targets)",
    )
    p.add_argument("--min-face", type=int, default=d.min_face, help="skip clips whose face is narrower, px")
    p.add_argument(
        "--margin",
        type=float,
        default=d.margin,
        help="crop side = (1 + margin) x the box around all landmarks of the clip",
    )
    p.add_argument(
        "--min-detected",
        type=float,
        default=d.min_detected,
        help="skip clips with a face in fewer of their sampled frames",
    )
    p.add_argument("--videos-per-shard", type=int, default=d.videos_per_shard, help="clips per tar shard")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="parallel processes; default: one per CPU core for dlib, 0 (this process, batched on the "
        "GPU) for face-alignment",
    )
    p.add_argument("--overwrite", action="store_true", help="delete earlier shards in --out and start again")
    p.add_argument(
        "--part",
        default=None,
        metavar="I/N",
        help="process only part I of N (1 <= I <= N) of the shard groups, e.g. on one machine of a cluster; "
        "parts may run at once into one shared --out; then run --merge",
    )
    p.add_argument(
        "--merge",
        action="store_true",
        help="write manifest.json + report.json once every --part is done (else list the missing parts); "
        "give the same settings as the parts",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> PreprocessConfig:
    """The shard-deciding settings of parsed command-line arguments."""
    return PreprocessConfig(
        size=args.size,
        frames_per_video=args.frames_per_video,
        min_face=args.min_face,
        margin=args.margin,
        min_detected=args.min_detected,
        videos_per_shard=args.videos_per_shard,
        landmark_set=args.landmark_set,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    try:
        if args.merge:
            if args.part:
                raise PreprocessError("--merge and --part exclude each other: run the parts, then --merge once")
            report = merge(args.src, args.out, cfg, backend=args.backend, layout=args.layout, landmarks=args.landmarks)
            print(report.summary())
            return 0
        report = preprocess(
            args.src,
            args.out,
            cfg,
            backend=args.backend,
            workers=args.workers,
            layout=args.layout,
            device=args.device,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            landmarks=args.landmarks,
            part=args.part,
        )
    except (LayoutError, FileNotFoundError, PreprocessError) as e:
        flags = {"part": "--part", "layout": "--layout", "overwrite": "--overwrite"}  # the library's words -> flags
        flag = flags.get(getattr(e, "option", None) or "")
        print(f"error: {e}" + (f" ({flag})" if flag else ""), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\ninterrupted: committed shards are kept; re-run the same command to continue", file=sys.stderr
        )
        return 130
    print(report.summary())
    return 0 if report.stopped is None else 1


if __name__ == "__main__":
    sys.exit(main())
