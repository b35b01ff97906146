"""A uniformly random agent: success, SPL and return per dynamics on the same episodes.

    python agents/random_agent.py --episodes 20 --dynamics oracle,warp
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ppo_eval  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    return ppo_eval.main(["--model", "random", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    main()
