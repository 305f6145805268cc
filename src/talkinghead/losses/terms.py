"""The generator's loss terms by name, and the one check of a weights dict against them.

Every term's weight is a config value (``loss.weights.<term>`` for meta-learning, ``loss_weights`` in a fine-tuning
recipe); 0 turns a term off, and each term is logged under its name (``train/g_<term>``).
"""
from __future__ import annotations

import difflib
from collections.abc import Mapping

from talkinghead.errors import ConfigError

#: Loss terms of G and E (``talkinghead.modules.adversarial.AdversarialModule.generator_terms`` computes them).
GENERATOR_TERMS = ("content_vgg19", "content_vggface", "pixel", "adversarial", "feature_matching", "match")


def term_weights(weights: Mapping[str, float] | None, where: str = "loss.weights") -> dict[str, float]:
    """``{term: weight}`` over every :data:`GENERATOR_TERMS` (absent terms 0.0).  A name that is not a term is one
    line naming ``where`` it was given and the closest term."""
    weights = dict(weights or {})
    for name in sorted(set(weights) - set(GENERATOR_TERMS)):
        close = difflib.get_close_matches(str(name), GENERATOR_TERMS, n=1)
        hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(GENERATOR_TERMS)}"
        raise ConfigError(f"unknown loss term {where}.{name}: {hint}")
    return {k: float(weights.get(k, 0.0)) for k in GENERATOR_TERMS}
