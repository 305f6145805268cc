"""The one command line of talkinghead: ``talkinghead <stage> [key=value ...]``.

Stages take Hydra overrides (``model=paper``, ``K=8``, ``trainer=ddp``, ``optim.g.lr=1e-4``,
``experiment=vox2_paper``).  Errors a user can fix print as one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from talkinghead.errors import TalkingHeadError

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

    cfg = compose("meta_learn", args.overrides)
    if args.cfg:
        print(OmegaConf.to_yaml(cfg))
        return 0
    from talkinghead.train import meta_learn

    meta_learn(cfg)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="talkinghead",
        description="Few-shot neural talking heads (Zakharov et al., ICCV 2019) with PyTorch Lightning.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    p = sub.add_parser(
        "meta-learn", help="train E, G and D on many videos",
        description=META_LEARN_HELP.format(groups=_groups_text()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="Hydra overrides")
    p.add_argument("--cfg", action="store_true", help="print the composed config and exit")
    p.set_defaults(func=_meta_learn)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except TalkingHeadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint is kept; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
