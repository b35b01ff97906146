"""Simple policies (random, scripted, a saved SB3 model) and an evaluation loop over dynamics.

The ``agents/`` scripts and the ``worldenv rollout`` / ``demo`` commands use these.

* :class:`RandomPolicy`: samples the action space from a seeded generator.
* :class:`ScriptedPolicy`: follows the scene's shortest path to the goal
  (Habitat's ShortestPathFollower: turn towards the next waypoint, then move,
  STOP within the success distance); without a map it goes greedily towards
  the ``pointgoal``.
* :class:`SB3Policy`: a saved stable-baselines3 model (deterministic actions).

:func:`evaluate` runs one policy on the same episodes (seeds) under several
dynamics and reports success, SPL and return per dynamics.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from worldenv.envs.tasks import relative_polar

__all__ = ["Policy", "RandomPolicy", "ScriptedPolicy", "SB3Policy", "make_policy", "evaluate", "EvalResult"]


class Policy(Protocol):
    """What the rollout and evaluation loops call."""

    def reset(self, env: Any, seed: int | None = None) -> None:
        """Start an episode of ``env`` (a WorldEnv, possibly wrapped)."""

    def act(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> Any:
        """The action for observation ``obs`` (``info`` is the last step's)."""


class RandomPolicy:
    """Uniform random actions from the env's action space, seeded per episode."""

    def __init__(self) -> None:
        self.space: Any = None

    def reset(self, env: Any, seed: int | None = None) -> None:
        self.space = env.action_space
        self.space.seed(seed)

    def act(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> Any:
        return self.space.sample()


class ScriptedPolicy:
    """Go to the task's goal: along the scene's shortest path when it has a map, else greedily.

    Needs discrete controls with ``move_forward``, ``turn_left``, ``turn_right``
    (and ``stop`` to finish).

    Args:
        stop_distance: STOP when the goal is this close (metres); default: the task's success distance.
    """

    def __init__(self, stop_distance: float | None = None) -> None:
        self.stop_distance = stop_distance
        self.env: Any = None
        self._ids: dict[str, int] = {}
        self._turn = math.radians(10.0)
        self._step = 0.25

    def reset(self, env: Any, seed: int | None = None) -> None:
        self.env = env.unwrapped
        controls = self.env.controls
        names = getattr(getattr(controls, "config", None), "actions", None)
        if names is None or not {"move_forward", "turn_left", "turn_right"} <= set(names):
            raise ValueError(f"Expect discrete controls with move_forward/turn_left/turn_right for the scripted policy, actually: {names}")
        self._ids = {n: i for i, n in enumerate(names)}
        self._turn = math.radians(controls.config.turn_angle)
        self._step = float(controls.config.forward_step)

    def _best_heading(self, c2w: np.ndarray, goal: np.ndarray) -> float | None:
        """Yaw change (radians, positive right) whose forward step decreases the geodesic distance most.

        Every multiple of the turn angle is tried: the point one forward step
        away must be reachable without a collision, and the one with the
        smallest geodesic distance to the goal wins (ties go to the smaller
        turn). None when the scene has no map.
        """
        scene = self.env.scene
        if scene.occupancy is None:
            return None
        n = int(round(math.pi / self._turn))
        turns = np.array(sorted(range(-n, n + 1), key=abs), np.float64) * self._turn  # 0, ±1, ±2, ... turns
        yaw = math.atan2(c2w[0, 2], c2w[2, 2])
        p0 = c2w[:3, 3]
        ahead = np.stack([np.sin(yaw + turns), np.zeros_like(turns), np.cos(yaw + turns)], -1) * self._step + p0
        blocked = np.asarray(scene.collide(p0[None], ahead), bool)
        dist = np.asarray(scene.geodesic_distance(ahead, goal), np.float64)
        dist = np.where(blocked | ~np.isfinite(dist), np.inf, dist)
        if not np.isfinite(dist).any():
            return float(turns[1])  # boxed in: turn and look again
        return float(turns[int(np.argmin(dist))])

    def act(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> Any:
        task = self.env.task
        goal = getattr(task, "goal", None)
        c2w = self.env.world.c2w[0]
        if goal is None:
            return self._ids["move_forward"]
        stop_at = self.stop_distance if self.stop_distance is not None else getattr(task, "success_distance", 0.2)
        dist, angle = relative_polar(c2w, goal)
        # Success is judged on the task's (geodesic) distance: stop on that when the task has one.
        judged = float(getattr(task, "distance", dist))
        if "stop" in self._ids and judged <= min(stop_at, 0.5):
            return self._ids["stop"]
        turn = self._best_heading(c2w, goal)
        if turn is None or dist < self._step:  # greedy on the straight line (no map, or the goal is within a step)
            turn = -angle if abs(angle) > 0.5 * self._turn else 0.0
            if turn == 0.0 and info.get("collided", False):
                turn = -self._turn  # blocked straight ahead: look for another way in
        if turn > 0:
            return self._ids["turn_right"]
        if turn < 0:
            return self._ids["turn_left"]
        return self._ids["move_forward"]


class SB3Policy:
    """A saved stable-baselines3 model, acting deterministically.

    Args:
        path: The ``.zip`` saved by ``model.save``.
        algo: The SB3 algorithm class name (``PPO`` by default).
    """

    def __init__(self, path: str | os.PathLike[str], algo: str = "PPO") -> None:
        try:
            import stable_baselines3
        except ImportError as e:
            raise ImportError("SB3 policies need stable-baselines3: pip install 'worldenv[agents]'") from e
        self.model = getattr(stable_baselines3, algo).load(os.fspath(path), device="cpu")

    def reset(self, env: Any, seed: int | None = None) -> None:
        pass

    def act(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> Any:
        action, _ = self.model.predict(obs, deterministic=True)
        return action


def make_policy(name: str) -> Policy:
    """``"random"``, ``"scripted"`` or ``"ppo:<model.zip>"``."""
    if name == "random":
        return RandomPolicy()
    if name == "scripted":
        return ScriptedPolicy()
    if name.startswith("ppo:"):
        return SB3Policy(name[4:])
    raise ValueError(f"Expect `agent` to be 'random', 'scripted' or 'ppo:<model.zip>', actually: {name!r}")


@dataclass
class EvalResult:
    """Per-dynamics averages over the evaluated episodes.

    Attributes:
        dynamics: The dynamics evaluated.
        episodes: Number of episodes.
        success: Mean success (tasks that report it; NaN otherwise).
        spl: Mean SPL (NaN when not reported).
        ret: Mean undiscounted return.
        length: Mean episode length in steps.
        steps_per_s: Environment steps per second (policy included).
        per_episode: One dict per episode (seed, success, spl, return, length).
    """

    dynamics: str
    episodes: int
    success: float
    spl: float
    ret: float
    length: float
    steps_per_s: float
    per_episode: list[dict[str, float]] = field(default_factory=list)


def run_episode(env: Any, policy: Policy, seed: int, max_steps: int | None = None) -> tuple[dict[str, float], list[np.ndarray]]:
    """One episode of ``policy`` in ``env`` from ``seed``; returns its summary and its frames."""
    obs, info = env.reset(seed=seed)
    policy.reset(env, seed)
    frames, ret, steps = [obs["rgb"]], 0.0, 0
    done = False
    while not done and (max_steps is None or steps < max_steps):
        obs, r, term, trunc, info = env.step(policy.act(obs, info))
        frames.append(obs["rgb"])
        ret += float(r)
        steps += 1
        done = term or trunc
    return {
        "seed": float(seed),
        "success": float(info.get("success", math.nan)),
        "spl": float(info.get("spl", math.nan)),
        "return": ret,
        "length": float(steps),
    }, frames


def evaluate(
    policy: Policy,
    make_env: Any,
    dynamics: tuple[str, ...] = ("model", "oracle"),
    seeds: tuple[int, ...] = tuple(range(10)),
) -> list[EvalResult]:
    """Run ``policy`` on the same episodes (``seeds``) under each of ``dynamics``.

    Args:
        policy: The policy (reset per episode).
        make_env: ``dynamics -> env`` (a WorldEnv or a wrapped one).
        dynamics: Dynamics to compare.
        seeds: Episode seeds: the same starts, goals and scenes under every dynamics.

    Returns:
        One :class:`EvalResult` per dynamics, in order.
    """
    results = []
    for dyn in dynamics:
        env = make_env(dyn)
        rows = []
        t0, steps = time.perf_counter(), 0
        for s in seeds:
            row, _ = run_episode(env, policy, int(s))
            rows.append(row)
            steps += int(row["length"])
        dt = time.perf_counter() - t0
        env.close()
        mean = {k: float(np.mean([r[k] for r in rows])) for k in ("success", "spl", "return", "length")}
        results.append(
            EvalResult(dyn, len(rows), mean["success"], mean["spl"], mean["return"], mean["length"], steps / max(dt, 1e-9), rows)
        )
    return results


def format_results(results: list[EvalResult]) -> str:
    """A markdown table of :func:`evaluate`'s results, one column per dynamics."""
    head = "| metric | " + " | ".join(r.dynamics for r in results) + " |"
    sep = "|---|" + "---|" * len(results)
    rows = [
        ("episodes", [f"{r.episodes}" for r in results]),
        ("success", [f"{r.success:.3f}" for r in results]),
        ("SPL", [f"{r.spl:.3f}" for r in results]),
        ("return", [f"{r.ret:.3f}" for r in results]),
        ("length", [f"{r.length:.1f}" for r in results]),
        ("steps/s", [f"{r.steps_per_s:.1f}" for r in results]),
    ]
    return "\n".join([head, sep, *(f"| {name} | " + " | ".join(vals) + " |" for name, vals in rows)])
