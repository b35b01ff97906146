"""stable-baselines3 adapter: SB3 trains directly on the natively batched :class:`WorldVectorEnv`.

SB3's own ``DummyVecEnv`` would step B copies of :class:`WorldEnv` one after
the other (B model calls per step); :class:`SB3VecEnv` keeps the one batched
model call. Episodes that end are reset in the same step, as SB3 expects:
the last observation is in ``info["terminal_observation"]`` and
``info["TimeLimit.truncated"]`` tells a time limit from a true end.

Example::

    import worldenv
    from worldenv.sb3 import make_sb3_env
    from stable_baselines3 import PPO

    venv = make_sb3_env("worldenv/PointNav-v0", num_envs=8, dynamics="oracle", obs_size=64)
    PPO("MultiInputPolicy", venv).learn(10_000)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

try:
    from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvStepReturn
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "worldenv.sb3 needs stable-baselines3: pip install 'worldenv[agents]' (or pip install stable-baselines3)"
    ) from e

from worldenv.envs.vector import WorldVectorEnv

__all__ = ["SB3VecEnv", "make_sb3_env"]


class SB3VecEnv(VecEnv):
    """A :class:`WorldVectorEnv` seen as a stable-baselines3 ``VecEnv``.

    Args:
        venv: The batched environment (its autoreset must be SAME_STEP, as WorldVectorEnv's is).
    """

    def __init__(self, venv: WorldVectorEnv) -> None:
        if not isinstance(venv, WorldVectorEnv):
            raise TypeError(f"Expect `venv` to be a WorldVectorEnv, actually: {type(venv).__name__}")
        self.venv = venv
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self.render_mode = venv.render_mode
        self._actions: Any = None

    def reset(self) -> dict[str, np.ndarray]:
        seeds = self._seeds
        seed = None if all(s is None for s in seeds) else [int(s) if s is not None else i for i, s in enumerate(seeds)]
        obs, infos = self.venv.reset(seed=seed)
        self.reset_infos = [{k: v[i] for k, v in infos.items() if not k.startswith("_")} for i in range(self.num_envs)]
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        obs, reward, terminated, truncated, infos, finals = self.venv.step_streams(self._actions)
        dones = terminated | truncated
        for i, fin in enumerate(finals):
            if fin is not None:
                # SB3 reads the ended episode's info (e.g. "success" for evaluation), not the new one's.
                info = dict(fin["info"])
                info["terminal_observation"] = fin["obs"]
                if "success" in info:  # SB3 logs rollout/success_rate from this key
                    info["is_success"] = bool(info["success"])
                self.reset_infos[i] = infos[i]
                infos[i] = info
            infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        return obs, reward.astype(np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        return list(self.venv.world.frames.copy())

    def _targets(self, indices: VecEnvIndices) -> list[int]:
        return list(self._get_indices(indices))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.venv, attr_name)
        return [value for _ in self._targets(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any) -> list[Any]:
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._targets(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._targets(indices)]


def make_sb3_env(env_id: str, num_envs: int = 1, **kwargs: Any) -> SB3VecEnv:
    """``gym.make_vec(env_id, num_envs, vectorization_mode="vector_entry_point", **kwargs)`` as an SB3 VecEnv."""
    import gymnasium as gym

    import worldenv  # noqa: F401  (registers the ids)

    venv = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)
    inner = venv
    while not isinstance(inner, WorldVectorEnv) and hasattr(inner, "env"):
        inner = inner.env
    return SB3VecEnv(inner)

