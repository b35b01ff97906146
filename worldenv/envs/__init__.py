"""Gymnasium environments: :class:`WorldEnv`, :class:`WorldVectorEnv` and their tasks.

Registered ids (importing ``worldenv`` registers them):

=========================  ===========  =========
id                         task         scene
=========================  ===========  =========
``worldenv/PointNav-v0``   pointnav     rooms
``worldenv/ImageNav-v0``   imagenav     rooms
``worldenv/Explore-v0``    explore      rooms
``worldenv/Replay-v0``     replay       street
``worldenv/Free-v0``       free         rooms
=========================  ===========  =========
"""

from __future__ import annotations

from worldenv.envs.replay import Replay
from worldenv.envs.tasks import TASKS, Explore, Frame, Free, ImageNav, PointNav, Task, make_task
from worldenv.envs.vector import WorldVectorEnv
from worldenv.envs.world import DYNAMICS, World, WorldConfig
from worldenv.envs.world_env import WorldEnv

__all__ = [
    "WorldEnv",
    "WorldVectorEnv",
    "World",
    "WorldConfig",
    "DYNAMICS",
    "Task",
    "Frame",
    "PointNav",
    "ImageNav",
    "Explore",
    "Replay",
    "Free",
    "TASKS",
    "make_task",
]
