"""Pretrained networks defined in-project (VGG19, VGGFace, FID InceptionV3) and their weight files."""
