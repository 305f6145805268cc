"""``python -m talkinghead.demo``: the page's server (``talkinghead demo``)."""

import sys

from talkinghead.demo.app import main

sys.exit(main())
