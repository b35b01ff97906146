"""Scenes with ground truth: procedural worlds, mesh files and captured RGB-D sequences.

``load_scene(spec, seed=0, **options)`` returns a ``Scene``:

============================ ==================================================
spec                         scene
============================ ==================================================
``rooms``                    indoor rooms joined by doorways and corridors
``street``                   an outdoor street for driving
``mesh:<path>``              an OBJ/GLB/GLTF/PLY file (through trimesh)
``capture:<format>:<path>``  posed RGB-D frames: ``tum``, ``re10k``, ``kitti``,
                             ``worldenv`` (this package's own shards)
============================ ==================================================

``options`` go to the scene's configuration (``RoomsConfig``, ``StreetConfig``,
``MeshConfig``, ``CaptureConfig``; a capture's other options go to its reader,
e.g. ``depth_scale``). The same spec and seed give an identical
scene and bit-identical renders. Heavy dependencies (moderngl, trimesh, scipy)
are imported when a scene needs them, not by this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worldenv.scenes.base import CaptureFormatError, NoOracleError, Scene, View
    from worldenv.scenes.occupancy import NoNavigableAreaError, OccupancyGrid
    from worldenv.scenes.renderer import RenderUnavailableError

__all__ = [
    "load_scene",
    "Scene",
    "View",
    "OccupancyGrid",
    "NoOracleError",
    "NoNavigableAreaError",
    "CaptureFormatError",
    "RenderUnavailableError",
    "SCENE_FAMILIES",
    "CAPTURE_FORMATS",
]

# Names resolved on first access, so that importing a submodule (the CLI's
# ``worldenv.scenes.datagen``) does not import NumPy, torch or the GL stack.
_LAZY = {
    "Scene": "worldenv.scenes.base",
    "View": "worldenv.scenes.base",
    "NoOracleError": "worldenv.scenes.base",
    "CaptureFormatError": "worldenv.scenes.base",
    "OccupancyGrid": "worldenv.scenes.occupancy",
    "NoNavigableAreaError": "worldenv.scenes.occupancy",
    "RenderUnavailableError": "worldenv.scenes.renderer",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'worldenv.scenes' has no attribute {name!r}")


SCENE_FAMILIES = ("rooms", "street", "mesh", "capture")
CAPTURE_FORMATS = ("tum", "re10k", "kitti", "worldenv")


def load_scene(spec: str, seed: int = 0, **options: Any) -> Scene:
    """Build or load a scene.

    Args:
        spec: ``"rooms"``, ``"street"``, ``"mesh:<path>"`` or ``"capture:<format>:<path>"``.
        seed: Seed of procedural scenes (and of anything random in the others).
        **options: Fields of the family's config dataclass.

    Returns:
        The scene.

    Raises:
        ValueError: Unknown spec or bad option.
        FileNotFoundError: A mesh or capture path does not exist.
    """
    if not isinstance(spec, str):
        raise TypeError(f"Expect `spec` to be a str, actually: {type(spec).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int) and not hasattr(seed, "__index__"):
        raise TypeError(f"Expect `seed` to be an int, actually: {type(seed).__name__}")
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"Expect `seed` to be non-negative, actually: {seed}")
    family, _, rest = spec.partition(":")
    try:
        if family == "rooms" and not rest:
            from worldenv.scenes.rooms import RoomsConfig, RoomsScene

            return RoomsScene(seed, RoomsConfig(**options))
        if family == "street" and not rest:
            from worldenv.scenes.street import StreetConfig, StreetScene

            return StreetScene(seed, StreetConfig(**options))
        if family == "mesh" and rest:
            from worldenv.scenes.mesh import MeshConfig, MeshScene

            return MeshScene(rest, seed, MeshConfig(**options))
        if family == "capture":
            fmt, _, path = rest.partition(":")
            if fmt not in CAPTURE_FORMATS or not path:
                raise ValueError(
                    f"Expect `spec` 'capture:<format>:<path>' with format in {CAPTURE_FORMATS}, actually: {spec!r}"
                )
            from worldenv.scenes.capture import CaptureConfig, CaptureScene

            return CaptureScene(fmt, path, seed, CaptureConfig.from_options(**options))
    except TypeError as e:
        if "unexpected keyword argument" in str(e):
            raise ValueError(f"Expect `options` to be fields of the {family!r} config, actually: {e}") from None
        raise
    raise ValueError(
        "Expect `spec` to be 'rooms', 'street', 'mesh:<path>' or 'capture:<format>:<path>', "
        f"actually: {spec!r}"
    )
