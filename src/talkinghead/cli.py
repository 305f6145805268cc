"""The one command line of talkinghead: ``talkinghead <stage> [key=value ...]``.

Stages take Hydra overrides (``model=paper``, ``K=8``, ``trainer=ddp``, ``optim.g.lr=1e-4``,
``experiment=vox2_paper``).  Errors a user can fix print as one line and exit with status 2.

Each stage's modules are imported inside the function that runs it: ``talkinghead --help`` and a typo answer in a
fraction of a second instead of the seconds torch, Lightning and dlib take to load.
"""
from __future__ import annotations

import argparse
import dataclasses
import shlex
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from talkinghead.config import PATH_KEYS, hydra_overrides, hydra_quote  # noqa: F401 - the CLI's names
from talkinghead.errors import TalkingHeadError
from talkinghead.outputs import check_outputs, check_writable
from talkinghead.stops import Interrupted, as_interrupted, sigterm_raises

META_LEARN_HELP = """\
Meta-learn the embedder E, generator G and projection discriminator D (paper Sec. 3.2).

Overrides are Hydra's key=value.  Config groups (files in experiments/<group>/):
{groups}
Examples:
  talkinghead meta-learn                                  # embedded default: synthetic heads, CPU, minutes
  talkinghead meta-learn experiment=vox2_paper data.root=/data/vox2-shards
  talkinghead meta-learn K=8 iterations=2000 logger=csv   # change single values
  talkinghead meta-learn --cfg experiment=vox2_paper      # print the composed config, train nothing
Runs resume from <run_dir>/checkpoints/last.ckpt; resume=false starts afresh (the old checkpoints are kept).
"""


def _groups_text() -> str:
    from talkinghead.config import group_options, groups

    try:
        return "".join(f"  {g:<11} {', '.join(group_options(g))}\n" for g in groups())
    except TalkingHeadError as exc:
        return f"  ({exc})\n"


