"""Scenes from captured posed RGB-D sequences (``capture:<format>:<path>``).

A captured scene has no ground truth beyond its frames: ``render`` raises
``NoOracleError``, there is no occupancy map (``collide`` is always False),
and, with no map, the geodesic distance is the straight line.
``sample_start_goal`` picks a captured camera pose as the start and another
captured camera position as the goal. ``frames`` gives every frame;
``reference_views`` an evenly spaced subset.

Gravity. worldenv's world has gravity along +y, but a capture's world frame is
arbitrary (TUM's motion capture has z up; RealEstate10K's SLAM frame is the
first camera's). With ``align_gravity`` (default) the poses are rotated about
the first camera's centre so that the mean camera "down" axis points along +y,
which is right for upright hand-held and vehicle cameras. ``world_from_file``
is the applied transform.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from worldenv._checks import check_size
from worldenv.geometry import resize_intrinsics, se3
from worldenv.scenes.base import NoOracleError, Scene, View
from worldenv.scenes.occupancy import NoNavigableAreaError, OccupancyGrid
from worldenv.scenes.readers import READERS, FrameSequence

__all__ = ["CaptureConfig", "CaptureScene", "gravity_alignment"]


@dataclass(frozen=True)
class CaptureConfig:
    """Options of ``capture:<format>:<path>`` scenes.

    Attributes:
        align_gravity: Rotate the world so that the cameras' mean down axis is +y.
        max_views: Most frames ``reference_views`` returns (evenly spaced).
        reader: Extra keyword arguments of the format's reader (``depth_scale``, ``max_dt``,
            ``intrinsics`` for TUM; ``frames_dir`` for RE10K; ``poses`` for KITTI; ``clip`` for worldenv).
    """

    align_gravity: bool = True
    max_views: int = 32
    reader: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_views < 1:
            raise ValueError(f"Expect `max_views` >= 1, actually: {self.max_views}")

    @classmethod
    def from_options(cls, **options: Any) -> CaptureConfig:
        """Config fields from ``options``; every other option goes to the reader."""
        names = {f.name for f in fields(cls)} - {"reader"}
        reader = dict(options.pop("reader", {}) or {})
        reader.update({k: v for k, v in options.items() if k not in names})
        return cls(**{k: v for k, v in options.items() if k in names}, reader=reader)


def gravity_alignment(c2w: np.ndarray) -> np.ndarray:
    """Rigid transform ``(4, 4)`` that turns the mean camera down axis of ``c2w (N, 4, 4)`` onto +y.

    The rotation is the smallest one doing so, about the first camera's centre.
    """
    down = c2w[:, :3, 1].mean(axis=0)
    n = np.linalg.norm(down)
    if n < 1e-6:
        return np.eye(4)
    a, b = down / n, np.array([0.0, 1.0, 0.0])
    v, c = np.cross(a, b), float(np.dot(a, b))
    if c < -1 + 1e-9:  # upside down: half a turn about x
        R = np.diag([1.0, -1.0, -1.0])
    else:
        vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
        R = np.eye(3) + vx + vx @ vx / (1 + c)
    p = c2w[0, :3, 3]
    return se3(None, p) @ se3(R) @ se3(None, -p)


class CaptureScene(Scene):
    """A scene made of captured frames; see the module docstring.

    Args:
        fmt: ``"tum"``, ``"re10k"``, ``"kitti"`` or ``"worldenv"``.
        path: The sequence (see ``worldenv.scenes.readers``).
        seed: Kept for the spec; nothing here is random except ``sample_start_goal``'s rng.
        config: Options.
    """

    def __init__(self, fmt: str, path: str, seed: int = 0, config: CaptureConfig | None = None) -> None:
        self.config = cfg = config or CaptureConfig()
        self.spec, self.seed, self.format, self.path = f"capture:{fmt}:{path}", int(seed), fmt, path
        try:
            frames = READERS[fmt](path, **cfg.reader)
        except TypeError as e:
            if "unexpected keyword argument" in str(e):
                raise ValueError(f"Expect options of the {fmt!r} reader, actually: {e}") from None
            raise
        if len(frames) == 0:
            raise ValueError(f"Expect frames in {path}, actually: the {fmt} reader found none")
        self.world_from_file = gravity_alignment(frames.c2w) if cfg.align_gravity else np.eye(4)
        self.frames: FrameSequence = frames.transform(self.world_from_file)
        pos = self.frames.c2w[:, :3, 3]
        self._bounds = np.stack([pos.min(0) - 1.0, pos.max(0) + 1.0])

    @property
    def bounds(self) -> np.ndarray:
        """Camera positions' box grown by 1 m (the capture's content is not known beyond its depth)."""
        return self._bounds

    @property
    def has_oracle(self) -> bool:
        return False

    @property
    def occupancy(self) -> OccupancyGrid | None:
        return None

    def reference_views(self, size: int | tuple[int, int] | None = None) -> list[View]:
        """Up to ``max_views`` evenly spaced frames; resized (area for RGB, nearest for depth) if ``size`` is given."""
        n = len(self.frames)
        idx = np.unique(np.round(np.linspace(0, n - 1, min(n, self.config.max_views))).astype(np.int64))
        views = [self.frames[int(i)] for i in idx]
        if size is None:
            return views
        hw = check_size("size", size)
        return [_resize_view(v, hw) for v in views]

    def render_batch(self, c2w: np.ndarray, K: np.ndarray, size: int | tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        raise NoOracleError(
            f"Expect a scene with ground truth to render, actually: {self.spec} holds captured frames only "
            "(use dynamics='model' or 'warp', or the frames in `scene.frames`)"
        )

    def sample_start_goal(self, rng: np.random.Generator, min_geodesic: float = 1.0, max_geodesic: float = 30.0) -> tuple[np.ndarray, np.ndarray, float]:
        """A captured pose as the start and another captured camera centre in range as the goal (straight-line distance)."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"Expect `rng` to be a numpy.random.Generator, actually: {type(rng).__name__}")
        pos = self.frames.c2w[:, :3, 3]
        d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
        ok = np.argwhere((d >= min_geodesic) & (d <= max_geodesic))
        if ok.size == 0:
            raise NoNavigableAreaError(
                f"Expect two captured cameras {min_geodesic}-{max_geodesic} m apart, actually: the largest distance is {d.max():.2f} m"
            )
        i, j = ok[rng.integers(0, len(ok))]
        return self.frames.c2w[i].copy(), pos[j].copy(), float(d[i, j])

    def geodesic_distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
        """Straight-line distance (there is no map to route around)."""
        out = np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=-1)
        return float(out) if np.ndim(out) == 0 else out


def _resize_view(v: View, hw: tuple[int, int]) -> View:
    from PIL import Image

    H, W = hw
    if v.size == (H, W):
        return v
    rgb = np.asarray(Image.fromarray(v.rgb).resize((W, H), Image.BOX))
    # Nearest sampling at the new pixel centres keeps depth values real (no blending across edges).
    h0, w0 = v.size
    rows = np.clip(np.floor((np.arange(H) + 0.5) * h0 / H).astype(np.int64), 0, h0 - 1)
    cols = np.clip(np.floor((np.arange(W) + 0.5) * w0 / W).astype(np.int64), 0, w0 - 1)
    depth = v.depth[rows][:, cols]
    return View(rgb, depth.astype(np.float32), v.c2w, resize_intrinsics(v.K, v.size, (H, W)), v.timestamp)

