"""Tools over the API: benchmarks (``make bench``, ``make bench-data``, ``make gpu-check``), checks of training
(``make sanity``, ``make rehearse``), the charts of a run and the scripts that make the docs' figures and timings.
Each is ``python -m talkinghead.tools.<name> --help``; nothing below this floor imports it."""
