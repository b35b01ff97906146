"""Action spaces and the camera pose updates they produce.

An action becomes a rigid update of the camera pose. With ``c2w`` the current
camera-to-world pose, every controller returns the new pose ``c2w'`` and the
update ``dT = inv(c2w) @ c2w'`` expressed in the current camera frame, so that
``c2w' = c2w @ dT`` (INSPATIO-WORLD §3.2.2: ``T_i = T_{i-1} · ΔT_i``).

Discrete and continuous controls move an embodied agent, not a free camera:

* yaw turns about the world's vertical axis (gravity is +y), so turning never
  rolls the view;
* pitch turns about the camera's x axis and is clamped to ``±pitch_limit``;
* translation is expressed in the *level heading frame* (right, down, forward
  with forward the view direction projected onto the ground plane), so that
  looking down and moving forward does not dig into the floor.

Positive yaw turns right (clockwise seen from above, since +y points down);
positive pitch looks up. All functions are batched over a leading dimension B.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

from worldenv.geometry import invert_se3, orthonormalize, quat_to_matrix, rot_x, rot_y, rot_z, se3

__all__ = [
    "Controls",
    "DiscreteControls",
    "DiscreteControlsConfig",
    "ContinuousControls",
    "ContinuousControlsConfig",
    "PoseControls",
    "PoseControlsConfig",
    "DISCRETE_ACTIONS",
    "make_controls",
    "heading_frame",
    "pitch_of",
    "yaw_of",
    "apply_motion",
]

DOWN = np.array([0.0, 1.0, 0.0])


# ----------------------------------------------------------------- pose helpers


def _check_c2w(c2w: np.ndarray) -> np.ndarray:
    P = np.asarray(c2w, dtype=np.float64)
    if P.ndim != 3 or P.shape[1:] != (4, 4):
        raise ValueError(f"Expect `c2w` to have shape (B, 4, 4), actually: {P.shape}")
    if not np.all(np.isfinite(P)):
        raise ValueError("Expect `c2w` to be finite, actually: it contains NaN or inf")
    return P


def pitch_of(c2w: np.ndarray) -> np.ndarray:
    """Pitch ``(B,)`` in radians of poses ``(B, 4, 4)``: positive when the camera looks up."""
    fy = np.asarray(c2w)[..., 1, 2]  # world y of the view direction; y is down
    return np.arcsin(np.clip(-fy, -1.0, 1.0))


def yaw_of(c2w: np.ndarray) -> np.ndarray:
    """Yaw ``(B,)`` in radians about world +y of poses ``(B, 4, 4)``; 0 looks along world +z."""
    f = np.asarray(c2w)[..., :3, 2]
    return np.arctan2(f[..., 0], f[..., 2])


def heading_frame(c2w: np.ndarray) -> np.ndarray:
    """Level heading frames ``(B, 3, 3)``: columns right, down, forward on the ground plane.

    Forward is the view direction with its vertical part removed; when the
    camera looks straight up or down the camera's y axis (projected) stands in.
    """
    R = np.asarray(c2w)[..., :3, :3]
    fwd = R[..., :, 2].copy()
    fwd[..., 1] = 0.0
    n = np.linalg.norm(fwd, axis=-1, keepdims=True)
    # Degenerate when looking along gravity: the camera's y axis then lies
    # along the heading (roll-free cameras), as -y looking down, +y looking up.
    alt = -R[..., :, 1] * np.sign(R[..., 1:2, 2])
    alt[..., 1] = 0.0
    fwd = np.where(n > 1e-6, fwd / np.maximum(n, 1e-12), alt / np.maximum(np.linalg.norm(alt, axis=-1, keepdims=True), 1e-12))
    down = np.broadcast_to(DOWN, fwd.shape)
    right = np.cross(down, fwd)
    return np.stack([right, down, fwd], axis=-1)


def apply_motion(
    c2w: np.ndarray,
    translation: np.ndarray,
    yaw: np.ndarray,
    pitch: np.ndarray,
    roll: np.ndarray | None = None,
    pitch_limit: float = math.radians(80.0),
) -> np.ndarray:
    """Move agents: translate in the level heading frame, then yaw, pitch (clamped) and roll.

    Args:
        c2w: Current poses ``(B, 4, 4)`` float64.
        translation: ``(B, 3)`` metres along (right, down, forward) of the level heading frame.
        yaw: ``(B,)`` radians about world +y (positive turns right).
        pitch: ``(B,)`` radians about the camera x axis (positive looks up), clamped so that the
            resulting pitch stays within ``±pitch_limit``.
        roll: Optional ``(B,)`` radians about the camera z axis.
        pitch_limit: Largest absolute pitch in radians.

    Returns:
        New poses ``(B, 4, 4)`` float64.
    """
    P = np.asarray(c2w, dtype=np.float64)
    H = heading_frame(P)
    t = P[:, :3, 3] + np.einsum("bij,bj->bi", H, np.asarray(translation, dtype=np.float64))
    current = pitch_of(P)
    # Clamp the resulting pitch, not the increment: a pose that starts beyond
    # the limit is brought back inside rather than stuck.
    target = np.clip(current + np.asarray(pitch, dtype=np.float64), -pitch_limit, pitch_limit)
    dpitch = target - current
    # Camera x rotation by +a tilts the view direction towards -y (up).
    R = rot_y(np.asarray(yaw, dtype=np.float64)) @ P[:, :3, :3] @ rot_x(dpitch)
    if roll is not None:
        R = R @ rot_z(np.asarray(roll, dtype=np.float64))
    return se3(R, t)


# ---------------------------------------------------------------- controllers


class Controls(ABC):
    """Maps actions to camera pose updates.

    Attributes:
        action_space: The Gymnasium space of one environment's action.
    """

    action_space: spaces.Space[Any]

    @abstractmethod
    def check_action(self, action: Any) -> np.ndarray:
        """Validate one action and return it as an array; raise ``ValueError``/``TypeError`` naming ``action``."""

    @abstractmethod
    def _apply(self, c2w: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Batched update of valid actions ``(B, ...)``; returns new poses ``(B, 4, 4)``."""

    def is_stop(self, action: Any) -> bool:
        """Whether ``action`` is the agent's STOP (ends a navigation episode)."""
        return False

    def apply(self, c2w: np.ndarray, actions: Any) -> tuple[np.ndarray, np.ndarray]:
        """Apply a batch of actions.

        Args:
            c2w: Current poses ``(B, 4, 4)`` float64.
            actions: One action per pose, stacked along the first axis.

        Returns:
            ``(c2w_new, dT)``, both ``(B, 4, 4)`` float64, with ``c2w_new = c2w @ dT``.
        """
        P = _check_c2w(c2w)
        acts = [self.check_action(a) for a in actions]
        if len(acts) != P.shape[0]:
            raise ValueError(f"Expect one action per pose ({P.shape[0]}), actually: {len(acts)}")
        new = self._apply(P, np.stack(acts) if acts else np.zeros((0,)))
        return new, invert_se3(P) @ new

    def step(self, c2w: np.ndarray, action: Any) -> np.ndarray:
        """Apply one action to one pose ``(4, 4)`` and return the new pose ``(4, 4)``."""
        P = np.asarray(c2w, dtype=np.float64)
        if P.shape != (4, 4):
            raise ValueError(f"Expect `c2w` to have shape (4, 4), actually: {P.shape}")
        return self.apply(P[None], [action])[0][0]


