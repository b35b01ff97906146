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
import torch
from gymnasium import spaces
from torch import nn

try:
    from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
    from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvStepReturn
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "worldenv.sb3 needs stable-baselines3: pip install 'worldenv[agents]' (or pip install stable-baselines3)"
    ) from e

from worldenv.envs.vector import WorldVectorEnv

__all__ = ["NavEncoder", "SB3VecEnv", "make_sb3_env"]


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


_MIN_SIDE = 36  # the smallest side NavEncoder's conv stack (8/4, 4/2, 3/1) maps to at least 1x1


class NavEncoder(BaseFeaturesExtractor):
    """Features for navigation policies: a small CNN per image and the goal vector kept readable.

    SB3's ``CombinedExtractor`` concatenates a 2-number ``pointgoal`` to a wide
    CNN embedding, and PPO drifts to "STOP at once" before the goal vector
    matters to it. Here the goal's polar coordinates enter as
    ``(distance, cos angle, sin angle)`` (no jump at ±π), both raw and through
    a small MLP, next to a compact image embedding.

    * images (``uint8`` ``(H, W, C)`` boxes: ``rgb``, ``imagegoal``): average-pooled
      by ``pool`` (less where the side would drop below 36 pixels), then 3 conv
      layers and a linear layer to ``cnn_features``;
    * ``pointgoal``: ``(d, cos a, sin a)`` and a 32-unit ReLU layer on it;
    * anything else (``depth`` is an image too; ``pose``): flattened.

    Use with ``PPO("MultiInputPolicy", venv, policy_kwargs={"features_extractor_class": NavEncoder})``.
    """

    def __init__(self, observation_space: Any, cnn_features: int = 128, pool: int = 2) -> None:
        if not isinstance(observation_space, spaces.Dict):
            raise TypeError(f"Expect `observation_space` to be a Dict space, actually: {type(observation_space).__name__}")
        if cnn_features < 1 or pool < 1:
            raise ValueError(f"Expect `cnn_features` >= 1 and `pool` >= 1, actually: {cnn_features}, {pool}")
        encoders: dict[str, nn.Module] = {}
        channels_last: dict[str, bool] = {}
        total = 0
        for key, space in observation_space.spaces.items():
            shape = tuple(space.shape or ())
            if len(shape) == 3:
                # SB3 transposes uint8 images to (C, H, W) and scales them to [0, 1] before the
                # extractor; float maps (depth) arrive as the env made them, (H, W, C).
                last = not (is_image_space(space) and is_image_space_channels_first(space))
                c, h, w = (shape[2], shape[0], shape[1]) if last else shape
                if min(h, w) < _MIN_SIDE:
                    raise ValueError(f"Expect images of at least {_MIN_SIDE}x{_MIN_SIDE} for `{key}`, actually: {h}x{w}")
                p = pool
                while p > 1 and min(h, w) // p < _MIN_SIDE:  # pool less rather than shrink below the CNN's reach
                    p -= 1
                cnn = nn.Sequential(
                    nn.AvgPool2d(p) if p > 1 else nn.Identity(),
                    nn.Conv2d(c, 32, 8, stride=4), nn.ReLU(),
                    nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
                    nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
                    nn.Flatten(),
                )  # fmt: skip
                with torch.no_grad():
                    n = cnn(torch.zeros(1, c, h, w)).shape[1]
                encoders[key] = nn.Sequential(cnn, nn.Linear(n, cnn_features), nn.ReLU())
                channels_last[key] = last
                total += cnn_features
            elif key == "pointgoal":
                encoders[key] = nn.Sequential(nn.Linear(3, 32), nn.ReLU())
                total += 3 + 32
            else:
                total += int(np.prod(shape))
        super().__init__(observation_space, features_dim=total)
        self.encoders = nn.ModuleDict(encoders)
        self._channels_last = channels_last
        self._keys = list(observation_space.spaces)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        for key in self._keys:
            x = observations[key].float()
            if key == "pointgoal":
                polar = torch.stack([x[:, 0], torch.cos(x[:, 1]), torch.sin(x[:, 1])], dim=-1)
                parts += [polar, self.encoders[key](polar)]
            elif key in self.encoders:
                parts.append(self.encoders[key](x.permute(0, 3, 1, 2) if self._channels_last[key] else x))
            else:
                parts.append(x.flatten(1))
        return torch.cat(parts, dim=1)
