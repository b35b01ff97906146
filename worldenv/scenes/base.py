"""The ``Scene`` interface every world implements, and the base class of rendered scenes.

A scene gives posed RGB-D reference views, an occupancy map (collisions,
geodesic distances, start/goal sampling), its bounds, and, where it has
ground truth, an exact renderer (the *oracle*). Procedural (``rooms``,
``street``) and mesh scenes have an oracle; captured sequences do not.

Conventions (ARCHITECTURE.md): OpenCV camera, ``c2w`` float64 ``(4, 4)``,
metric world with gravity +y (the floor is below the camera, at larger y),
images uint8 ``(H, W, 3)`` RGB, depth float32 ``(H, W)`` metres with 0 =
unknown (also where a ray hits nothing, such as the sky).
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from worldenv._checks import check_size
from worldenv.geometry import PoseFormatError, intrinsics_from_fov, rot_x, rot_y, se3
from worldenv.scenes.occupancy import OccupancyGrid
from worldenv.scenes.renderer import Lighting, Renderer, Sky, gl_context

__all__ = ["View", "Scene", "RenderedScene", "NoOracleError", "CaptureFormatError", "check_poses", "check_intrinsics_batch"]


class NoOracleError(RuntimeError):
    """The scene has no ground-truth renderer (captured data)."""


class CaptureFormatError(PoseFormatError):
    """A captured-data file is malformed; the message names the file and, for text files, the line."""

    def __init__(self, path: str | os.PathLike[str], line: int | None, message: str) -> None:
        ValueError.__init__(self, f"{os.fspath(path)}:{line}: {message}" if line else f"{os.fspath(path)}: {message}")
        self.path = os.fspath(path)
        self.line = line if line else 0


@dataclass
class View:
    """One posed RGB-D frame.

    Attributes:
        rgb: ``(H, W, 3)`` uint8.
        depth: ``(H, W)`` float32 metres along the camera z axis, 0 = unknown.
        c2w: ``(4, 4)`` float64 camera-to-world pose (OpenCV camera).
        K: ``(3, 3)`` float64 intrinsics in pixels of this frame.
        timestamp: Seconds (captured data) or the frame index (synthetic).
    """

    rgb: np.ndarray
    depth: np.ndarray
    c2w: np.ndarray
    K: np.ndarray
    timestamp: float = 0.0

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return int(self.rgb.shape[0]), int(self.rgb.shape[1])


def check_poses(name: str, c2w: object) -> np.ndarray:
    """``c2w`` as float64 ``(B, 4, 4)`` (a single ``(4, 4)`` becomes B = 1); finite."""
    P = np.asarray(c2w, dtype=np.float64)
    if P.shape == (4, 4):
        P = P[None]
    if P.ndim != 3 or P.shape[1:] != (4, 4):
        raise ValueError(f"Expect `{name}` to have shape (B, 4, 4) or (4, 4), actually: {P.shape}")
    if not np.all(np.isfinite(P)):
        raise ValueError(f"Expect `{name}` to be finite, actually: it contains NaN or inf")
    return P


def check_intrinsics_batch(name: str, K: object, batch: int) -> np.ndarray:
    """``K`` as float64 ``(B, 3, 3)`` (a single ``(3, 3)`` is broadcast); finite, non-zero focal lengths."""
    Km = np.asarray(K, dtype=np.float64)
    if Km.shape == (3, 3):
        Km = np.broadcast_to(Km, (batch, 3, 3))
    if Km.shape != (batch, 3, 3):
        raise ValueError(f"Expect `{name}` to have shape (3, 3) or ({batch}, 3, 3), actually: {Km.shape}")
    if not np.all(np.isfinite(Km)) or np.any(Km[:, 0, 0] == 0) or np.any(Km[:, 1, 1] == 0):
        raise ValueError(f"Expect `{name}` to be finite with non-zero focal lengths, actually: {Km[0].tolist()}")
    return Km


class Scene(ABC):
    """A world the environment can be reset into.

    Attributes:
        spec: The ``load_scene`` spec this scene came from.
        seed: Its seed.
        camera_height: Default camera height above the floor in metres.
        agent_radius: Radius of the agent's collision cylinder in metres.
    """

    spec: str
    seed: int
    camera_height: float = 1.5
    agent_radius: float = 0.18

    @property
    @abstractmethod
    def bounds(self) -> np.ndarray:
        """``(2, 3)`` float64: the minimum and maximum world corner of the scene's content."""

    @property
    @abstractmethod
    def has_oracle(self) -> bool:
        """Whether ``render`` is available (ground truth for any pose)."""

    @property
    @abstractmethod
    def occupancy(self) -> OccupancyGrid | None:
        """The occupancy/height map, or None when the scene has none."""

    @abstractmethod
    def reference_views(self, size: int | tuple[int, int] | None = None) -> list[View]:
        """Posed RGB-D frames that start the world model and the memory.

        Args:
            size: ``(H, W)`` (or one int) to render or resize to; None for the scene's default.
        """

    @abstractmethod
    def render_batch(self, c2w: np.ndarray, K: np.ndarray, size: int | tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Ground-truth frames for a batch of cameras.

        Args:
            c2w: ``(B, 4, 4)`` camera-to-world poses.
            K: ``(3, 3)`` or ``(B, 3, 3)`` intrinsics in pixels of ``size``.
            size: ``(H, W)`` or one int for a square.

        Returns:
            ``rgb`` ``(B, H, W, 3)`` uint8 and ``depth`` ``(B, H, W)`` float32 metres (0 = nothing hit).

        Raises:
            NoOracleError: The scene has no ground truth.
        """

    def render(self, c2w: np.ndarray, K: np.ndarray, size: int | tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Ground-truth frame for one camera: ``rgb (H, W, 3)`` uint8, ``depth (H, W)`` float32 metres.

        ``c2w`` is ``(4, 4)``, ``K`` ``(3, 3)`` in pixels of ``size`` ``(H, W)``.
        """
        P = np.asarray(c2w, dtype=np.float64)
        if P.shape != (4, 4):
            raise ValueError(f"Expect `c2w` to have shape (4, 4) (use render_batch for a batch), actually: {P.shape}")
        if np.shape(K) != (3, 3):
            raise ValueError(f"Expect `K` to have shape (3, 3), actually: {np.shape(K)}")
        rgb, depth = self.render_batch(P[None], K, size)
        return rgb[0], depth[0]

    def collide(self, p0: np.ndarray, p1: np.ndarray) -> np.ndarray | bool:
        """Whether the agent moving straight from ``p0`` to ``p1`` (world points ``(..., 3)``) hits anything."""
        occ = self.occupancy
        if occ is None:
            return False if np.ndim(p0) == 1 and np.ndim(p1) == 1 else np.zeros(np.broadcast_shapes(np.shape(p0)[:-1], np.shape(p1)[:-1]), bool)
        return occ.collide(p0, p1)

    @abstractmethod
    def sample_start_goal(self, rng: np.random.Generator, min_geodesic: float = 1.0, max_geodesic: float = 30.0) -> tuple[np.ndarray, np.ndarray, float]:
        """A start pose ``(4, 4)``, a goal point ``(3,)`` on the floor and their geodesic distance in metres."""

    @abstractmethod
    def geodesic_distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
        """Geodesic distance in metres from points ``a (..., 3)`` to ``b (3,)`` (inf where unreachable)."""

    def default_intrinsics(self, size: int | tuple[int, int], fov_deg: float = 90.0) -> np.ndarray:
        """Intrinsics ``(3, 3)`` of a square-pixel camera of horizontal field of view ``fov_deg``."""
        H, W = check_size("size", size)
        return intrinsics_from_fov(W, H, fov_deg)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(spec={self.spec!r}, seed={self.seed})"


class RenderedScene(Scene):
    """A scene with triangles, textures and lights: it has an oracle and an occupancy map.

    Subclasses build ``vertices``, ``textures``, ``lighting``, ``sky`` and ``_occupancy``
    in their constructor; the GL resources are created on the first render.
    """

    vertices: np.ndarray
    textures: np.ndarray | None
    lighting: Lighting
    sky: Sky | None = None
    near: float = 0.05
    far: float = 200.0
    _occupancy: OccupancyGrid
    _bounds: np.ndarray
    _renderer: Renderer | None = None

    @property
    def bounds(self) -> np.ndarray:
        return self._bounds

    @property
    def has_oracle(self) -> bool:
        return True

    @property
    def occupancy(self) -> OccupancyGrid:
        return self._occupancy

    @property
    def triangles(self) -> np.ndarray:
        """``(N, 3, 3)`` float32 world-space triangle corners (what the renderer draws)."""
        return self.vertices[:, :3].reshape(-1, 3, 3)

    @property
    def renderer(self) -> Renderer:
        """The GL renderer of this scene (created on first use)."""
        if self._renderer is not None and self._renderer.pid != os.getpid():
            gl_context()  # inherited through fork: raises with what to do instead
        if self._renderer is None:
            self._renderer = Renderer(self.vertices, self.textures, self.lighting, self.sky, self.near, self.far)
        return self._renderer

    def render_batch(self, c2w: np.ndarray, K: np.ndarray, size: int | tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        P = check_poses("c2w", c2w)
        hw = check_size("size", size)
        Km = check_intrinsics_batch("K", K, P.shape[0])
        return self.renderer.render(P, Km, hw)

    def sample_start_goal(self, rng: np.random.Generator, min_geodesic: float = 1.0, max_geodesic: float = 30.0) -> tuple[np.ndarray, np.ndarray, float]:
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"Expect `rng` to be a numpy.random.Generator, actually: {type(rng).__name__}")
        return self._occupancy.sample_start_goal(rng, float(min_geodesic), float(max_geodesic), self.camera_height)

    def geodesic_distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
        return self._occupancy.geodesic_distance(a, b)

    def pose_at(self, p: np.ndarray, yaw: float, pitch: float = 0.0, height: float | None = None) -> np.ndarray:
        """Camera pose ``(4, 4)`` standing at floor point ``p`` (x, z used), heading ``yaw``, ``pitch`` up.

        The camera is ``height`` (default ``camera_height``) above the floor under ``p``.
        """
        p = np.asarray(p, dtype=np.float64)
        fy = float(self._occupancy.floor_height(p))
        fy = fy if math.isfinite(fy) else float(p[1])
        h = self.camera_height if height is None else float(height)
        # rot_x(pitch) turns the view direction (0, 0, 1) to (0, -sin, cos): up for pitch > 0.
        return se3(rot_y(yaw) @ rot_x(pitch), np.array([p[0], fy - h, p[2]]))

    def reference_views(self, size: int | tuple[int, int] | None = None) -> list[View]:
        """Four level views (one per quarter turn) from ``reference_points()``, 90° field of view, 128² by default."""
        hw = check_size("size", 128 if size is None else size)
        K = intrinsics_from_fov(hw[1], hw[0], 90.0)
        poses = []
        for p in self.reference_points():
            for k in range(4):
                poses.append(self.pose_at(p, k * 0.5 * math.pi))
        P = np.stack(poses)
        rgb, depth = self.render_batch(P, K, hw)
        return [View(rgb[i], depth[i], P[i], K.copy(), float(i)) for i in range(len(P))]

    def reference_points(self) -> list[np.ndarray]:
        """Floor points the reference views are taken from (default: the most open navigable cell)."""
        from scipy.ndimage import distance_transform_edt

        comp = self._occupancy.main_component
        dist = distance_transform_edt(comp)
        iz, ix = np.unravel_index(int(np.argmax(dist)), dist.shape)
        return [self._occupancy.cell_center(iz, ix)]