DISCRETE_ACTIONS = (
    "stop",
    "move_forward",
    "turn_left",
    "turn_right",
    "look_up",
    "look_down",
    "move_backward",
    "strafe_left",
    "strafe_right",
)
"""Every discrete action; the first four are Habitat's PointNav set in Habitat's order."""


@dataclass
class DiscreteControlsConfig:
    """Configuration of :class:`DiscreteControls`.

    Attributes:
        actions: The actions, in action-index order; a subset of ``DISCRETE_ACTIONS``.
        forward_step: Metres moved by move_forward / move_backward.
        strafe_step: Metres moved by strafe_left / strafe_right.
        turn_angle: Degrees turned by turn_left / turn_right.
        look_angle: Degrees pitched by look_up / look_down.
        pitch_limit: Largest absolute pitch in degrees.
    """

    actions: tuple[str, ...] = DISCRETE_ACTIONS
    forward_step: float = 0.25
    strafe_step: float = 0.25
    turn_angle: float = 10.0
    look_angle: float = 10.0
    pitch_limit: float = 80.0

    def __post_init__(self) -> None:
        self.actions = tuple(self.actions)
        unknown = [a for a in self.actions if a not in DISCRETE_ACTIONS]
        if not self.actions or unknown or len(set(self.actions)) != len(self.actions):
            raise ValueError(
                f"Expect `actions` to be distinct names from {DISCRETE_ACTIONS}, actually: {self.actions}"
            )
        for name in ("forward_step", "strafe_step", "turn_angle", "look_angle"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"Expect `{name}` to be finite and non-negative, actually: {v}")
        if not (0.0 < self.pitch_limit < 90.0):
            raise ValueError(f"Expect `pitch_limit` in (0, 90) degrees, actually: {self.pitch_limit}")