def _meta_learn(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from talkinghead.config import compose

    cfg = compose("meta_learn", hydra_overrides(args.overrides))
    if args.cfg:
        print(OmegaConf.to_yaml(cfg))
        return 0
    from talkinghead.training.train import meta_learn

    meta_learn(cfg)
    return 0


def _config_stage(module: str, compose_name: str, main_name: str) -> Callable[[argparse.Namespace], int]:
    """A Hydra-configured stage: ``--cfg`` prints the composed config, otherwise ``main(overrides)`` runs."""

    def run(args: argparse.Namespace) -> int:
        import importlib

        from omegaconf import OmegaConf

        mod = importlib.import_module(module)
        if args.cfg:
            print(OmegaConf.to_yaml(getattr(mod, compose_name)(hydra_overrides(args.overrides))))
        else:
            getattr(mod, main_name)(hydra_overrides(args.overrides))
        return 0

    return run


_finetune = _config_stage("talkinghead.cli", "compose_finetune", "finetune_main")
_evaluate = _config_stage("talkinghead.evaluation.evaluate", "compose_evaluate", "evaluate_main")


# ------------------------------------------------------------------------------------------------ finetune
def compose_finetune(overrides: Sequence[str]) -> Any:
    """``experiments/finetune.yaml`` with ``overrides``, checked."""
    from talkinghead.config import compose
    from talkinghead.errors import ConfigError
    from talkinghead.inference.fewshot import MODES

    cfg = compose("finetune", hydra_overrides(overrides))
    if str(cfg.mode) not in MODES:
        raise ConfigError(f"mode must be FT (fine-tune) or FF (feed-forward, no fine-tuning), got {cfg.mode}")
    for key, kind, low, nullable in FINETUNE_NUMBERS:
        value = cfg.get(key)
        if value is None and nullable:
            continue
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= low
        if kind is int and not (ok and isinstance(value, int)):
            raise ConfigError(f"{key} must be an integer >= {low}{' or null' if nullable else ''}, got {value!r}")
        if kind is float and not (ok and value > 0 if low == 0 else ok):
            sign = "> 0" if low == 0 else f">= {low}"
            raise ConfigError(f"{key} must be a number {sign}{' or null' if nullable else ''}, got {value!r}")
    return cfg


#: (key, type, lowest value, may be null) of the numbers of experiments/finetune.yaml, checked before any work
FINETUNE_NUMBERS = (
    ("T", int, 1, False), ("steps", int, 0, True), ("epochs", float, 0, True), ("batch_size", int, 1, False),
    ("d_steps_per_g", int, 1, False), ("max_frames", int, 0, False), ("preview_frames", int, 0, False),
    ("synthetic_video_length", int, 1, False), ("seed", int, 0, False), ("lr_g", float, 0, False),
    ("lr_d", float, 0, False), ("eps", float, 0, False),
)


def finetune_main(overrides: Sequence[str], detector: Any = None) -> Path:
    """``talkinghead finetune``: ``talkinghead.api.make_avatar`` with Hydra's config; returns the avatar file.
    ``detector`` overrides the landmark backend."""
    from talkinghead import api
    from talkinghead.inference.avatar import resolve_checkpoint
    from talkinghead.inference.fewshot import FineTuneSettings, recipe_overrides
    from talkinghead.training.loggers import finetune_to_wandb, logged_after, make_logger

    from talkinghead.sessions import free_name

    cfg = compose_finetune(overrides)
    T, mode = int(cfg.T), str(cfg.mode)
    name = f"{api.slug(str(cfg.id))}_T{T}_{mode}"
    overwrite = bool(cfg.overwrite)  # a bool: config.as_flag read it
    if cfg.get("out"):
        out = Path(str(cfg.out))
    else:
        out_dir = Path(str(cfg.out_dir))
        out = out_dir / name / "avatar.pt"
        if out.parent.exists() and not overwrite:
            out = out_dir / free_name(out_dir, name) / "avatar.pt"
            print(f"{out_dir / name} exists: writing {out.parent} instead "
                  "(overwrite=true, make: OVERWRITE=1, replaces it)", file=sys.stderr)
    check_writable(out, "the avatar")
    ckpt = resolve_checkpoint(cfg.ckpt, cfg.runs_dir)
    meta = api.load_model(ckpt)
    # the model's recipe (or the one the line names) under the line's own keys, merged by Hydra
    name, with_recipe = recipe_overrides(meta.config, list(overrides))
    settings = FineTuneSettings.from_config(compose_finetune(with_recipe), recipe_name=name)
    print(
        f"{'fine-tuning' if mode == 'FT' else 'feed-forward (FF)'} {cfg.id} on T={T} frames with {ckpt}"
        + (f" for {settings.describe(T)}" if mode == "FT" else "")
    )
    folder_was_there = out.parent.exists()
    try:
        made = api.make_avatar(
            str(cfg.id), T=T, mode=mode, meta=meta, settings=settings, out=out, data_root=cfg.get("data_root"),
            detector=detector if detector is not None else str(cfg.detector), max_frames=int(cfg.max_frames),
            synthetic_video_length=int(cfg.synthetic_video_length), preview_frames=int(cfg.preview_frames),
            make_logger=lambda folder, name: make_logger(cfg.get("logger"), folder, name),
            progress_bar=bool(cfg.progress), overwrite=overwrite,
        )
    except BaseException as exc:
        stop = as_interrupted(exc)
        if stop is None:
            raise
        if out.parent.exists():
            left = (f"{out.parent} is kept as it was before this run" if folder_was_there
                    else f"{out.parent} could not be removed")
        else:
            left = f"its unfinished folder {out.parent} was removed"
        raise Interrupted(stop.signum, f"no avatar written; {left}") from None
    for note in made.notes:
        print(note, file=sys.stderr)
    warning = logged_after(out, lambda: finetune_to_wandb(made.logger, made.grid_path, made.caption, made.video_path))
    if warning:
        print(warning, file=sys.stderr)
    av = made.avatar
    print(
        f"avatar: {out}  ({av.mode}, T={T}, {av.steps} steps, "
        f"{len(av.generator_delta)} changed generator tensors, {made.fitted.seconds:.0f} s)"
    )
    print(f"  L1 on its T frames: {made.fitted.l1_before:.4f} (FF) -> {made.fitted.l1_after:.4f}")
    print(f"  samples: {made.grid_path} ({made.caption})")
    print(f"  preview: {made.video_path} (real | landmarks | avatar)")
    print(f"  reenact: make reenact AVATAR={shlex.quote(str(out))} DRIVER=<video or id> OUT=out.mp4")
    return out


# ------------------------------------------------------------------------------------------------ reenact
def reenact_main(
    avatar: str | Path,
    driver: str,
    out: str | Path,
    options: Any = None,
    *,
    wandb: bool = False,
    progress: bool = True,
    overwrite: bool = False,
    ckpt: str | Path | None = None,
    detector: Any = "auto",
    data_root: str | None = None,
    **changes: Any,
) -> Path:
    """``talkinghead reenact``: ``talkinghead.api.drive`` plus its printout; returns the file written: ``out``, or
    ``<out stem>-2.mp4`` ... when ``out`` exists (unless ``overwrite``).  ``options``: a
    ``talkinghead.inference.reenact.DriveOptions``, with ``changes`` to its fields (adapt, full, max_frames, fps, ...)."""
    from talkinghead import api
    from talkinghead.training.loggers import log_video_to_wandb, logged_after
    from talkinghead.sessions import numbered

    o = api.DriveOptions.of(options, **changes)
    out = Path(out)
    inputs = {"driver": driver, "avatar": avatar, "checkpoint": ckpt, "ONNX file": o.onnx}
    check_outputs([out], inputs, overwrite=True, label="OUT")  # an input is refused, never numbered around
    if out.exists() and not overwrite and out.suffix.lower() == ".mp4":
        free = numbered(out)
        print(f"{out} exists: writing {free} instead (--overwrite, make: OVERWRITE=1, replaces it)", file=sys.stderr)
        out = free
    existed = out.exists()
    try:
        result = api.drive(avatar, driver, out, o, ckpt=ckpt, detector=detector, data_root=data_root,
                           progress_bar=progress, overwrite=overwrite)
    except BaseException as exc:
        stop = as_interrupted(exc)
        if stop is None:
            raise
        left = f"the earlier {out} is kept unchanged" if existed else "its partial video was removed"
        raise Interrupted(stop.signum, f"{out} not written; {left}") from None
    for note in result.notes:
        print(note, file=sys.stderr)
    mode = "adapted to the avatar's face shape" if result.adapted else "raw driver landmarks"
    print(
        f"wrote {result.path} ({result.frames} frames, "
        f"{'driver | landmarks | avatar' if o.side_by_side else 'full frame' if result.full else 'avatar'}, "
        f"{mode}; {result.fps:.1f} frames/s rendered with {result.backend})"
    )
    if wandb:
        warning = logged_after(result.path, lambda: log_video_to_wandb(
            result.path, name=f"reenact-{Path(str(avatar)).parent.name}", save_dir=result.path.parent))
        if warning:
            print(warning, file=sys.stderr)
    return result.path


def _demo(args: argparse.Namespace) -> int:
    from talkinghead.demo import main as demo_main

    return demo_main(args.demo_args)


def _drive_options(args: argparse.Namespace) -> Any:
    """The ``DriveOptions`` of the flags that ``reenact`` or ``live`` has (the others keep their defaults)."""
    from talkinghead.inference.reenact import DriveOptions

    names = [f.name for f in dataclasses.fields(DriveOptions)]
    return DriveOptions(**{k: v for k, v in vars(args).items() if k in names})


def _reenact(args: argparse.Namespace) -> int:
    reenact_main(args.avatar, args.driver, args.out, _drive_options(args), ckpt=args.ckpt, detector=args.detector,
                 data_root=args.data_root, wandb=args.wandb, progress=not args.no_progress, overwrite=args.overwrite)
    return 0


def _live(args: argparse.Namespace) -> int:
    from talkinghead.inference.live import run_camera

    return run_camera(args.avatar, args.camera, _drive_options(args), ckpt=args.ckpt, detector=args.detector)


def _export(args: argparse.Namespace) -> int:
    from talkinghead import api

    try:
        r = api.export_avatar(args.avatar, args.out, precision=args.precision, ckpt=args.ckpt,
                              overwrite=args.overwrite)
    except BaseException as exc:
        stop = as_interrupted(exc)
        if stop is None:
            raise
        raise Interrupted(stop.signum, "no ONNX file written (an earlier one is kept unchanged)") from None
    print(
        f"wrote {r.path} ({r.bytes / 2**20:.1f} MiB, {r.metadata['precision']}, {r.metadata['image_size']}² landmark "
        f"images -> frames, dynamic batch; |onnxruntime - PyTorch| max {r.max_abs_error:.2g}, "
        f"mean {r.mean_abs_error:.2g}; {r.seconds:.0f} s)"
    )
    onnx_args = shlex.quote(f"--backend onnx --onnx {shlex.quote(str(r.path))}")
    print(f"  reenact with it: make reenact AVATAR={shlex.quote(str(args.avatar))} DRIVER=<video or id> "
          f"ARGS={onnx_args}")
    return 0


def _add_config_stage(
    sub: argparse._SubParsersAction, name: str, help: str, description: str,
    func: Callable[[argparse.Namespace], int], overrides_help: str = "Hydra overrides",
) -> None:
    """A stage configured by Hydra overrides, with ``--cfg`` to print the composed config."""
    p = sub.add_parser(name, help=help, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", metavar="key=value", help=overrides_help)
    p.add_argument("--cfg", action="store_true", help="print the composed config and exit")
    p.set_defaults(func=func)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="talkinghead",
        description="Few-shot neural talking heads (Zakharov et al., ICCV 2019) with PyTorch Lightning.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    _add_config_stage(sub, "meta-learn", "train E, G and D on many videos",
                      META_LEARN_HELP.format(groups=_groups_text()), _meta_learn)
    _add_config_stage(
        sub, "finetune", "make an avatar of one person from T frames (FT or FF)",
        "Fine-tune the meta-learned model on T frames of one person (paper Sec. 3.4).\n"
        "  talkinghead finetune id=syn0035/v00 T=8\n"
        "  talkinghead finetune id=/path/to/video.mp4 T=8 ckpt=runs/x/checkpoints/last.ckpt\n"
        "  talkinghead finetune id=id90007 T=1 mode=FF\n"
        "Keys: experiments/finetune.yaml (--cfg prints them).",
        _finetune, overrides_help="Hydra overrides (id=... is required)",
    )

    p = sub.add_parser("reenact", help="drive an avatar with a video's landmarks -> mp4",
                       description="Render an avatar driven by the landmarks of DRIVER (a video file, a folder of "
                                   "images, or a person/video id of the model's data) into an mp4.")
    p.add_argument("avatar", help="avatar file made by `talkinghead finetune` (…/avatar.pt)")
    p.add_argument("driver", help="driver video / image folder, or an id such as syn0003/v01")
    p.add_argument("out", help="output .mp4")
    p.add_argument("--side-by-side", action="store_true", help="write driver | landmarks | result")
    p.add_argument("--full", action="store_true",
                   help="write the avatar's whole source frame (original size) with the face pasted back")
    p.add_argument("--adapt", choices=("auto", "on", "off"), default="auto",
                   help="keep the avatar's face shape and transfer only pose/expression (auto: on when driver "
                        "and avatar are different or unknown people; off: raw driver landmarks, as the paper)")
    p.add_argument("--reference", choices=("neutral", "first"), default="neutral",
                   help="driver frame aligned with the avatar's reference frame in adapt mode")
    p.add_argument("--ckpt", default=None, help="meta-learned checkpoint (default: the one the avatar was made from)")
    p.add_argument("--detector", default="auto", choices=("auto", "dlib", "face-alignment"))
    p.add_argument("--landmarks", default="track", choices=("track", "detect"),
                   help="track: detect the face on key frames and follow it between (fast); detect: every frame")
    p.add_argument("--smooth", default="on", choices=("on", "off"),
                   help="One-Euro filter over a driver video's landmarks (steadier avatar); off: raw landmarks")
    p.add_argument("--max-frames", type=int, default=0, help="driver frames used, evenly spaced (0 = all)")
    p.add_argument("--fps", type=float, default=None, help="output frame rate (default: the driver's)")
    p.add_argument("--data-root", default=None, help="shard folder for a driver id of a VoxCeleb model")
    p.add_argument("--wandb", action="store_true", help="also log the video to a W&B run")
    p.add_argument("--batch-size", type=int, default=16, help="frames rendered per batch")
    p.add_argument("--device", default="auto", help="auto (cuda when present) | cpu | cuda")
    p.add_argument("--speed", choices=("fast", "plain"), default="fast",
                   help="fast: bf16 where native, channels-last (experiments/speed/fast.yaml); plain: fp32 reference")
    p.add_argument("--backend", choices=("torch", "onnx", "auto"), default="auto",
                   help="torch; onnx: onnxruntime (--onnx FILE, else avatar.onnx beside the avatar, else exported in "
                        "memory); auto (default): with an exported file of the avatar at hand on the CPU, the faster "
                        "of the two on a few probe frames, else torch")
    p.add_argument("--onnx", default=None, help="the avatar's ONNX file (make export) for --backend onnx|auto")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--overwrite", action="store_true", help="replace OUT when it exists (else OUT-2.mp4 is written)")
    p.set_defaults(func=_reenact)

    p = sub.add_parser("live", help="drive an avatar live from a local camera (OpenCV window; q quits)",
                       description="Camera | avatar in a window: each camera frame is tracked (smoothing on) and "
                                   "rendered with the avatar (talkinghead.inference.live).  The web page's Live tab does the "
                                   "same from a browser's webcam.")
    p.add_argument("avatar", help="avatar file made by `talkinghead finetune` (…/avatar.pt)")
    p.add_argument("--camera", type=int, default=0, help="OpenCV camera index")
    p.add_argument("--ckpt", default=None, help="meta-learned checkpoint (default: the one the avatar was made from)")
    p.add_argument("--detector", default="auto", choices=("auto", "dlib", "face-alignment"))
    p.add_argument("--adapt", choices=("auto", "on", "off"), default="auto",
                   help="keep the avatar's face shape (auto/on) or use the camera's raw landmarks (off)")
    p.add_argument("--backend", choices=("torch", "onnx", "auto"), default="auto",
                   help="the renderer (auto: onnxruntime where an exported avatar.onnx beside the avatar is faster)")
    p.set_defaults(func=_live)

    p = sub.add_parser("export", help="an avatar as one ONNX file (landmark images -> frames) for onnxruntime",
                       description="Fold the avatar's ψ' into the generator and export it with PyTorch's ONNX exporter "
                                   "(pip install -e '.[export]'); checked with onnxruntime against PyTorch before it "
                                   "is written.  README: Export.")
    p.add_argument("avatar", help="avatar file made by `talkinghead finetune` (…/avatar.pt)")
    p.add_argument("out", nargs="?", default=None, help="output .onnx (default: avatar.onnx beside the avatar)")
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp32",
                   help="fp16: half-precision weights and activations (input and output stay float32)")
    p.add_argument("--ckpt", default=None, help="meta-learned checkpoint (default: the one the avatar was made from)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=_export)

    p = sub.add_parser("demo", help="a web page to make avatars and drive them (Gradio; pip install -e '.[demo]')",
                       description="Serve the demo page (talkinghead.demo); its options follow.", add_help=False)
    p.add_argument("demo_args", nargs=argparse.REMAINDER, help="--ckpt, --host, --port, ... (demo --help)")
    p.set_defaults(func=_demo)

    p = sub.add_parser("meta-learn-slurm", help="meta-learn as a SLURM job that requeues itself (submitit)",
                       description="Submit meta-learning to SLURM (talkinghead.training.launch); its options follow.",
                       add_help=False)
    p.add_argument("launch_args", nargs=argparse.REMAINDER, help="--nodes, --gpus, --partition, --time, overrides")

    _add_config_stage(
        sub, "evaluate", "the paper's Table 1 protocol (FID/SSIM/CSIM, FT and FF, T=1/8/32)",
        "Evaluate a meta-learned checkpoint on its held-out videos.\n"
        "  talkinghead evaluate ckpt=runs/embedded/checkpoints/last.ckpt\n"
        "  talkinghead evaluate T_values=[1,8] max_videos=8\n"
        "Keys: experiments/evaluate.yaml (--cfg prints them).",
        _evaluate,
    )
    return parser


def flag_hint(exc: BaseException, stage: str) -> str:
    """`` (--flag)``: the ``stage``'s flag for the API parameter an error is about (``TalkingHeadError.option``),
    when it has one: the library speaks of ``backend``, the command line of ``--backend``."""
    option = getattr(exc, "option", None)
    if not option:
        return ""
    parser = build_parser()
    stages = next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})
    sub = stages.get(stage)
    if sub is None:
        return ""
    flag = next((a.option_strings[-1] for a in sub._actions if a.dest == option and a.option_strings), None)
    return f" ({flag})" if flag else ""


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:  # the page has its own options (talkinghead demo --help)
        from talkinghead.demo import main as demo_main

        return demo_main(argv[1:])
    if argv[:1] == ["meta-learn-slurm"]:  # the launcher has its own options (talkinghead meta-learn-slurm --help)
        from talkinghead.training.launch import main as launch_main

        return launch_main(argv[1:])
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        if args.stage == "meta-learn":  # Lightning's own SIGTERM handling and resume hint stay in charge
            return func(args)
        with sigterm_raises(signal.SIGTERM, signal.SIGINT):
            return func(args)
    except TalkingHeadError as exc:
        print(f"error: {exc}{flag_hint(exc, args.stage)}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Interrupted) as exc:
        stop = as_interrupted(exc)
        assert stop is not None
        if args.stage == "meta-learn":
            kept = stop.kept or "the last checkpoint is kept; run the same command again to resume"
        else:
            kept = stop.kept or f"{args.stage} stopped"
        print(f"interrupted ({stop.name}): {kept}", file=sys.stderr)
        return stop.exit_status


if __name__ == "__main__":
    sys.exit(main())
