"""The bounded decoder (talkinghead.decode) under hostile input: a video whose later frames lie about their size,
a live frame of huge dimensions in few bytes, a decompression-bomb PNG, a 16-bit photo; each over-bound input is
one line naming the file and the bound, refused before a full-size array exists (peak RSS measured)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import demo_helpers
from finetune_helpers import tiny_checkpoint
from talkinghead import decode

REPO = Path(__file__).resolve().parents[1]


def env() -> dict[str, str]:
    """The environment of a child process: this checkout's code first."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO), str(REPO / "tests")]),
                OMP_NUM_THREADS="1")


#: a refused input may raise a process's peak RSS by at most this much (the refused frames would take 100s of MB)
REFUSED_RISE_MB = 40


def flat_png(width: int, height: int, gray_bits: int = 0, value: int = 128) -> bytes:
    """A PNG of one flat colour, written row by row (a few KB for any size; nothing of its pixels is held):
    8-bit RGB, or ``gray_bits``-bit grayscale (1, 8 or 16)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    depth, ctype = (gray_bits, 0) if gray_bits else (8, 2)
    row = b"\x00" + bytes([value & 0xFF]) * ((width * depth * (1 if gray_bits else 3) + 7) // 8)
    co = zlib.compressobj(9)
    idat = b"".join(co.compress(row) for _ in range(height)) + co.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, ctype, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def lying_video(path: Path, big: int, frames: int = 4, side: int = 64) -> Path:
    """An AVI of PNG frames whose stream header and first ``frames`` frames are ``side``², then one ``big``² frame
    (a flat PNG of a few hundred KB)."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("png", rate=10)
        stream.width = stream.height = side
        stream.pix_fmt = "rgb24"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((side, side, 3), 90 + i, np.uint8), format="rgb24")
            frame.pts = i
            for pkt in stream.encode(frame):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)
        pkt = av.Packet(flat_png(big, big))
        pkt.stream = stream
        pkt.pts = pkt.dts = frames
        pkt.time_base = stream.time_base
        out.mux(pkt)
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("decode") / "tiny")


