"""``worldenv rollout``: run an agent in an environment and write a video.

    worldenv rollout --env worldenv/PointNav-v0 --agent random --steps 300 --out run.mp4
    worldenv rollout --agent scripted --side-by-side --out cmp.mp4    # model | oracle | warp

Episodes that end are reset with the next seed. Prints the episodes'
success and SPL (tasks that have them), the return and the environment's
steps per second (video writing excluded).
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RolloutConfig", "RolloutSummary", "rollout", "add_arguments", "run"]


@dataclass
class RolloutConfig:
    """What to roll out.

    Attributes:
        env: A registered worldenv id.
        agent: ``"random"``, ``"scripted"`` or ``"ppo:<model.zip>"``.
        steps: Environment steps in total (over episodes).
        out: Video path (``.mp4`` or ``.gif``); empty for none.
        seed: Seed of the first episode (the next ones count up).
        dynamics: Dynamics of the env the agent acts in.
        side_by_side: Also run ``oracle`` and ``warp`` with the same actions and write ``model | oracle | warp``.
        checkpoint: World model checkpoint.
        scene: Scene spec (None: the task's default).
        obs_size: Frame side in pixels.
        device: ``auto``, ``cpu`` or ``cuda``.
        fps: Video frame rate.
        progress: Show a progress bar.
        env_kwargs: More WorldEnv arguments.
    """

    env: str = "worldenv/PointNav-v0"
    agent: str = "random"
    steps: int = 300
    out: str = "run.mp4"
    seed: int = 0
    dynamics: str = "model"
    side_by_side: bool = False
    checkpoint: str = "default"
    scene: str | None = None
    obs_size: int = 128
    device: str = "auto"
    fps: int = 10
    progress: bool = True
    env_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"Expect `steps` to be positive, actually: {self.steps}")
        if self.fps < 1:
            raise ValueError(f"Expect `fps` to be positive, actually: {self.fps}")


@dataclass
class RolloutSummary:
    """What a rollout measured.

    Attributes:
        steps: Environment steps taken.
        episodes: Episodes that ended.
        success: Mean success over ended episodes (NaN when none ended or the task has none).
        spl: Mean SPL likewise.
        ret: Mean return of ended episodes (the running one when none ended).
        steps_per_s: Steps per second of the agent's env (policy included, video excluded).
        frames: Number of video frames written.
    """

    steps: int
    episodes: int
    success: float
    spl: float
    ret: float
    steps_per_s: float
    frames: int

    def line(self) -> str:
        return (
            f"steps {self.steps}  episodes {self.episodes}  success {self.success:.3f}  SPL {self.spl:.3f}  "
            f"return {self.ret:.3f}  steps/s {self.steps_per_s:.1f}"
        )


def _make(cfg: RolloutConfig, dynamics: str) -> Any:
    import gymnasium as gym

    import worldenv  # noqa: F401  (registers the ids)

    kw: dict[str, Any] = dict(dynamics=dynamics, obs_size=cfg.obs_size, device=cfg.device, **cfg.env_kwargs)
    if cfg.scene is not None:
        kw["scene"] = cfg.scene
    if dynamics == "model":
        kw["checkpoint"] = cfg.checkpoint
    return gym.make(cfg.env, **kw)


def rollout(cfg: RolloutConfig) -> RolloutSummary:
    """Run ``cfg.agent`` for ``cfg.steps`` steps and write the video; see :class:`RolloutConfig`."""
    import numpy as np
    from tqdm import tqdm

    from worldenv.envs.policies import make_policy

    policy = make_policy(cfg.agent)
    names = [cfg.dynamics]
    if cfg.side_by_side:
        names = ["model", "oracle", "warp"]
    envs = [_make(cfg, d) for d in names]
    seed = cfg.seed

    def reset_all() -> tuple[dict[str, Any], dict[str, Any], list[np.ndarray]]:
        outs = [e.reset(seed=seed) for e in envs]
        policy.reset(envs[0], seed)
        return outs[0][0], outs[0][1], [o[0]["rgb"] for o in outs]

    obs, info, frames = reset_all()
    sep = np.full((cfg.obs_size, 2, 3), 255, np.uint8)
    video: list[np.ndarray] = []

    def add(frames: list[np.ndarray]) -> None:
        if cfg.out:
            video.append(np.concatenate([x for f in frames for x in (f, sep)][:-1], axis=1))

    add(frames)
    ended: list[dict[str, float]] = []
    ret, t_env = 0.0, 0.0
    bar = tqdm(total=cfg.steps, disable=not cfg.progress, unit="step")
    for _ in range(cfg.steps):
        action = policy.act(obs, info)
        t0 = time.perf_counter()
        results = [e.step(action) for e in envs]
        t_env += time.perf_counter() - t0
        obs, r, term, trunc, info = results[0]
        ret += float(r)
        add([res[0]["rgb"] for res in results])
        bar.update(1)
        if any(res[2] or res[3] for res in results):
            ended.append({"success": float(info.get("success", math.nan)), "spl": float(info.get("spl", math.nan)), "return": ret})
            bar.set_postfix(episodes=len(ended), success=f"{np.nanmean([e['success'] for e in ended]):.2f}")
            seed += 1
            ret = 0.0
            t0 = time.perf_counter()
            obs, info, frames = reset_all()
            t_env += time.perf_counter() - t0
            add(frames)
    bar.close()
    for e in envs:
        e.close()
    if cfg.out:
        _write_video(cfg.out, video, cfg.fps)
    rows = ended or [{"success": float(info.get("success", math.nan)), "spl": float(info.get("spl", math.nan)), "return": ret}]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("success", "spl", "return")}
    return RolloutSummary(cfg.steps, len(ended), mean["success"], mean["spl"], mean["return"], cfg.steps / max(t_env, 1e-9), len(video))


def _write_video(path: str, frames: list[Any], fps: int) -> None:
    import imageio.v3 as iio
    import numpy as np

    video = np.stack(frames)  # (T, H, W, 3)
    if path.endswith(".mp4"):
        # Codecs want sides divisible by 16: pad with black instead of letting the writer resample.
        T, H, W, _ = video.shape
        video = np.pad(video, ((0, 0), (0, -H % 16), (0, -W % 16), (0, 0)))
    try:
        if path.endswith(".gif"):
            iio.imwrite(path, video, duration=1000.0 / fps, loop=0)
        else:
            iio.imwrite(path, video, fps=fps)
    except (ImportError, RuntimeError, ValueError) as e:
        if path.endswith(".mp4"):
            raise RuntimeError(f"Writing {path} needs an mp4 writer: pip install imageio-ffmpeg (or use --out run.gif)") from e
        raise


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = RolloutConfig()
    parser.add_argument("--env", default=d.env, help=f"registered environment id (default {d.env})")
    parser.add_argument("--agent", default=d.agent, help="random, scripted or ppo:<model.zip> (default random)")
    parser.add_argument("--steps", type=int, default=d.steps, help=f"environment steps (default {d.steps})")
    parser.add_argument("--out", default=d.out, help=f"video file, .mp4 or .gif; '' for none (default {d.out})")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of the first episode")
    parser.add_argument("--dynamics", default=d.dynamics, choices=("model", "warp", "oracle"), help="dynamics the agent acts in")
    parser.add_argument("--side-by-side", action="store_true", help="write model | oracle | warp with the same actions")
    parser.add_argument("--checkpoint", default=d.checkpoint, help="world model checkpoint (default: the shipped one)")
    parser.add_argument("--scene", default=None, help="scene spec (default: the task's)")
    parser.add_argument("--obs-size", type=int, default=d.obs_size, help=f"frame side in pixels (default {d.obs_size})")
    parser.add_argument("--device", default=d.device, help="auto, cpu or cuda")
    parser.add_argument("--fps", type=int, default=d.fps, help="video frame rate")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def config_from_args(args: argparse.Namespace) -> RolloutConfig:
    return RolloutConfig(
        env=args.env, agent=args.agent, steps=args.steps, out=args.out, seed=args.seed, dynamics=args.dynamics,
        side_by_side=args.side_by_side, checkpoint=args.checkpoint, scene=args.scene, obs_size=args.obs_size,
        device=args.device, fps=args.fps, progress=not args.no_progress,
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    summary = rollout(cfg)
    if cfg.out:
        print(f"wrote {cfg.out} ({summary.frames} frames)")
    print(summary.line())
    return 0
