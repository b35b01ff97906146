"""Train PPO (stable-baselines3, MultiInputPolicy) on a worldenv task with the batched vector env.

    python agents/ppo_train.py --env-id worldenv/PointNav-v0 --dynamics model --total-timesteps 200000

The policy sees the RGB frame and the task's observations; SB3 steps all
``num_envs`` worlds with one batched world-model call per step
(``worldenv.sb3.SB3VecEnv``). Logs go to TensorBoard under ``log_dir``; the
model is saved to ``save_path`` (``.zip``).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from args import parse_args  # noqa: E402


@dataclass
class Args:
    """PPO on worldenv."""

    env_id: str = field(default="worldenv/PointNav-v0", metadata={"help": "registered worldenv id"})
    dynamics: str = field(default="model", metadata={"help": "model, warp or oracle"})
    checkpoint: str = field(default="default", metadata={"help": "world model checkpoint (dynamics=model)"})
    scene: str = field(default="rooms", metadata={"help": "scene spec"})
    scene_pool: int = field(default=8, metadata={"help": "procedural scenes: seeds drawn from [0, scene_pool)"})
    obs_size: int = field(default=128, metadata={"help": "frame side in pixels (the default world model makes 128)"})
    max_episode_steps: int = field(default=200, metadata={"help": "episode truncation"})
    min_geodesic: float = field(default=1.0, metadata={"help": "PointNav: shortest start-goal distance (m)"})
    max_geodesic: float = field(default=5.0, metadata={"help": "PointNav: longest start-goal distance (m)"})
    num_envs: int = field(default=8, metadata={"help": "B: worlds stepped together"})
    total_timesteps: int = field(default=100_000, metadata={"help": "environment steps in total"})
    n_steps: int = field(default=128, metadata={"help": "PPO rollout length per env"})
    batch_size: int = field(default=256, metadata={"help": "PPO minibatch size"})
    n_epochs: int = field(default=4, metadata={"help": "PPO epochs per rollout"})
    learning_rate: float = field(default=3e-4, metadata={"help": "Adam learning rate"})
    gamma: float = field(default=0.99, metadata={"help": "discount"})
    ent_coef: float = field(default=0.01, metadata={"help": "entropy bonus"})
    norm_reward: bool = field(
        default=False, metadata={"help": "scale rewards by a running estimate of the return's std (training only)"}
    )
    encoder: str = field(
        default="nav", metadata={"help": "features extractor: nav (worldenv.sb3.NavEncoder) or combined (SB3's default)"}
    )
    cnn_features: int = field(default=128, metadata={"help": "size of each image encoder's output"})
    stop_logit: float = field(
        default=-2.0, metadata={"help": "initial logit of STOP (action 0) for tasks that have one; 0 for a uniform start"}
    )
    seed: int = field(default=1, metadata={"help": "seed of the envs and the policy"})
    device: str = field(default="cpu", metadata={"help": "torch device of the policy"})
    log_dir: str = field(default="runs", metadata={"help": "TensorBoard directory ('' to disable)"})
    save_path: str = field(default="ppo_worldenv.zip", metadata={"help": "where the trained model is saved"})


def main(argv: list[str] | None = None) -> str:
    args = parse_args(Args, argv)
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor, VecNormalize

    from worldenv.sb3 import NavEncoder, make_sb3_env

    if args.encoder == "nav":
        policy_kwargs = {"features_extractor_class": NavEncoder, "features_extractor_kwargs": {"cnn_features": args.cnn_features}}
    elif args.encoder == "combined":
        policy_kwargs = {"features_extractor_kwargs": {"cnn_output_dim": args.cnn_features}}
    else:
        raise ValueError(f"Expect `encoder` to be 'nav' or 'combined', actually: {args.encoder!r}")
    torch.manual_seed(args.seed)
    task_options = {"min_geodesic": args.min_geodesic, "max_geodesic": args.max_geodesic} if "Nav" in args.env_id else {}
    env_kwargs = dict(
        scene=args.scene, scene_pool=args.scene_pool, dynamics=args.dynamics, obs_size=args.obs_size,
        max_episode_steps=args.max_episode_steps, task_options=task_options,
    )  # fmt: skip
    if args.dynamics == "model":
        env_kwargs["checkpoint"] = args.checkpoint
    venv = VecMonitor(make_sb3_env(args.env_id, num_envs=args.num_envs, **env_kwargs))
    if args.norm_reward:
        # Rewards only: the policy sees raw observations, so evaluation needs no saved statistics.
        venv = VecNormalize(venv, norm_obs=False, norm_reward=True, gamma=args.gamma)
    venv.seed(args.seed)
    model = PPO(
        "MultiInputPolicy", venv, n_steps=args.n_steps, batch_size=args.batch_size, n_epochs=args.n_epochs,
        learning_rate=args.learning_rate, gamma=args.gamma, ent_coef=args.ent_coef, seed=args.seed,
        device=args.device, tensorboard_log=args.log_dir or None, verbose=1,
        policy_kwargs=policy_kwargs,
    )  # fmt: skip
    if "Nav" in args.env_id and args.stop_logit:
        # A uniform start calls STOP every fourth step, and "stop at once" (return ~ -0.01) beats
        # wandering, so PPO drifts there before the goal vector means anything to it. A prior
        # against STOP starts from episodes of ~20 steps instead of ~4.
        with torch.no_grad():
            model.policy.action_net.bias[0] = args.stop_logit
    t0 = time.time()
    run = f"{args.env_id.split('/')[-1]}_{args.dynamics}_s{args.seed}"
    model.learn(total_timesteps=args.total_timesteps, tb_log_name=run, progress_bar=False)
    dt = time.time() - t0
    model.save(args.save_path)
    print(f"trained {args.total_timesteps} steps in {dt:.0f} s ({args.total_timesteps / dt:.1f} steps/s); saved {args.save_path}")
    venv.close()
    return args.save_path


if __name__ == "__main__":
    main()