def peak_rss_run(argv: list[str], cwd: Path) -> tuple[int, str, float]:
    """Run ``argv``; -> (exit code, stderr, the process's peak RSS in MB) (os.wait4: this child's own rusage)."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, err, usage.ru_maxrss / 1024


# ------------------------------------------------------------------------------------------------ videos
def test_a_lying_video_is_refused_on_the_frame_that_lies(tmp_path, monkeypatch) -> None:
    video = lying_video(tmp_path / "driver.avi", 6000)
    with pytest.raises(decode.DecodeBoundError) as info:
        decode.read_video(video, max_side=512)
    assert str(info.value) == ("driver.avi: frame 4 is 6000×6000 = 36 Mpx, over the bound of 16.8 Mpx per frame "
                               "(raise it with TALKINGHEAD_MAX_MEGAPIXELS=...)")
    # a codec whose packets PIL cannot read: FFmpeg's max_pixels refuses the frame before allocating it
    monkeypatch.setattr(decode, "IMAGE_CODECS", set())
    with pytest.raises(decode.DecodeBoundError, match=r"^driver\.avi: a frame at or before frame \d is over the "
                                                      r"bound of 16\.8 Mpx per frame \(FFmpeg refused"):
        decode.read_video(video)
    # within the bound, a frame of another size is scaled to the first one's (was a numpy broadcast error)
    monkeypatch.setenv("TALKINGHEAD_MAX_MEGAPIXELS", "40")
    frames, idx, _, asked = decode.read_video(lying_video(tmp_path / "ok.avi", 200))
    assert frames.shape == (5, 64, 64, 3) and idx.tolist() == [0, 1, 2, 3, 4] and asked == 5
    assert int(frames[4].min()) == int(frames[4].max()) == 128  # the flat big frame, scaled down


def test_frames_per_input_and_bytes_per_job_are_bounded(tmp_path) -> None:
    video = lying_video(tmp_path / "clip.avi", 64, frames=5)  # 6 frames of 64²
    with decode.job(decode.Bounds(max_frames=5)):
        with pytest.raises(decode.DecodeBoundError, match=r"^clip\.avi: 6 frames, over the bound of 5 frames per "
                                                          r"input$"):
            decode.read_video(video)
    with decode.job(decode.Bounds(max_bytes=6 * 64 * 64 * 3 + 100)) as budget:
        decode.read_video(video)  # 72 KiB: fits
        assert budget.used == 6 * 64 * 64 * 3
        with decode.job():  # a job inside a job shares its budget
            with pytest.raises(decode.DecodeBoundError, match=r"^clip\.avi: decoding 6 frames of 64×64 takes "
                                                              r"72 KiB, over the bound of 72\.1 KiB decoded per job "
                                                              r"\(72 KiB of it decoded already\): use fewer or smaller "
                                                              r"frames$"):
                decode.read_video(video)


LIE_SIDE = 8000  # the lying frame: 8000² = 64 Mpx, 192 MB as RGB (FFmpeg's frame alone), a 200 KB file


def test_a_lying_video_on_the_cli_is_one_line_and_decodes_nothing_big(ckpt, tmp_path) -> None:
    video = lying_video(tmp_path / "lying clip.avi", LIE_SIDE)
    assert video.stat().st_size < 2**20
    cmd = [sys.executable, "-m", "talkinghead.cli", "finetune", f"ckpt={ckpt}", f"out_dir={tmp_path / 'out'}",
           "~logger", "progress=false", "T=2", "mode=FF"]
    code, err, peak = peak_rss_run([*cmd, f"id={video}"], tmp_path)
    assert code == 2 and err.strip().splitlines() == [
        "error: lying clip.avi: frame 4 is 8000×8000 = 64 Mpx, over the bound of 16.8 Mpx per frame "
        "(raise it with TALKINGHEAD_MAX_MEGAPIXELS=...)"], err
    # the same command on a plain 64² video of as many frames reaches its face detection: its peak is the baseline
    plain = lying_video(tmp_path / "plain.avi", 64)
    _, _, base = peak_rss_run([*cmd, f"id={plain}", "detector=no-such-backend"], tmp_path)
    print(f"CLI peak RSS: {peak:.0f} MB refused, {base:.0f} MB on a plain video of 64² frames")
    assert peak - base < REFUSED_RISE_MB, (peak, base)
    assert not (tmp_path / "out").exists()


def test_a_lying_video_through_the_api_is_one_line(ckpt, tmp_path) -> None:
    from talkinghead import api

    video = lying_video(tmp_path / "lying.avi", 6000)
    meta = api.load_model(ckpt)
    with pytest.raises(decode.DecodeBoundError) as info:
        api.make_avatar(video, T=2, mode="FF", meta=meta, out=tmp_path / "a" / "avatar.pt", detector="no-such")
    assert str(info.value).startswith("lying.avi: frame 4 is 6000×6000 = 36 Mpx, over the bound of 16.8 Mpx")
    with decode.job(decode.Bounds(max_pixels=2000)), pytest.raises(decode.DecodeBoundError) as info:
        api.make_avatar(video, T=2, mode="FF", meta=meta, out=tmp_path / "a" / "avatar.pt", detector="no-such")
    assert str(info.value) == "lying.avi: frame 0 is 64×64 = 0.0041 Mpx, over the bound of 0.002 Mpx per frame"
    assert not (tmp_path / "a").exists()


# ------------------------------------------------------------------------------------------------ live frames
LIVE_PROBE = """
import json, resource, sys
from types import SimpleNamespace
from talkinghead import demo
import gradio as gr
from gradio.data_classes import ImageData
camera = demo.live_camera(gr, sources=["webcam"], streaming=True, type="numpy")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = camera.preprocess(ImageData(path=sys.argv[1], orig_name="frame.png"))
url = "data:image/png;base64," + __import__("base64").b64encode(open(sys.argv[1], "rb").read()).decode()
out2 = demo.read_live_frame(SimpleNamespace(url=url, path=None))
status = demo.Demo.live_frame(SimpleNamespace(public=lambda m: m), out, "avatar")
rise = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
ok = demo.read_live_frame(SimpleNamespace(url=None, path=sys.argv[2]))
print(json.dumps({"out": str(out), "type": type(out).__name__, "out2": str(out2), "status": status, "rise": rise,
                  "ok": list(ok.shape)}))
