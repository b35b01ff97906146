"""worldenv: a Gymnasium environment whose dynamics is a learned 3D-aware world model.

Importing the package registers the Gymnasium ids ``worldenv/PointNav-v0``,
``worldenv/ImageNav-v0``, ``worldenv/Explore-v0``, ``worldenv/Replay-v0`` and
``worldenv/Free-v0`` (entry-point strings: nothing heavy is imported until an
environment is made).
"""

from __future__ import annotations

__version__ = "0.1.0"

ENV_IDS: dict[str, str] = {
    "worldenv/PointNav-v0": "pointnav",
    "worldenv/ImageNav-v0": "imagenav",
    "worldenv/Explore-v0": "explore",
    "worldenv/Replay-v0": "replay",
    "worldenv/Free-v0": "free",
}
"""Registered id -> task name."""


def _register() -> None:
    from gymnasium.envs.registration import register, registry

    for env_id, task in ENV_IDS.items():
        if env_id in registry:
            continue
        register(
            id=env_id,
            entry_point="worldenv.envs.world_env:WorldEnv",
            vector_entry_point="worldenv.envs.vector:WorldVectorEnv",
            kwargs={"task": task},
        )


_register()
