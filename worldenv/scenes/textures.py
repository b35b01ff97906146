"""Procedural, tileable textures generated in NumPy from a seeded generator.

Every texture is a float32 array ``(T, T, 4)`` in ``[0, 1]``: RGB and, in the
alpha channel, a specular mask that scales the material's specular strength
(glass in a window is shiny, the mortar between bricks is not). All patterns
have an integer period over the texture, so they tile seamlessly when a
surface repeats them (the renderer samples with ``REPEAT`` wrapping).

Families (``FAMILIES``): plaster noise, stripes, tiles, checker, wood planks,
wallpaper motifs, brick, carpet, marble, fabric weave, brushed metal, asphalt,
concrete slabs, grass, foliage, building facades with windows, and shop
fronts. ``make_texture(family, rng)`` draws the family's free parameters
(colours, scales, counts) from ``rng``, so two seeds give two different
textures of the same kind. Only ``rng`` is used: no global random state.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable

import numpy as np

__all__ = ["FAMILIES", "make_texture", "fractal_noise", "TEXTURE_SIZE"]

TEXTURE_SIZE = 256
"""Side of every generated texture in texels."""

Rng = np.random.Generator


# ------------------------------------------------------------------ primitives


def fractal_noise(rng: Rng, size: int = TEXTURE_SIZE, beta: float = 2.0, stretch: tuple[float, float] = (1.0, 1.0), low_cut: float = 1.0) -> np.ndarray:
    """Tileable fractal noise ``(size, size)`` in ``[0, 1]`` with a ``1/f^beta`` power spectrum.

    Filtering white noise in the Fourier domain makes the result periodic over
    the texture. ``stretch`` scales the frequencies along (rows, columns):
    a large row stretch gives streaks along the columns (wood grain, brushed metal).
    """
    white = rng.standard_normal((size, size))
    fy = np.fft.fftfreq(size)[:, None] * size * stretch[0]
    fx = np.fft.fftfreq(size)[None, :] * size * stretch[1]
    f = np.sqrt(fx * fx + fy * fy)
    amp = np.where(f >= low_cut, 1.0 / np.maximum(f, 1e-6) ** (beta / 2.0), 0.0)
    out = np.real(np.fft.ifft2(np.fft.fft2(white) * amp))
    lo, hi = np.percentile(out, [1.0, 99.0])
    return np.clip((out - lo) / max(hi - lo, 1e-9), 0.0, 1.0)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1))))


def _color(rng: Rng, hue: tuple[float, float] = (0.0, 1.0), sat: tuple[float, float] = (0.0, 1.0), val: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    return _hsv(rng.uniform(*hue), rng.uniform(*sat), rng.uniform(*val))


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Texel-centre coordinates ``(u, v)`` in ``[0, 1)``: u along columns, v along rows."""
    c = (np.arange(size) + 0.5) / size
    return np.meshgrid(c, c, indexing="xy")


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    t = t[..., None]
    return a * (1.0 - t) + b * t


def _rgba(rgb: np.ndarray, spec: np.ndarray | float) -> np.ndarray:
    size = rgb.shape[0]
    s = np.broadcast_to(np.asarray(spec, dtype=np.float64), (size, size))
    return np.clip(np.concatenate([rgb, s[..., None]], axis=-1), 0.0, 1.0).astype(np.float32)


def _soft_step(x: np.ndarray, edge: float, width: float) -> np.ndarray:
    return np.clip((x - edge) / width + 0.5, 0.0, 1.0)


