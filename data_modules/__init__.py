"""DataModules for talkinghead: they own the data, nothing else does.

Every dataset in this package yields samples of one common form (``SampleDict``) so that the
LightningModules never know where frames came from (procedural heads, VoxCeleb shards, a user's video):

==================  ==============================  ====================================================
key                 type / shape                    meaning
==================  ==============================  ====================================================
``frames``          uint8 ``(K+1, 3, H, W)``        RGB frames of ONE video, 0..255; ``frames[:K]`` are
                                                    the K source frames, ``frames[K]`` the target.
``landmark_images`` uint8 ``(K+1, 3, H, W)``        the rasterised landmark images of those frames
                                                    (see ``talkinghead.landmarks.draw``).
``landmarks``       float32 ``(K+1, 68, 2)``        iBUG-68 points (x, y) in pixels of the H x W frame.
``video_index``     int64 scalar                    row of the discriminator's W table (0..num_videos-1)
``person_id``       str                             e.g. ``"id00012"``
``video_id``        str                             e.g. ``"id00012/abc123"`` (unique over the set): the
                                                    unit of the W row, a VoxCeleb video with all its
                                                    utterances (``data.unit=video``) or one clip
                                                    ``"id00012/abc123/00001"`` (``data.unit=utterance``)
==================  ==============================  ====================================================

Training loaders send uint8 images (a quarter of float32's bytes host -> device); the LightningModule turns them
into float32 in [-1, 1] on the device (``on_after_batch_transfer``; ``talkinghead.visualize.from_uint8``).
Validation and fine-tuning samples may already be float32 in [-1, 1]; the conversion leaves those as they are.

A DataModule exposes ``num_videos`` (the size of D's W table, known after ``setup``/``prepare``)
and ``image_size``.
"""
