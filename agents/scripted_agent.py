"""A scripted agent that follows the scene's shortest path (greedy towards the goal without a map).

    python agents/scripted_agent.py --episodes 20 --dynamics model,oracle

It steers with the scene's ground-truth map, so its success measures how well
the task can be solved at all; under ``model`` dynamics it shows whether the
world model's collisions and frames keep the episode on track.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ppo_eval  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    return ppo_eval.main(["--model", "scripted", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    main()
