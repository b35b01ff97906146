"""Tasks: what an episode asks of the agent (start, goal, observations, reward, end).

A task is a per-episode object of one environment stream. The environment
moves the camera and makes the frame (whatever the dynamics); the task picks
the start, adds its observations, scores the step and says when it ends.

Definitions follow Habitat (Anderson et al. 2018, "On Evaluation of Embodied
Navigation Agents"; Habitat-Lab's PointNav and ImageNav configs):

* ``PointNav``: success = STOP within ``success_distance`` (0.2 m) of the goal;
  ``SPL = success * d0 / max(d0, path length)``; ``SoftSPL`` replaces success by
  ``max(0, 1 - d / d0)``; reward = decrease of the geodesic distance - 0.01 per
  step + 2.5 on success. The ``pointgoal`` observation is the goal in polar
  coordinates relative to the agent, like Habitat's GPS+compass sensor:
  ``(distance, angle)`` with the angle positive when the goal is to the left.
* ``ImageNav``: PointNav's reward and metrics, but the goal is an image
  rendered at the goal pose; success within 1.0 m as in Habitat's ImageNav.
* ``Explore``: reward = newly observed voxels (coarse grid over the frames that
  are fused into the memory), never terminates.
* ``Free``: no task, reward 0.

``Replay`` (driving along a logged trajectory) lives in :mod:`worldenv.envs.replay`.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

from worldenv.controls import heading_frame, yaw_of
from worldenv.geometry import rot_y, se3

__all__ = [
    "Frame",
    "Task",
    "PointNav",
    "ImageNav",
    "Explore",
    "Free",
    "TASKS",
    "make_task",
    "HABITAT_POINTNAV_ACTIONS",
]

HABITAT_POINTNAV_ACTIONS = ("stop", "move_forward", "turn_left", "turn_right")
"""Habitat's PointNav / ImageNav action set, in Habitat's order."""

MAX_DISTANCE = 1.0e4  # bound of distance observations in metres (a finite Box keeps checkers quiet)


@dataclass
class Frame:
    """What the environment produced for one stream at one step.

    Attributes:
        c2w: ``(4, 4)`` float64 camera-to-world pose after the move.
        K: ``(3, 3)`` float64 intrinsics of the frame.
        rgb: ``(H, W, 3)`` uint8.
        depth: ``(H, W)`` float32 metres, 0 = unknown.
        stop: Whether the action was STOP.
        collided: Whether the move was blocked.
        step: Steps taken in the episode, this one included.
    """

    c2w: np.ndarray
    K: np.ndarray
    rgb: np.ndarray
    depth: np.ndarray
    stop: bool = False
    collided: bool = False
    step: int = 0


def relative_polar(c2w: np.ndarray, point: np.ndarray) -> tuple[float, float]:
    """``(distance, angle)`` of a world point seen from an agent pose ``(4, 4)`` on the ground plane.

    The angle is in radians in ``[-pi, pi]``, 0 straight ahead and positive to
    the left (Habitat's PointGoalWithGPSCompass convention); height is ignored.
    """
    H = heading_frame(c2w[None])[0]  # columns right, down, forward
    d = np.asarray(point, np.float64) - c2w[:3, 3]
    right, fwd = float(d @ H[:, 0]), float(d @ H[:, 2])
    return math.hypot(right, fwd), math.atan2(-right, fwd)


class Task(ABC):
    """One episode's objective for one environment stream.

    Class attributes give the defaults the environment uses when the user does
    not override them.

    Attributes:
        name: The task's name (``make_task`` key).
        default_controls: Controls kind used when the env gets ``controls=None``.
        default_controls_options: Overrides of that kind's config.
        default_scene: Scene spec used when the env gets ``scene=None``.
        max_episode_steps: Default truncation length.
        uses_stop: Whether the STOP action ends the episode.
    """

    name: str = "task"
    default_controls: str = "discrete"
    default_controls_options: dict[str, Any] = {}
    default_scene: str = "rooms"
    max_episode_steps: int = 500
    uses_stop: bool = False

    def __init__(self, **options: Any) -> None:
        if options:
            raise ValueError(f"Expect no options for task {self.name!r}, actually: {sorted(options)}")

    def observation_spaces(self, size: tuple[int, int]) -> dict[str, spaces.Space[Any]]:
        """The task's entries of the observation Dict (besides ``rgb``), for frames of ``size``."""
        return {}

    @abstractmethod
    def reset(self, scene: Any, rng: np.random.Generator) -> np.ndarray:
        """Start an episode in ``scene`` and return the start pose ``(4, 4)`` float64."""

    def begin(self, frame: Frame) -> None:
        """Called once with the episode's first frame (after :meth:`reset` and the start render)."""

    def target_pose(self, step: int) -> np.ndarray | None:
        """A pose ``(4, 4)`` the camera must take at ``step`` regardless of the action (open-loop replay), or None."""
        return None

    def observe(self, frame: Frame) -> dict[str, np.ndarray]:
        """The task's observation entries at ``frame``."""
        return {}

    @abstractmethod
    def step(self, frame: Frame) -> tuple[float, bool, dict[str, Any]]:
        """Score a step: ``(reward, terminated, metrics)``."""

    def metrics(self) -> dict[str, Any]:
        """The episode's metrics so far (also put in ``info`` at reset)."""
        return {}

    def get_state(self) -> dict[str, Any]:
        """A deep copy of the task's episode state (the scene is not copied)."""
        return {k: copy.deepcopy(v) for k, v in self.__dict__.items() if k != "scene"}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_state` output (the scene is set by the environment)."""
        for k, v in state.items():
            setattr(self, k, copy.deepcopy(v))


class PointNav(Task):
    """Reach a point goal and call STOP there (Habitat PointNav).

    Args:
        success_distance: STOP within this many metres of the goal succeeds.
        min_geodesic: Shortest start-goal geodesic distance of an episode, in metres.
        max_geodesic: Longest start-goal geodesic distance, in metres.
        slack_reward: Reward added every step (Habitat: -0.01).
        success_reward: Reward for a successful STOP (Habitat: 2.5).
    """

    name = "pointnav"
    default_controls_options = {"actions": HABITAT_POINTNAV_ACTIONS}
    uses_stop = True

    def __init__(
        self,
        success_distance: float = 0.2,
        min_geodesic: float = 1.0,
        max_geodesic: float = 10.0,
        slack_reward: float = -0.01,
        success_reward: float = 2.5,
    ) -> None:
        if not (success_distance > 0 and 0 <= min_geodesic <= max_geodesic):
            raise ValueError(
                "Expect `success_distance` > 0 and 0 <= `min_geodesic` <= `max_geodesic`, actually: "
                f"{success_distance}, {min_geodesic}, {max_geodesic}"
            )
        self.success_distance = float(success_distance)
        self.min_geodesic, self.max_geodesic = float(min_geodesic), float(max_geodesic)
        self.slack_reward, self.success_reward = float(slack_reward), float(success_reward)
        self.scene: Any = None
        self.goal = np.zeros(3)
        self.start_distance = 0.0
        self.distance = 0.0
        self.path_length = 0.0
        self.success = False
        self._last_position = np.zeros(3)

    def observation_spaces(self, size: tuple[int, int]) -> dict[str, spaces.Space[Any]]:
        return {
            "pointgoal": spaces.Box(
                np.array([0.0, -math.pi], np.float32), np.array([MAX_DISTANCE, math.pi], np.float32), dtype=np.float32
            )
        }

    def _geodesic(self, p: np.ndarray) -> float:
        d = float(self.scene.geodesic_distance(p, self.goal))
        # Off the map (only possible without collisions): fall back to the straight line.
        return d if math.isfinite(d) else float(np.linalg.norm((p - self.goal)[[0, 2]]))

    def reset(self, scene: Any, rng: np.random.Generator) -> np.ndarray:
        self.scene = scene
        start, goal, dist = scene.sample_start_goal(rng, self.min_geodesic, self.max_geodesic)
        self.goal = np.asarray(goal, np.float64)
        self.start_distance = self.distance = float(dist)
        self.path_length = 0.0
        self.success = False
        self._last_position = start[:3, 3].copy()
        return np.asarray(start, np.float64)

    def begin(self, frame: Frame) -> None:
        # The start view of a captured scene may snap the start pose; measure from where the agent is.
        self._last_position = frame.c2w[:3, 3].copy()
        self.start_distance = self.distance = self._geodesic(frame.c2w[:3, 3])

    def observe(self, frame: Frame) -> dict[str, np.ndarray]:
        dist, angle = relative_polar(frame.c2w, self.goal)
        return {"pointgoal": np.array([min(dist, MAX_DISTANCE), angle], np.float32)}

    def step(self, frame: Frame) -> tuple[float, bool, dict[str, Any]]:
        p = frame.c2w[:3, 3]
        self.path_length += float(np.linalg.norm(p - self._last_position))
        self._last_position = p.copy()
        before, self.distance = self.distance, self._geodesic(p)
        reward = before - self.distance + self.slack_reward
        if frame.stop:
            self.success = self.distance <= self.success_distance
            if self.success:
                reward += self.success_reward
        return reward, bool(frame.stop), self.metrics()

    def metrics(self) -> dict[str, Any]:
        d0 = self.start_distance
        ratio = d0 / max(d0, self.path_length) if d0 > 0 else 1.0
        soft = max(0.0, 1.0 - self.distance / d0) if d0 > 0 else 1.0
        return {
            "distance_to_goal": self.distance,
            "success": float(self.success),
            "spl": float(self.success) * ratio,
            "softspl": soft * ratio,
            "path_length": self.path_length,
            "start_distance": d0,
            "goal": self.goal.copy(),
        }


class ImageNav(PointNav):
    """Reach the place an image was taken and call STOP there (Habitat ImageNav).

    The goal image is rendered by the scene's ground truth at the goal point,
    camera height, random heading. Reward and metrics are PointNav's.

    Args:
        success_distance: STOP within this many metres of the goal succeeds (Habitat: 1.0).
        **kwargs: The other :class:`PointNav` arguments.
    """

    name = "imagenav"

    def __init__(self, success_distance: float = 1.0, **kwargs: Any) -> None:
        super().__init__(success_distance=success_distance, **kwargs)
        self.goal_image = np.zeros((1, 1, 3), np.uint8)
        self.goal_pose = np.eye(4)
        self._size: tuple[int, int] = (1, 1)

    def observation_spaces(self, size: tuple[int, int]) -> dict[str, spaces.Space[Any]]:
        self._size = size
        return {"imagegoal": spaces.Box(0, 255, (*size, 3), np.uint8)}

    def reset(self, scene: Any, rng: np.random.Generator) -> np.ndarray:
        if not scene.has_oracle:
            raise ValueError(
                f"Expect a scene with ground truth for ImageNav (the goal image is rendered), actually: {scene!r}"
            )
        start = super().reset(scene, rng)
        yaw = float(rng.uniform(-math.pi, math.pi))
        if hasattr(scene, "pose_at"):
            self.goal_pose = scene.pose_at(self.goal, yaw)
        else:
            self.goal_pose = se3(rot_y(yaw), self.goal - np.array([0.0, scene.camera_height, 0.0]))
        K = scene.default_intrinsics(self._size)
        self.goal_image, _ = scene.render(self.goal_pose, K, self._size)
        return start

    def observe(self, frame: Frame) -> dict[str, np.ndarray]:
        return {"imagegoal": self.goal_image}


class Explore(Task):
    """See as much of the world as possible.

    Every frame that enters the memory is unprojected (every ``stride``-th
    pixel) and its points counted on a coarse voxel grid; the reward is the
    number of voxels seen for the first time times ``reward_per_voxel``.

    Args:
        voxel_size: Edge of the counting voxels in metres.
        reward_per_voxel: Reward per newly observed voxel.
        stride: Pixel stride of the unprojection.
        max_depth: Depth beyond this (metres) is not counted (far, unreliable generated depth).
    """

    name = "explore"
    default_controls_options = {"actions": ("move_forward", "turn_left", "turn_right")}

    def __init__(
        self, voxel_size: float = 0.25, reward_per_voxel: float = 0.01, stride: int = 2, max_depth: float = 10.0
    ) -> None:
        if not (voxel_size > 0 and stride >= 1 and max_depth > 0):
            raise ValueError(
                f"Expect `voxel_size` > 0, `stride` >= 1, `max_depth` > 0, actually: {voxel_size}, {stride}, {max_depth}"
            )
        self.voxel_size, self.reward_per_voxel = float(voxel_size), float(reward_per_voxel)
        self.stride, self.max_depth = int(stride), float(max_depth)
        self.scene: Any = None
        self.seen: set[int] = set()

    def reset(self, scene: Any, rng: np.random.Generator) -> np.ndarray:
        self.scene = scene
        self.seen = set()
        start, _, _ = scene.sample_start_goal(rng, 0.0, math.inf)
        return np.asarray(start, np.float64)

    def _new_voxels(self, frame: Frame) -> int:
        s = self.stride
        d = frame.depth[::s, ::s].astype(np.float64)
        v, u = np.nonzero((d > 0) & (d <= self.max_depth))
        z = d[v, u]
        K = frame.K
        x = (u * s - K[0, 2]) / K[0, 0] * z
        y = (v * s - K[1, 2]) / K[1, 1] * z
        pts = np.stack([x, y, z], -1) @ frame.c2w[:3, :3].T + frame.c2w[:3, 3]  # (N, 3) world
        ijk = np.floor(pts / self.voxel_size).astype(np.int64) + (1 << 20)
        keys = np.unique((ijk[:, 0] << 42) | (ijk[:, 1] << 21) | ijk[:, 2])
        before = len(self.seen)
        self.seen.update(keys.tolist())
        return len(self.seen) - before

    def begin(self, frame: Frame) -> None:
        self._new_voxels(frame)

    def step(self, frame: Frame) -> tuple[float, bool, dict[str, Any]]:
        new = self._new_voxels(frame)
        return new * self.reward_per_voxel, False, {"new_voxels": new, **self.metrics()}

    def metrics(self) -> dict[str, Any]:
        return {"explored_voxels": len(self.seen), "explored_volume": len(self.seen) * self.voxel_size**3}


class Free(Task):
    """Roam with no objective: reward 0, never terminates; starts at the scene's first reference view."""

    name = "free"
    max_episode_steps = 1000

    def reset(self, scene: Any, rng: np.random.Generator) -> np.ndarray:
        self.scene = scene
        if scene.occupancy is not None:
            start, _, _ = scene.sample_start_goal(rng, 0.0, math.inf)
            return np.asarray(start, np.float64)
        return np.asarray(scene.reference_views()[0].c2w, np.float64)

    def step(self, frame: Frame) -> tuple[float, bool, dict[str, Any]]:
        return 0.0, False, {}


def _replay() -> type[Task]:
    from worldenv.envs.replay import Replay

    return Replay


TASKS: dict[str, Any] = {
    "pointnav": PointNav,
    "imagenav": ImageNav,
    "explore": Explore,
    "free": Free,
    "replay": _replay,
}
"""Task name -> class (``replay`` resolved lazily)."""


def task_class(name: str | type[Task]) -> type[Task]:
    """The task class of a name (case-insensitive) or the class itself."""
    if isinstance(name, type) and issubclass(name, Task):
        return name
    key = str(name).lower()
    if key not in TASKS:
        raise ValueError(f"Expect `task` to be one of {sorted(TASKS)} or a Task subclass, actually: {name!r}")
    cls = TASKS[key]
    return cls() if key == "replay" else cls


def make_task(name: str | type[Task], options: dict[str, Any] | None = None) -> Task:
    """Build a task by name with ``options`` (its constructor arguments)."""
    cls = task_class(name)
    try:
        return cls(**(options or {}))
    except TypeError as e:
        raise ValueError(f"Expect `task_options` to be arguments of {cls.__name__}, actually: {e}") from e


def heading_error(c2w: np.ndarray, target: np.ndarray) -> float:
    """Absolute yaw difference in radians between two poses ``(4, 4)``, in ``[0, pi]``."""
    d = float(yaw_of(target[None])[0] - yaw_of(c2w[None])[0])
    return abs((d + math.pi) % (2 * math.pi) - math.pi)
