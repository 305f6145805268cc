"""talkinghead: few-shot adversarial talking-head models (Zakharov et al., ICCV 2019)."""

__version__ = "0.1.0"