def _cells(u: np.ndarray, v: np.ndarray, nx: int, ny: int, offset_rows: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Integer cell ids and in-cell coordinates of a running-bond grid of nx x ny cells."""
    row = np.floor(v * ny).astype(np.int64)
    uu = u * nx + offset_rows * (row % 2)
    col = np.floor(uu).astype(np.int64) % nx
    return row, col, uu - np.floor(uu), v * ny - row


# -------------------------------------------------------------------- families


def plaster(rng: Rng, size: int) -> np.ndarray:
    base = _color(rng, sat=(0.05, 0.45), val=(0.55, 0.95))
    n = fractal_noise(rng, size, beta=rng.uniform(1.6, 2.6))
    fine = fractal_noise(rng, size, beta=1.0, low_cut=16)
    amp = rng.uniform(0.06, 0.2)
    rgb = base * (1.0 - amp + amp * (0.7 * n + 0.3 * fine))[..., None]
    return _rgba(rgb, 0.15)


def stripes(rng: Rng, size: int) -> np.ndarray:
    u, v = _grid(size)
    k = int(rng.integers(2, 5))
    cols = [_color(rng, sat=(0.1, 0.6), val=(0.45, 0.95)) for _ in range(k)]
    widths = rng.uniform(0.5, 2.0, size=k)
    reps = int(rng.integers(2, 9))
    edges = np.concatenate([[0.0], np.cumsum(widths) / widths.sum()])
    t = (u * reps) % 1.0
    idx = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, k - 1)
    rgb = np.stack(cols)[idx]
    if rng.random() < 0.5:  # pinstripes at the band edges
        d = np.min(np.abs(t[..., None] - edges[None, None]), axis=-1)
        rgb = _mix(rgb, cols[0] * 0.6, (d < 0.004).astype(np.float64))
    rgb *= (0.92 + 0.08 * fractal_noise(rng, size, beta=2.0))[..., None]
    return _rgba(rgb, 0.1)


def tiles(rng: Rng, size: int) -> np.ndarray:
    u, v = _grid(size)
    n = int(rng.choice([2, 4, 8]))
    row, col, fu, fv = _cells(u, v, n, n)
    a = _color(rng, sat=(0.0, 0.5), val=(0.5, 0.95))
    b = _color(rng, sat=(0.0, 0.6), val=(0.2, 0.9)) if rng.random() < 0.4 else a
    checker = ((row + col) % 2).astype(np.float64)
    rgb = _mix(a[None, None], b[None, None], checker)
    jitter = rng.uniform(0.9, 1.1, size=(n, n))
    rgb = rgb * jitter[row % n, col][..., None]
    grout_w = rng.uniform(0.02, 0.06)
    grout = ((fu < grout_w) | (fv < grout_w)).astype(np.float64)
    gcol = _color(rng, sat=(0.0, 0.2), val=(0.3, 0.8))
    rgb = _mix(rgb, gcol[None, None], grout)
    rgb *= (0.93 + 0.07 * fractal_noise(rng, size, beta=1.5))[..., None]
    return _rgba(rgb, 0.8 * (1.0 - grout))


def checker(rng: Rng, size: int) -> np.ndarray:
    u, v = _grid(size)
    n = int(rng.choice([2, 4, 8]))
    a = _color(rng, sat=(0.0, 0.7), val=(0.6, 1.0))
    b = _color(rng, sat=(0.0, 0.7), val=(0.05, 0.5))
    t = ((np.floor(u * n) + np.floor(v * n)) % 2).astype(np.float64)
    return _rgba(_mix(a[None, None], b[None, None], t), 0.5)


def wood(rng: Rng, size: int) -> np.ndarray:
    u, v = _grid(size)
    planks = int(rng.integers(3, 9))
    row = np.floor(v * planks).astype(np.int64)
    offsets = rng.uniform(0, 1, size=planks)
    lengths = rng.integers(1, 3, size=planks)
    along = (u * lengths[row] + offsets[row]) % 1.0
    base = _hsv(rng.uniform(0.05, 0.11), rng.uniform(0.35, 0.75), rng.uniform(0.3, 0.8))
    tone = rng.uniform(0.75, 1.15, size=planks)[row]
    grain = fractal_noise(rng, size, beta=2.2, stretch=(1.0, 0.08))
    rings = 0.5 + 0.5 * np.sin(2 * np.pi * (v * planks * rng.uniform(3, 8) + 3.0 * grain))
    shade = 0.75 + 0.25 * rings * rng.uniform(0.4, 1.0)
    rgb = base[None, None] * (tone * shade)[..., None]
    seam = ((v * planks) % 1.0 < 0.03) | (along < 0.01)
    rgb = _mix(rgb, base * 0.35, seam.astype(np.float64))
    return _rgba(rgb, 0.45 * (1.0 - seam))


def wallpaper(rng: Rng, size: int) -> np.ndarray:
    u, v = _grid(size)
    n = int(rng.integers(3, 9))
    bg = _color(rng, sat=(0.05, 0.5), val=(0.6, 0.95))
    fg = _color(rng, sat=(0.2, 0.8), val=(0.25, 0.8))
    fu, fv = (u * n) % 1.0 - 0.5, (v * n) % 1.0 - 0.5
    kind = int(rng.integers(0, 4))
    if kind == 0:  # dots
        m = (np.hypot(fu, fv) < rng.uniform(0.12, 0.3)).astype(np.float64)
    elif kind == 1:  # diamonds
        m = (np.abs(fu) + np.abs(fv) < rng.uniform(0.2, 0.45)).astype(np.float64)
    elif kind == 2:  # damask-like interference of cosines
        a, b = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        f = np.cos(2 * np.pi * n * u) * np.cos(2 * np.pi * n * v) + 0.5 * np.cos(2 * np.pi * (a * n * u + b * n * v))
        m = (f > rng.uniform(0.1, 0.6)).astype(np.float64)
    else:  # roses: polar petals
        r, th = np.hypot(fu, fv), np.arctan2(fv, fu)
        petals = int(rng.integers(3, 7))
        m = (r < 0.32 * np.abs(np.cos(petals * th / 2.0)) + 0.04).astype(np.float64)
    rgb = _mix(bg[None, None], fg[None, None], m)
    rgb *= (0.94 + 0.06 * fractal_noise(rng, size))[..., None]
    return _rgba(rgb, 0.1)


def brick(rng: Rng, size: int) -> np.ndarray:
    u, v = _grid(size)
    nx, ny = int(rng.choice([2, 4])), int(rng.choice([4, 8]))
    row, col, fu, fv = _cells(u, v, nx, ny, offset_rows=0.5)
    base = _hsv(rng.uniform(0.0, 0.08), rng.uniform(0.35, 0.75), rng.uniform(0.35, 0.75))
    jitter = rng.uniform(0.75, 1.2, size=(ny, nx))
    rgb = base[None, None] * jitter[row % ny, col][..., None]
    rgb *= (0.85 + 0.15 * fractal_noise(rng, size, beta=1.2, low_cut=8))[..., None]
    mortar = ((fu < 0.04 * nx / 2) | (fv < 0.08)).astype(np.float64)
    rgb = _mix(rgb, _color(rng, sat=(0, 0.15), val=(0.55, 0.85)), mortar)
    return _rgba(rgb, 0.05)


def carpet(rng: Rng, size: int) -> np.ndarray:
    base = _color(rng, sat=(0.2, 0.8), val=(0.2, 0.7))
    n = fractal_noise(rng, size, beta=0.6, low_cut=24)
    m = fractal_noise(rng, size, beta=2.0)
    rgb = base[None, None] * (0.75 + 0.2 * n + 0.1 * m)[..., None]
    return _rgba(rgb, 0.0)


def marble(rng: Rng, size: int) -> np.ndarray:
    u, v = _grid(size)
    base = _color(rng, sat=(0.0, 0.15), val=(0.7, 0.97))
    vein = _color(rng, sat=(0.0, 0.4), val=(0.15, 0.5))
    turb = fractal_noise(rng, size, beta=2.4)
    k = int(rng.integers(1, 4))
    s = np.abs(np.sin(2 * np.pi * (k * (u + v) + rng.uniform(2, 5) * turb)))
    t = np.clip(1.0 - s / 0.15, 0.0, 1.0) ** 2
    return _rgba(_mix(base[None, None], vein[None, None], t), 0.9)


def fabric(rng: Rng, size: int) -> np.ndarray:
    u, v = _grid(size)
    base = _color(rng, sat=(0.2, 0.8), val=(0.3, 0.85))
    f = int(rng.choice([32, 64]))
    weave = 0.5 + 0.25 * np.sin(2 * np.pi * f * u) * np.sign(np.sin(2 * np.pi * f * v / 2)) + 0.25 * np.sin(2 * np.pi * f * v)
    rgb = base[None, None] * (0.8 + 0.2 * weave)[..., None]
    rgb *= (0.9 + 0.1 * fractal_noise(rng, size, beta=2.0))[..., None]
    return _rgba(rgb, 0.05)


def metal(rng: Rng, size: int) -> np.ndarray:
    base = _color(rng, sat=(0.0, 0.2), val=(0.45, 0.85))
    streak = fractal_noise(rng, size, beta=1.5, stretch=(1.0, 0.02))
    rgb = base[None, None] * (0.85 + 0.15 * streak)[..., None]
    return _rgba(rgb, 1.0)


def asphalt(rng: Rng, size: int) -> np.ndarray:
    g = rng.uniform(0.18, 0.32)
    n = fractal_noise(rng, size, beta=1.8)
    speck = (rng.random((size, size)) < 0.03) * rng.uniform(0.1, 0.25)
    val = g * (0.85 + 0.25 * n) + speck
    tint = np.array([1.0, 1.0, 1.0 + rng.uniform(-0.03, 0.05)])
    return _rgba(val[..., None] * tint, 0.15)


def concrete(rng: Rng, size: int) -> np.ndarray:
    u, v = _grid(size)
    n = int(rng.choice([1, 2]))
    base = _color(rng, hue=(0.05, 0.15), sat=(0.0, 0.12), val=(0.5, 0.8))
    rgb = base[None, None] * (0.85 + 0.2 * fractal_noise(rng, size, beta=2.0))[..., None]
    seam = (((u * n) % 1.0 < 0.012) | ((v * n) % 1.0 < 0.012)).astype(np.float64)
    rgb = _mix(rgb, base * 0.5, seam)
    return _rgba(rgb, 0.05)


def grass(rng: Rng, size: int) -> np.ndarray:
    base = _hsv(rng.uniform(0.2, 0.32), rng.uniform(0.45, 0.8), rng.uniform(0.3, 0.6))
    n = fractal_noise(rng, size, beta=0.8, low_cut=16)
    m = fractal_noise(rng, size, beta=2.2)
    return _rgba(base[None, None] * (0.65 + 0.35 * n + 0.2 * m)[..., None], 0.05)


def foliage(rng: Rng, size: int) -> np.ndarray:
    base = _hsv(rng.uniform(0.18, 0.35), rng.uniform(0.4, 0.85), rng.uniform(0.25, 0.55))
    n = fractal_noise(rng, size, beta=1.2, low_cut=6)
    leaves = (n > 0.45).astype(np.float64)
    rgb = base[None, None] * (0.55 + 0.45 * leaves + 0.15 * n)[..., None]
    return _rgba(rgb, 0.2 * leaves)


def facade(rng: Rng, size: int) -> np.ndarray:
    """One storey-by-bay unit of a building front: wall, window with frame, mullions and sill."""
    u, v = _grid(size)
    wall = {0: plaster, 1: brick, 2: concrete}[int(rng.integers(0, 3))](rng, size)[..., :3]
    x0, x1 = sorted(rng.uniform([0.15, 0.65], [0.35, 0.85]))
    y0, y1 = sorted(rng.uniform([0.15, 0.7], [0.3, 0.85]))
    inside = (u > x0) & (u < x1) & (v > y0) & (v < y1)
    frame_w = rng.uniform(0.015, 0.035)
    frame = (u > x0 - frame_w) & (u < x1 + frame_w) & (v > y0 - frame_w) & (v < y1 + frame_w) & ~inside
    glass_top = _hsv(rng.uniform(0.52, 0.64), rng.uniform(0.1, 0.45), rng.uniform(0.45, 0.8))
    glass_bot = glass_top * rng.uniform(0.25, 0.5)
    t = np.clip((v - y0) / max(y1 - y0, 1e-6), 0, 1)
    glass = _mix(glass_top[None, None], glass_bot[None, None], t)
    lit = rng.random() < 0.3  # a warm lit room behind some windows
    if lit:
        glass = _mix(glass, np.array([0.95, 0.8, 0.5])[None, None], np.full(t.shape, 0.6))
    mull = np.zeros_like(u, dtype=bool)
    n_mull = int(rng.integers(0, 3))
    for k in range(n_mull):
        xm = x0 + (x1 - x0) * (k + 1) / (n_mull + 1)
        mull |= np.abs(u - xm) < frame_w * 0.5
    if rng.random() < 0.5:
        mull |= np.abs(v - (y0 + 0.35 * (y1 - y0))) < frame_w * 0.5
    fcol = _color(rng, sat=(0.0, 0.3), val=(0.1, 0.95))
    rgb = np.where(inside[..., None], glass, wall)
    rgb = np.where((frame | (mull & inside))[..., None], fcol[None, None], rgb)
    sill = (u > x0 - 2 * frame_w) & (u < x1 + 2 * frame_w) & (v > y1 + frame_w) & (v < y1 + 3 * frame_w)
    rgb = np.where(sill[..., None], wall * 0.6, rgb)
    spec = np.where(inside & ~mull, 1.0, 0.08)
    return _rgba(rgb, spec)


def shopfront(rng: Rng, size: int) -> np.ndarray:
    """A ground-floor bay: a large display window above a plinth and a sign band."""
    u, v = _grid(size)
    wall = concrete(rng, size)[..., :3] * _color(rng, sat=(0.0, 0.5), val=(0.6, 1.0))[None, None]
    sign = _color(rng, sat=(0.5, 1.0), val=(0.4, 1.0))
    glass = _hsv(rng.uniform(0.5, 0.65), rng.uniform(0.05, 0.3), rng.uniform(0.2, 0.45))
    inside = (u > 0.06) & (u < 0.94) & (v > 0.3) & (v < 0.88)
    band = (v > 0.08) & (v < 0.24)
    rgb = np.where(inside[..., None], glass[None, None] * (0.8 + 0.4 * (1 - v))[..., None], wall)
    rgb = np.where(band[..., None], sign[None, None], rgb)
    return _rgba(rgb, np.where(inside, 1.0, 0.1))


FAMILIES: dict[str, Callable[[Rng, int], np.ndarray]] = {
    "plaster": plaster,
    "stripes": stripes,
    "tiles": tiles,
    "checker": checker,
    "wood": wood,
    "wallpaper": wallpaper,
    "brick": brick,
    "carpet": carpet,
    "marble": marble,
    "fabric": fabric,
    "metal": metal,
    "asphalt": asphalt,
    "concrete": concrete,
    "grass": grass,
    "foliage": foliage,
    "facade": facade,
    "shopfront": shopfront,
}
"""Texture family name -> generator ``(rng, size) -> (size, size, 4)`` float32."""


def make_texture(family: str, rng: Rng, size: int = TEXTURE_SIZE) -> np.ndarray:
    """Generate one texture of ``family`` with parameters drawn from ``rng``.

    Args:
        family: A key of ``FAMILIES``.
        rng: The generator every random choice is drawn from.
        size: Side in texels.

    Returns:
        ``(size, size, 4)`` uint8: RGB and a specular mask in alpha.
    """
    if family not in FAMILIES:
        raise ValueError(f"Expect `family` to be one of {sorted(FAMILIES)}, actually: {family!r}")
    tex = FAMILIES[family](rng, size)
    return np.round(np.clip(tex, 0.0, 1.0) * 255.0).astype(np.uint8)
