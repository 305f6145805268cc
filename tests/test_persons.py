"""Every DataModule answers the same small person API (data_modules.persons), built from its own config."""
from __future__ import annotations

import pytest
import torch

from data_modules.persons import PersonSource, open_source
from talkinghead.config import compose


def test_the_synthetic_module_answers_the_person_api_from_its_config() -> None:
    data = compose("meta_learn", []).data
    source = open_source({**dict(data), "an_old_key": 1}, image_size=32)  # keys its class does not take are left out
    assert isinstance(source, PersonSource) and "synthetic" in source.where
    held = source.held_out_video_ids()
    assert held and set(held) <= set(source.known_ids())
    person = held[0].split("/")[0]
    frames = source.person_frames(person, video_length=3)
    assert frames.person_id == person and frames.num_frames == 3 * len(frames.video_ids) > 3
    batch = frames.loader([0, 4])
    assert batch["frames"].shape == (2, 3, 32, 32) and batch["landmarks"].shape == (2, 72, 2)  # embedded: ibug68+iris
    assert not torch.equal(batch["frames"][0], batch["frames"][1]), "position 4 is another video's frame"


def test_the_voxceleb_module_answers_the_person_api_on_shards(synthetic_shards, monkeypatch) -> None:
    root, _ = synthetic_shards
    monkeypatch.delenv("DATA_ROOT", raising=False)
    data = compose("meta_learn", ["data=vox2", "data.test_fraction=0.5", "model.landmarks=ibug68"]).data  # 68-pt shards
    source = open_source(data, image_size=32, root=str(root))
    assert isinstance(source, PersonSource) and source.where == f"{root}/manifest.json"
    held = source.held_out_video_ids()
    known = source.known_ids()
    assert held and set(held) <= set(known) and len(held) < len(known)
    frames = source.person_frames(held[0])
    assert frames.video_ids and all(v.startswith(held[0] + "/") for v in frames.video_ids)  # its utterances
    assert frames.num_frames > 0
    assert frames.loader([0])["frames"].shape == (1, 3, 32, 32)
    with pytest.raises(KeyError, match="not a person, video or clip"):
        source.person_frames("id99999")


def test_evaluate_unit_makes_every_clip_a_held_out_video(synthetic_shards, monkeypatch) -> None:
    from talkinghead.evaluation.evaluate import held_out_videos, set_unit

    root, _ = synthetic_shards
    monkeypatch.delenv("DATA_ROOT", raising=False)
    meta = compose("meta_learn", ["data=vox2", "data.test_fraction=0.5", f"data.root={root}", "model.image_size=32",
                                  "model.landmarks=ibug68"])  # the shards hold 68 points
    videos = held_out_videos(meta, None)
    assert videos and all(v.count("/") == 1 for v in videos)  # person/youtube id
    set_unit(meta, "utterance")
    clips = held_out_videos(meta, None)
    assert clips and all(c.count("/") == 2 for c in clips)  # person/youtube id/utterance
    assert {c.rsplit("/", 1)[0] for c in clips} == set(videos)
    set_unit(meta, "video")
    assert held_out_videos(meta, None) == videos


def test_a_config_that_names_no_data_module_is_one_line() -> None:
    with pytest.raises(ValueError, match="names no DataModule"):
        open_source({"root": "/x"}, image_size=32)
    with pytest.raises(ValueError, match="does not answer the person API"):
        open_source({"_target_": "collections.OrderedDict"}, image_size=32)