class DiscreteControls(Controls):
    """Habitat-like discrete actions: ``Discrete(len(config.actions))``.

    The default order is stop, move_forward, turn_left, turn_right, look_up,
    look_down, move_backward, strafe_left, strafe_right; pass
    ``actions=("stop", "move_forward", "turn_left", "turn_right")`` for Habitat's
    PointNav set.
    """

    def __init__(self, config: DiscreteControlsConfig | None = None, **overrides: Any) -> None:
        self.config = config if config is not None else DiscreteControlsConfig(**overrides)
        c = self.config
        self.action_space = spaces.Discrete(len(c.actions))
        turn, look = math.radians(c.turn_angle), math.radians(c.look_angle)
        table = {
            "stop": ((0, 0, 0), 0, 0),
            "move_forward": ((0, 0, c.forward_step), 0, 0),
            "move_backward": ((0, 0, -c.forward_step), 0, 0),
            "strafe_left": ((-c.strafe_step, 0, 0), 0, 0),
            "strafe_right": ((c.strafe_step, 0, 0), 0, 0),
            "turn_left": ((0, 0, 0), -turn, 0),
            "turn_right": ((0, 0, 0), turn, 0),
            "look_up": ((0, 0, 0), 0, look),
            "look_down": ((0, 0, 0), 0, -look),
        }
        self._translation = np.array([table[a][0] for a in c.actions], dtype=np.float64)
        self._yaw = np.array([table[a][1] for a in c.actions], dtype=np.float64)
        self._pitch = np.array([table[a][2] for a in c.actions], dtype=np.float64)
        self.stop_action = c.actions.index("stop") if "stop" in c.actions else None

    def check_action(self, action: Any) -> np.ndarray:
        a = np.asarray(action)
        if a.shape != () or not (np.issubdtype(a.dtype, np.integer) or (np.issubdtype(a.dtype, np.floating) and float(a).is_integer())):
            raise TypeError(f"Expect `action` to be an int in [0, {self.action_space.n}), actually: {action!r}")
        if not 0 <= int(a) < self.action_space.n:
            raise ValueError(f"Expect `action` in [0, {self.action_space.n}), actually: {int(a)}")
        return np.asarray(int(a))

    def is_stop(self, action: Any) -> bool:
        return self.stop_action is not None and int(self.check_action(action)) == self.stop_action

    def name(self, action: int) -> str:
        """The name of action index ``action``."""
        return self.config.actions[int(self.check_action(action))]

    def _apply(self, c2w: np.ndarray, actions: np.ndarray) -> np.ndarray:
        idx = actions.astype(np.int64)
        return apply_motion(
            c2w, self._translation[idx], self._yaw[idx], self._pitch[idx],
            pitch_limit=math.radians(self.config.pitch_limit),
        )


@dataclass
class ContinuousControlsConfig:
    """Configuration of :class:`ContinuousControls`.

    Attributes:
        max_linear: Metres moved per step at action magnitude 1.
        max_angular: Degrees turned per step at action magnitude 1.
        pitch_limit: Largest absolute pitch in degrees.
        allow_vertical: Whether the second component (down) moves the agent; ground agents set False.
        allow_roll: Whether the sixth component (roll) rolls the camera; ground agents set False.
    """

    max_linear: float = 0.25
    max_angular: float = 10.0
    pitch_limit: float = 80.0
    allow_vertical: bool = True
    allow_roll: bool = True

    def __post_init__(self) -> None:
        for name in ("max_linear", "max_angular"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"Expect `{name}` to be finite and positive, actually: {v}")
        if not (0.0 < self.pitch_limit < 90.0):
            raise ValueError(f"Expect `pitch_limit` in (0, 90) degrees, actually: {self.pitch_limit}")