"""


def test_a_huge_live_frame_is_refused_before_it_is_decoded(tmp_path) -> None:
    from PIL import Image

    huge = tmp_path / "frame.png"
    huge.write_bytes(flat_png(12000, 12000, gray_bits=1))  # 144 Mpx: 432 MB as RGB, 18 KB as sent
    small = tmp_path / "small.png"
    Image.fromarray(np.full((48, 64, 3), 7, np.uint8)).save(small)
    run = subprocess.run([sys.executable, "-c", LIVE_PROBE, str(huge), str(small)], env=env(), capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    line = "the live frame: 12000×12000 = 144 Mpx, over the bound of 16.8 Mpx per image"
    assert got["type"] == "DecodeBoundError" and got["out"] == line == got["out2"], got
    assert got["status"] == [None, f"**Error:** {line}"], got
    assert got["ok"] == [48, 64, 3], got
    print(f"peak RSS rise for the refused 12000² live frame: {got['rise']:.1f} MB")
    assert got["rise"] < REFUSED_RISE_MB, got


def test_a_live_frame_over_the_encoded_bound_is_refused_unread(tmp_path) -> None:
    from talkinghead.demo import read_live_frame

    frame = tmp_path / "f.png"
    frame.write_bytes(flat_png(64, 64))
    out = read_live_frame(SimpleNamespace(url=None, path=str(frame)), decode.Bounds(max_encoded=100))
    assert str(out).startswith("the live frame: ") and str(out).endswith("MB encoded, over the bound of 0.0001 MB "
                                                                         "per image"), out


# ------------------------------------------------------------------------------------------------ images
def test_a_decompression_bomb_png_is_one_line_on_the_cli(ckpt, tmp_path) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(flat_png(20000, 20000, gray_bits=1))  # 400 Mpx: over PIL's own bomb limit too
    code, err, peak = peak_rss_run([sys.executable, "-m", "talkinghead.cli", "finetune", f"ckpt={ckpt}",
                                    f"id={bomb}", "T=1", "mode=FF", f"out_dir={tmp_path / 'out'}", "~logger"],
                                   tmp_path)
    assert code == 2 and err.strip().splitlines() == [
        f"error: {bomb}: 400 Mpx, over the bound of 16.8 Mpx per image (a decompression bomb?) "
        "(raise it with TALKINGHEAD_MAX_MEGAPIXELS=...)"], err  # the photo named as given
    # under PIL's limit but over ours: the header's size named
    big = tmp_path / "big.png"
    big.write_bytes(flat_png(9000, 9000, gray_bits=1))
    with pytest.raises(decode.DecodeBoundError, match=r"^big\.png: 9000×9000 = 81 Mpx, over the bound of 16\.8 Mpx"):
        decode.read_image(big)


def test_a_16_bit_photo_of_a_face_decodes_as_its_8_bit_version(tmp_path) -> None:
    import cv2
    from PIL import Image

    face = demo_helpers.render("person")[0][0]  # uint8 (96, 96, 3), a synthetic head
    gray8 = np.asarray(Image.fromarray(face).convert("L"))
    Image.fromarray(gray8).save(tmp_path / "g8.png")
    Image.fromarray(gray8.astype(np.uint16) * 257).save(tmp_path / "g16.png")  # mode I;16
    Image.fromarray(gray8.astype(np.uint16) * 257).save(tmp_path / "g16.tif")
    cv2.imwrite(str(tmp_path / "rgb16.png"), face[..., ::-1].astype(np.uint16) * 257)  # 16-bit RGB
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    want = decode.read_image(tmp_path / "g8.png").astype(int)
    assert want.shape == (96, 96, 3) and 40 < want.mean() < 200
    for name in ("g16.png", "g16.tif"):
        got = decode.read_image(tmp_path / name).astype(int)
        assert got.shape == want.shape and np.abs(got - want).max() <= 1, name
        small = decode.read_image(tmp_path / name, max_side=48).astype(int)  # scaled while decoding
        assert small.shape == (48, 48, 3)
        assert np.abs(small - decode.read_image(tmp_path / "g8.png", max_side=48)).max() <= 1, name
    got = decode.read_image(tmp_path / "rgb16.png").astype(int)
    assert np.abs(got - face.astype(int)).max() <= 1
