"""DataModules for talkinghead: they own the data, nothing else does.

Every dataset in this package yields samples of one common form (``SampleDict``) so that the
LightningModules never know where frames came from (procedural heads, VoxCeleb shards, a user's video):

==================  ==============================  ====================================================
key                 type / shape                    meaning
==================  ==============================  ====================================================
``frames``          float32 ``(K+1, 3, H, W)``      RGB frames of ONE video in [-1, 1]; ``frames[:K]``
                                                    are the K source frames, ``frames[K]`` the target.
``landmark_images`` float32 ``(K+1, 3, H, W)``      the rasterised landmark images of those frames,
                                                    in [-1, 1] (see ``talkinghead.landmarks.draw``).
``landmarks``       float32 ``(K+1, 68, 2)``        iBUG-68 points (x, y) in pixels of the H x W frame.
``video_index``     int64 scalar                    row of the discriminator's W table (0..num_videos-1)
``person_id``       str                             e.g. ``"id00012"``
``video_id``        str                             e.g. ``"id00012/abc123"`` (unique over the set): the
                                                    unit of the W row, a VoxCeleb video with all its
                                                    utterances (``data.unit=video``) or one clip
                                                    ``"id00012/abc123/00001"`` (``data.unit=utterance``)
==================  ==============================  ====================================================

A DataModule exposes ``num_videos`` (the size of D's W table, known after ``setup``/``prepare``)
and ``image_size``.
"""
