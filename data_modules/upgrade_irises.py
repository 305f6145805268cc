"""Add the irises to shards made with 68 points, without decoding the videos again.

Usage (``make upgrade-shards SHARDS=...`` runs this)::

    python -m data_modules.upgrade_irises /data/vox2-shards

A shard folder preprocessed before landmark sets (or with ``--landmark-set ibug68``) holds per clip its cropped
frames (JPEG) and their 68 points.  A model with ``model.landmarks=ibug68+iris`` needs 72 points per frame: this
pass reads every clip's stored crops and 68 points, locates the irises in each crop
(``talkinghead.landmarks.iris``: NaN rows where an iris is absent, never guessed) and rewrites the shard with the
same JPEG bytes and metadata and ``(T, 72, 2)`` points.  Each shard is rewritten atomically (``write_shard``); the
manifest's ``landmarks`` becomes ``ibug68+iris`` once every shard holds irises, and the recorded preprocessing
settings (``config.json``, ``parts/*.settings.json``) say so too, so that re-running ``make preprocess`` on the
folder continues it only with ``--landmark-set ibug68+iris``.  Stopped at any moment, re-running it finishes the
job (shards that already hold irises are kept as they are).

The crops are smaller than the source frames (``--size``, 256² by default, eyes ~25 px wide), so the irises
found here are those of the crop; ``make preprocess --landmark-set ibug68+iris`` locates them in the whole frame.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_modules.preprocess import settings_files, write_json
from data_modules.remote import is_remote
from data_modules.shards import (
    MANIFEST,
    ManifestError,
    VideoSample,
    iter_shard,
    load_manifest,
    remove_partial,
    write_shard,
)
from talkinghead.errors import TalkingHeadError
from talkinghead.landmarks.iris import points_with_irises
from talkinghead.landmarks.sets import IBUG68_IRIS, count_absent


class UpgradeError(TalkingHeadError, ValueError):
    """A folder that cannot be upgraded (not a local shard folder, points of an unknown set)."""


@dataclass
class UpgradeReport:
    """What an upgrade did: shards rewritten / already holding irises, clips and frames, frames with an iris
    absent (either eye)."""

    root: str
    shards_upgraded: int = 0
    shards_kept: int = 0
    clips: int = 0
    frames: int = 0
    iris_absent: int = 0

    def summary(self) -> str:
        return (f"upgrade-irises {self.root}: {self.shards_upgraded} shards given irises, {self.shards_kept} had them "
                f"already; {self.clips} clips, {self.frames} frames, iris absent in {self.iris_absent}/{self.frames} "
                f"frames (closed eyes, or none found); manifest landmarks: {IBUG68_IRIS}")


def upgrade_sample(sample: VideoSample) -> VideoSample:
    """One clip's ``(T, 68, 2)`` points -> ``(T, 72, 2)`` with the irises located in its stored crops."""
    points = np.stack([points_with_irises(sample.frame(i), p) for i, p in enumerate(sample.landmarks)])
    return VideoSample(sample.key, sample.frames, points.astype(np.float32), sample.meta)


def _record_set(root: Path) -> None:
    """The preprocessing settings files of ``root`` record the set (as ``make preprocess --landmark-set`` does)."""
    for path in settings_files(root):
        data = json.loads(path.read_text())
        if data.get("landmark_set") != IBUG68_IRIS:
            write_json(path, {**data, "landmark_set": IBUG68_IRIS})


def upgrade_irises(root: str | Path) -> UpgradeReport:
    """Give every shard of the local shard folder ``root`` iris points (see the module doc); returns the report.

    Raises ``UpgradeError`` (one line) for a remote root or points of neither set, ``ManifestError`` for a folder
    without a manifest."""
    if is_remote(root):
        raise UpgradeError(f"{root} is remote: upgrade a local copy of the shard folder, then upload it")
    manifest = load_manifest(root)
    folder = Path(manifest.root)
    report = UpgradeReport(str(folder))
    remove_partial(folder)
    for shard in manifest.shards:
        samples = list(iter_shard(folder / shard))
        shapes = {s.landmarks.shape[1:] for s in samples}
        if shapes == {(72, 2)}:
            report.shards_kept += 1
            new = samples
        elif shapes <= {(68, 2), (72, 2)}:
            new = [s if s.landmarks.shape[1:] == (72, 2) else upgrade_sample(s) for s in samples]
            write_shard(folder / shard, new)
            report.shards_upgraded += 1
        else:
            raise UpgradeError(f"{folder / shard} holds points of shapes {sorted(shapes)}: neither 68 nor 72 a frame")
        report.clips += len(new)
        report.frames += sum(len(s.landmarks) for s in new)
        report.iris_absent += sum(count_absent(s.landmarks) for s in new)
    _record_set(folder)
    manifest.landmarks = IBUG68_IRIS
    manifest.save()
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m data_modules.upgrade_irises",
        description="Add the irises (ibug68+iris, 72 points a frame) to shard folders made with 68 points, from "
        "their stored crops: no video is decoded again. Stop it at any time and re-run it to finish.",
    )
    p.add_argument("shards", nargs="+", help=f"shard folders (with {MANIFEST}) made by make preprocess")
    args = p.parse_args(argv)
    try:
        for root in args.shards:
            print(upgrade_irises(root).summary())
    except (ManifestError, UpgradeError, OSError) as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: the shards rewritten so far are complete; re-run the same command to finish",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