class ContinuousControls(Controls):
    """A twist per step: ``Box(-1, 1, (6,), float32)``.

    Components: (right, down, forward) translation in the level heading frame,
    scaled by ``max_linear`` metres, then (pitch, yaw, roll) scaled by
    ``max_angular`` degrees: pitch about the camera x axis (positive looks up,
    clamped), yaw about world +y (positive turns right), roll about the camera
    z axis. Disabled components (``allow_vertical``, ``allow_roll``) are ignored.
    """

    def __init__(self, config: ContinuousControlsConfig | None = None, **overrides: Any) -> None:
        self.config = config if config is not None else ContinuousControlsConfig(**overrides)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(6,), dtype=np.float32)

    def check_action(self, action: Any) -> np.ndarray:
        try:
            a = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise TypeError(f"Expect `action` to be an array of 6 numbers, actually: {action!r}") from e
        if a.shape != (6,):
            raise ValueError(f"Expect `action` to have shape (6,), actually: {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"Expect `action` to be finite, actually: {a.tolist()}")
        # A float32 sample may sit a rounding step outside [-1, 1] after a cast.
        if np.any(np.abs(a) > 1.0 + 1e-6):
            raise ValueError(f"Expect `action` within [-1, 1], actually: {a.tolist()}")
        return np.clip(a, -1.0, 1.0)

    def _apply(self, c2w: np.ndarray, actions: np.ndarray) -> np.ndarray:
        c = self.config
        trans = actions[:, :3] * c.max_linear
        if not c.allow_vertical:
            trans[:, 1] = 0.0
        ang = np.radians(actions[:, 3:] * c.max_angular)
        roll = ang[:, 2] if c.allow_roll else None
        return apply_motion(c2w, trans, ang[:, 1], ang[:, 0], roll, pitch_limit=math.radians(c.pitch_limit))


@dataclass
class PoseControlsConfig:
    """Configuration of :class:`PoseControls`.

    Attributes:
        mode: ``"absolute"``: the action is the new camera-to-world pose; ``"relative"``:
            the action is ``dT`` in the current camera frame (``c2w' = c2w @ dT``).
        max_translation: Bound of the translation components of the action space, in metres.
    """

    mode: str = "absolute"
    max_translation: float = 1000.0

    def __post_init__(self) -> None:
        if self.mode not in ("absolute", "relative"):
            raise ValueError(f"Expect `mode` to be 'absolute' or 'relative', actually: {self.mode!r}")
        if not (math.isfinite(self.max_translation) and self.max_translation > 0):
            raise ValueError(f"Expect `max_translation` to be finite and positive, actually: {self.max_translation}")


class PoseControls(Controls):
    """Target poses, for trajectory replay: ``Box((7,), float64)`` of ``(tx, ty, tz, qx, qy, qz, qw)``.

    The quaternion (TUM order, normalised on use) gives the rotation; a 4x4 pose
    matrix is accepted too. No pitch clamp is applied: replay is exact.
    """

    def __init__(self, config: PoseControlsConfig | None = None, **overrides: Any) -> None:
        self.config = config if config is not None else PoseControlsConfig(**overrides)
        m = self.config.max_translation
        low = np.array([-m, -m, -m, -1, -1, -1, -1], dtype=np.float64)
        self.action_space = spaces.Box(low, -low, dtype=np.float64)

    def check_action(self, action: Any) -> np.ndarray:
        try:
            a = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise TypeError(f"Expect `action` to be 7 numbers (t, q) or a 4x4 pose, actually: {action!r}") from e
        if not np.all(np.isfinite(a)):
            raise ValueError("Expect `action` to be finite, actually: it contains NaN or inf")
        if a.shape == (4, 4):
            R = a[:3, :3]
            if np.abs(R @ R.T - np.eye(3)).max() > 1e-5 or np.linalg.det(R) <= 0 or np.abs(a[3] - [0, 0, 0, 1]).max() > 1e-9:
                raise ValueError("Expect `action` to be a rigid transform [[R, t], [0, 1]], actually: R is not a rotation")
            return se3(orthonormalize(R), a[:3, 3])
        if a.shape != (7,):
            raise ValueError(f"Expect `action` to have shape (7,) or (4, 4), actually: {a.shape}")
        if np.linalg.norm(a[3:]) < 1e-9:
            raise ValueError("Expect the quaternion of `action` to be non-zero, actually: zero")
        if np.any(np.abs(a[:3]) > self.config.max_translation):
            raise ValueError(f"Expect the translation of `action` within ±{self.config.max_translation}, actually: {a[:3].tolist()}")
        return se3(quat_to_matrix(a[3:]), a[:3])

    def _apply(self, c2w: np.ndarray, actions: np.ndarray) -> np.ndarray:
        return actions.copy() if self.config.mode == "absolute" else c2w @ actions


def make_controls(kind: str | Controls, **kwargs: Any) -> Controls:
    """Build controls by name: ``"discrete"``, ``"continuous"`` or ``"pose"``, with config overrides."""
    if isinstance(kind, Controls):
        return kind
    table = {"discrete": DiscreteControls, "continuous": ContinuousControls, "pose": PoseControls}
    if kind not in table:
        raise ValueError(f"Expect `controls` to be one of {sorted(table)} or a Controls, actually: {kind!r}")
    return table[kind](**kwargs)
