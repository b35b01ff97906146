"""Replay: drive along a logged trajectory, open-loop or closed-loop.

The log is either generated in the scene (a lane drive in a street scene, a
random walk elsewhere) or read from a pose file: ``"kitti:<poses.txt>"``,
``"tum:<groundtruth.txt>"`` or ``"re10k:<camera.txt>"``. Poses read from a file
are moved into a captured scene's gravity-aligned world when the scene is a
capture (``scene.world_from_file``).

* ``open_loop``: the camera takes the logged pose at every step whatever the
  action (the world model renders the log, e.g. to compare with the oracle);
  reward 0; the episode ends with the log.
* ``closed_loop``: the policy drives (continuous controls by default) and is
  penalised for deviating from the log at the same step:
  ``reward = -(position error in m + heading_weight * heading error in rad)``;
  the episode terminates when the position error exceeds ``max_deviation`` or
  the log ends. The ``waypoint`` observation is the next logged pose relative
  to the agent: ``(right, forward, yaw)`` in metres and radians (yaw positive
  to the right, as the controls turn).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from gymnasium import spaces

from worldenv.controls import heading_frame, yaw_of
from worldenv.envs.tasks import MAX_DISTANCE, Frame, Task, heading_error
from worldenv.geometry import read_kitti_poses, read_re10k_cameras, read_tum_poses

__all__ = ["Replay", "read_log", "REPLAY_MODES"]

REPLAY_MODES = ("open_loop", "closed_loop")
LOG_FORMATS = ("kitti", "tum", "re10k")


def read_log(spec: str) -> np.ndarray:
    """Poses ``(T, 4, 4)`` float64 from ``"<format>:<path>"`` (format kitti, tum or re10k)."""
    fmt, _, path = spec.partition(":")
    if fmt not in LOG_FORMATS or not path:
        raise ValueError(f"Expect `trajectory` '<format>:<path>' with format in {LOG_FORMATS}, actually: {spec!r}")
    if fmt == "kitti":
        return read_kitti_poses(path)
    if fmt == "tum":
        return read_tum_poses(path)[1]
    return read_re10k_cameras(path)[2]


class Replay(Task):
    """Follow a logged trajectory.

    Args:
        mode: ``"open_loop"`` or ``"closed_loop"``.
        trajectory: ``"scene"`` (generate a log in the scene from the episode's rng) or a pose file
            ``"<format>:<path>"``.
        length: Poses of a generated log.
        step_size: Metres between poses of a generated log.
        max_deviation: Closed loop: position error (m) that ends the episode.
        heading_weight: Closed loop: weight of the heading error in the penalty.
    """

    name = "replay"
    default_controls = "continuous"
    default_controls_options = {"max_linear": 1.0, "allow_vertical": False, "allow_roll": False}
    default_scene = "street"
    max_episode_steps = 10_000

    def __init__(
        self,
        mode: str = "closed_loop",
        trajectory: str = "scene",
        length: int = 200,
        step_size: float = 0.5,
        max_deviation: float = 3.0,
        heading_weight: float = 0.5,
    ) -> None:
        if mode not in REPLAY_MODES:
            raise ValueError(f"Expect `mode` to be one of {REPLAY_MODES}, actually: {mode!r}")
        if not (isinstance(length, int) and length >= 2 and step_size > 0 and max_deviation > 0):
            raise ValueError(
                "Expect `length` >= 2, `step_size` > 0 and `max_deviation` > 0, actually: "
                f"{length}, {step_size}, {max_deviation}"
            )
        self.mode, self.trajectory = mode, trajectory
        self.length, self.step_size = length, float(step_size)
        self.max_deviation, self.heading_weight = float(max_deviation), float(heading_weight)
        self._file_log = None if trajectory == "scene" else read_log(trajectory)
        self.scene: Any = None
        self.log = np.eye(4)[None]
        self.t = 0
        self.deviation = 0.0
        self.total_deviation = 0.0

    def observation_spaces(self, size: tuple[int, int]) -> dict[str, spaces.Space[Any]]:
        hi = np.array([MAX_DISTANCE, MAX_DISTANCE, math.pi], np.float32)
        return {"waypoint": spaces.Box(-hi, hi, dtype=np.float32)}

    def reset(self, scene: Any, rng: np.random.Generator) -> np.ndarray:
        from worldenv.scenes.trajectories import lane_drive, random_walk

        self.scene = scene
        if self._file_log is not None:
            log = self._file_log
            if hasattr(scene, "world_from_file"):
                log = scene.world_from_file @ log
        elif getattr(scene, "lanes", None) is not None:
            log = lane_drive(scene, self.length, rng, step_size=self.step_size)
        elif scene.occupancy is not None:
            log = random_walk(scene, self.length, rng, step_size=min(self.step_size, 0.25))
        else:
            log = scene.frames.c2w if hasattr(scene, "frames") else np.stack([v.c2w for v in scene.reference_views()])
        self.log = np.asarray(log, np.float64)
        self.t, self.deviation, self.total_deviation = 0, 0.0, 0.0
        return self.log[0].copy()

    def target_pose(self, step: int) -> np.ndarray | None:
        if self.mode != "open_loop":
            return None
        return self.log[min(step, len(self.log) - 1)].copy()

    def observe(self, frame: Frame) -> dict[str, np.ndarray]:
        target = self.log[min(frame.step + 1, len(self.log) - 1)]
        H = heading_frame(frame.c2w[None])[0]
        d = target[:3, 3] - frame.c2w[:3, 3]
        dyaw = float(yaw_of(target[None])[0] - yaw_of(frame.c2w[None])[0])
        dyaw = (dyaw + math.pi) % (2 * math.pi) - math.pi
        out = np.array([d @ H[:, 0], d @ H[:, 2], dyaw], np.float64)
        return {"waypoint": np.clip(out, -MAX_DISTANCE, MAX_DISTANCE).astype(np.float32)}

    def step(self, frame: Frame) -> tuple[float, bool, dict[str, Any]]:
        self.t = frame.step
        target = self.log[min(self.t, len(self.log) - 1)]
        pos_err = float(np.linalg.norm(frame.c2w[:3, 3] - target[:3, 3]))
        self.deviation = pos_err
        self.total_deviation += pos_err
        ended = self.t >= len(self.log) - 1
        if self.mode == "open_loop":
            return 0.0, ended, self.metrics()
        reward = -(pos_err + self.heading_weight * heading_error(frame.c2w, target))
        return reward, ended or pos_err > self.max_deviation, self.metrics()

    def metrics(self) -> dict[str, Any]:
        return {
            "deviation": self.deviation,
            "mean_deviation": self.total_deviation / max(self.t, 1),
            "log_step": self.t,
            "log_length": len(self.log),
            "log_pose": self.log[min(self.t, len(self.log) - 1)].copy(),
        }
