"""`python -m turbovsr_farm INPUT... --out DIR [options] [-- UPSCALE_ARGS]` (ray_driver.py)."""

import sys

from .ray_driver import main

sys.exit(main())
