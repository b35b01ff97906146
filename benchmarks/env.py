"""Environment throughput: steps/s for B = 1, 8, 16 with model, warp and oracle dynamics.

    python benchmarks/env.py [--json] [--sizes 1,8,16] [--obs-size 128]

The implementation is ``worldenv.bench`` (also ``worldenv bench``); with
``--json`` the last line is one JSON object with ``model_steps_per_s_b1``,
``model_frames_per_s_b16`` and the same keys for every dynamics and B.
"""

from __future__ import annotations

import sys

from worldenv.bench import main

if __name__ == "__main__":
    sys.exit(main())
