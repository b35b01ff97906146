"""Exact, deterministic RGB-D rendering with OpenGL on a headless EGL context.

One moderngl context per process, created on first use (a child forked after
the parent rendered cannot render; use the spawn start method): Mesa's llvmpipe on a
CPU machine, the NVIDIA driver on a GPU machine (``WORLDENV_EGL_DEVICE`` picks
an EGL device by index). A ``Renderer`` uploads one scene's triangles once (an
indexed vertex buffer and one texture array) and draws a batch of views, each
at the origin of its own framebuffer from a shared pool, all before the first
read-back (``read_into`` of an RGBA8 and an R32F target per view).

Exactness. The camera is OpenCV's pinhole with pixel centres at integer
coordinates: the projection maps image coordinate ``u`` to window coordinate
``u + 0.5``, which is where the rasteriser samples, so pixel ``(i, j)`` shows
the surface hit by the ray through ``(u, v) = (j, i)``. Image row ``i`` is
framebuffer row ``i`` (no flip on read-back). Depth is the camera-space ``z``
where that ray meets the plane of the triangle drawn there, computed in double
precision (OpenGL 4.1; 3.3 drivers get the same in single precision) and
written to a float32 colour target: metric and exact to one float32 rounding,
not decoded from the non-linear depth buffer and not interpolated. Nothing is
anti-aliased; textures are mipmapped. With a fixed driver, the same inputs give
bit-identical frames, whatever batch a view is rendered in.

Shading: Lambertian plus a Blinn-Phong highlight (so shading changes with the
viewpoint) from a hemisphere ambient, one directional light and point lights;
a point light only lights triangles of its light group (a room's lamps do not
shine through its walls), at most ``LIGHTS_PER_GROUP`` per group. An optional
sky is drawn where nothing else is; its depth is 0 (unknown), like every pixel
no surface covers.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from worldenv.scenes.meshbuild import VERTEX_FLOATS

__all__ = [
    "RenderUnavailableError",
    "Lighting",
    "Sky",
    "Renderer",
    "gl_context",
    "gl_info",
    "projection_matrix",
    "MAX_POINT_LIGHTS",
    "MAX_LIGHT_GROUPS",
    "LIGHTS_PER_GROUP",
    "INSTALL_HINT",
]

MAX_LIGHT_GROUPS = 32
LIGHTS_PER_GROUP = 2
MAX_POINT_LIGHTS = LIGHTS_PER_GROUP * (MAX_LIGHT_GROUPS + 1)

INSTALL_HINT = (
    "On Debian/Ubuntu install Mesa's EGL: `apt-get install -y libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri` "
    "(`bash scripts/setup.sh` does this when run as root); on a GPU machine the NVIDIA driver's EGL "
    "library (libEGL_nvidia) works too. Python side: `pip install moderngl`."
)


class RenderUnavailableError(RuntimeError):
    """No headless OpenGL context could be created; the message says what to install."""


_lock = threading.RLock()
_ctx: Any = None
_ctx_pid: int = -1
_programs: dict[str, Any] = {}


def _create_context() -> Any:
    try:
        import moderngl
    except ImportError as e:  # pragma: no cover - exercised only without moderngl
        raise RenderUnavailableError(f"The ground-truth renderer needs moderngl. {INSTALL_HINT}") from e
    kwargs: dict[str, Any] = {"backend": "egl", "require": 330}
    if os.environ.get("WORLDENV_EGL_DEVICE"):
        kwargs["device_index"] = int(os.environ["WORLDENV_EGL_DEVICE"])
    return moderngl.create_standalone_context(**kwargs)


def gl_context() -> Any:
    """The process-wide moderngl context, created on first call.

    Raises:
        RenderUnavailableError: EGL or an OpenGL 3.3 driver is missing; the message names the packages.
    """
    global _ctx, _ctx_pid
    with _lock:
        if _ctx is not None and _ctx_pid != os.getpid():
            # Mesa's state (locks held by the parent's rasteriser threads) does not survive
            # fork: even a fresh context would deadlock here, so say so instead of hanging.
            raise RenderUnavailableError(
                f"Expect the GL context in the process that created it, actually: it was created in process "
                f"{_ctx_pid} and this is its forked child {os.getpid()}. Render in child processes only "
                "(create scenes there, or render nothing in the parent before forking), or use the "
                "'spawn' or 'forkserver' start method (gymnasium's AsyncVectorEnv(context='spawn'))."
            )
        if _ctx is None:
            try:
                ctx = _create_context()
            except RenderUnavailableError:
                raise
            except Exception as e:
                raise RenderUnavailableError(
                    f"Cannot create a headless OpenGL 3.3 context through EGL ({type(e).__name__}: {e}). {INSTALL_HINT}"
                ) from e
            ctx.gc_mode = "auto"  # release GL objects with their Python owners
            _ctx, _ctx_pid = ctx, os.getpid()
        return _ctx


def gl_info() -> dict[str, str]:
    """Renderer, version and vendor strings of the GL context (creating it if needed)."""
    info = gl_context().info
    return {k: str(info.get(k, "")) for k in ("GL_RENDERER", "GL_VERSION", "GL_VENDOR")}


# ---------------------------------------------------------------------- shaders

# The depth written to the float target is not interpolated: each triangle's
# plane is carried (flat, in double precision where the driver has fp64) from
# the vertex shader, and the fragment intersects its pixel-centre ray with it.
# That is exact up to one float32 rounding of the result, whatever the size of
# the triangle or the distance of the camera from the origin.
_PRELUDE_FP64 = """#version 410
#define REAL double
#define RVEC3 dvec3
#define RVEC4 dvec4
#define RMAT3 dmat3
"""
_PRELUDE_FP32 = """#version 330
#define REAL float
#define RVEC3 vec3
#define RVEC4 vec4
#define RMAT3 mat3
"""

_SCENE_VS = """
uniform RVEC3 u_eye_d;
uniform RMAT3 u_rot_d;
uniform mat3 u_rot;
uniform mat4 u_proj;
uniform vec4 u_lpos[%(NSLOTS)d];
uniform vec4 u_lcol[%(NSLOTS)d];
in vec3 in_pos;
in vec3 in_nrm;
in vec2 in_uv;
in vec3 in_col;
in vec4 in_mat;
in float in_group;
in RVEC3 in_plane_n;
out vec3 v_pos;
out vec3 v_nrm;
out vec2 v_uv;
out vec3 v_col;
flat out vec4 v_mat;
flat out vec4 v_lpos[%(PER)d];
flat out vec4 v_lcol[%(PER)d];
flat out RVEC4 v_plane;
out float v_z;
void main() {
    // A triangle's lights are looked up once per vertex and passed flat, so the
    // fragment shader never indexes a uniform array per pixel.
    int slot = %(PER)d * (int(in_group) + 1);
    for (int k = 0; k < %(PER)d; ++k) {
        v_lpos[k] = u_lpos[slot + k];
        v_lcol[k] = u_lcol[slot + k];
    }
    RVEC3 rel = RVEC3(in_pos) - u_eye_d;  // camera-relative, without cancellation
    // The triangle's plane in camera coordinates: n_c . X_c = d_c.
    v_plane = RVEC4(u_rot_d * in_plane_n, dot(in_plane_n, rel));
    vec4 pc = vec4(u_rot * vec3(rel), 1.0);
    v_z = pc.z;
    v_pos = in_pos;
    v_nrm = in_nrm;
    v_uv = in_uv;
    v_col = in_col;
    v_mat = in_mat;
    gl_Position = u_proj * pc;
}
""" % {"NSLOTS": LIGHTS_PER_GROUP * (MAX_LIGHT_GROUPS + 1), "PER": LIGHTS_PER_GROUP}

_SCENE_FS = """
uniform sampler2DArray u_tex;
uniform vec3 u_eye;
uniform vec3 u_amb_up;
uniform vec3 u_amb_down;
uniform vec3 u_sun_dir;
uniform vec3 u_sun_col;
uniform bool u_sun_on;
uniform vec3 u_sun_spec;
uniform bool u_fog_on;
uniform vec3 u_fog_col;
uniform float u_fog_density;
uniform vec2 u_origin;
uniform RVEC4 u_kinv;  // 1/fx, 1/fy, cx, cy
uniform REAL u_skew;   // K[0, 1]
in vec3 v_pos;
in vec3 v_nrm;
in vec2 v_uv;
in vec3 v_col;
flat in vec4 v_mat;
flat in vec4 v_lpos[%(PER)d];
flat in vec4 v_lcol[%(PER)d];
flat in RVEC4 v_plane;
in float v_z;
layout(location = 0) out vec4 f_color;
layout(location = 1) out float f_depth;
float phong(float c, float sh) {
    // Schlick's rational stand-in for pow(c, sh): one division instead of exp2/log2.
    c = max(c, 0.0);
    return c / (sh - sh * c + c);
}
void point_light(int i, vec3 N, vec3 V, float sh, inout vec3 diff, inout vec3 spec) {
    vec3 lv = v_lpos[i].xyz - v_pos;
    float d2 = dot(lv, lv);
    vec3 L = lv * inversesqrt(d2);
    float att = 1.0 / (1.0 + d2 / (v_lpos[i].w * v_lpos[i].w));
    float nl = max(dot(N, L), 0.0);
    diff += v_lcol[i].rgb * (nl * att);
    spec += v_lcol[i].rgb * (att * step(1e-6, nl) * phong(dot(N, normalize(L + V)), sh));
}
void main() {
    // Exact z-depth: the pixel-centre ray (u, v) = gl_FragCoord - origin - 0.5 met with the plane.
    RVEC3 ray;
    ray.y = (REAL(gl_FragCoord.y - u_origin.y - 0.5) - u_kinv.w) * u_kinv.y;
    ray.x = (REAL(gl_FragCoord.x - u_origin.x - 0.5) - u_kinv.z) * u_kinv.x - u_skew * ray.y * u_kinv.x;
    ray.z = REAL(1.0);
    f_depth = float(v_plane.w / dot(v_plane.xyz, ray));
    vec4 tex = v_mat.x >= 0.0 ? texture(u_tex, vec3(v_uv, v_mat.x)) : vec4(1.0);
    vec3 albedo = tex.rgb * v_col;
    if (v_mat.w > 0.5) {
        f_color = vec4(albedo, 1.0);
        return;
    }
    vec3 N = normalize(v_nrm);
    vec3 V = normalize(u_eye - v_pos);
    if (dot(N, V) < 0.0) N = -N;
    float ks = v_mat.y * tex.a;
    float sh = v_mat.z;
    vec3 diff = mix(u_amb_down, u_amb_up, 0.5 - 0.5 * N.y);
    vec3 spec = vec3(0.0);
    if (u_sun_on) {
        float ndl = max(dot(N, u_sun_dir), 0.0);
        diff += u_sun_col * ndl;
        spec += u_sun_spec * (step(1e-6, ndl) * phong(dot(N, normalize(u_sun_dir + V)), sh));
    }
    for (int k = 0; k < %(PER)d; ++k) {
        if (v_lcol[k].w > 0.0) point_light(k, N, V, sh, diff, spec);  // .w flags a real light
    }
    vec3 c = albedo * diff + ks * spec;
    if (u_fog_on) c = mix(u_fog_col, c, exp(-u_fog_density * v_z));
    f_color = vec4(c, 1.0);
}
""" % {"PER": LIGHTS_PER_GROUP}

_SKY_VS = """
#version 330
in vec2 in_vert;
void main() { gl_Position = vec4(in_vert, 1.0, 1.0); }  // on the far plane
"""

_SKY_FS = """
#version 330
uniform vec2 u_origin;
uniform mat3 u_ray;
uniform vec3 u_zenith;
uniform vec3 u_horizon;
uniform vec3 u_sun_dir;
uniform vec3 u_sun_col;
uniform float u_clouds;
uniform vec2 u_cloud_offset;
layout(location = 0) out vec4 f_color;
layout(location = 1) out float f_depth;
float hash(vec2 p) { return fract(sin(dot(p, vec2(127.1, 311.7))) * 43758.5453); }
float vnoise(vec2 p) {
    vec2 i = floor(p), f = fract(p);
    vec2 w = f * f * (3.0 - 2.0 * f);
    return mix(mix(hash(i), hash(i + vec2(1, 0)), w.x), mix(hash(i + vec2(0, 1)), hash(i + vec2(1, 1)), w.x), w.y);
}
void main() {
    vec2 px = gl_FragCoord.xy - u_origin - 0.5;
    vec3 d = normalize(u_ray * vec3(px, 1.0));
    float e = -d.y;
    vec3 c = mix(u_horizon, u_zenith, sqrt(clamp(e, 0.0, 1.0)));
    if (e > 0.01 && u_clouds > 0.0) {
        vec2 q = d.xz / (e + 0.08) * 1.5 + u_cloud_offset;
        float n = 0.5 * vnoise(q) + 0.25 * vnoise(q * 2.03) + 0.125 * vnoise(q * 4.01) + 0.0625 * vnoise(q * 8.05);
        float cover = smoothstep(1.0 - u_clouds, 1.0 - u_clouds + 0.25, n) * smoothstep(0.01, 0.15, e);
        c = mix(c, vec3(0.95, 0.96, 0.98), 0.85 * cover);
    }
    float s = max(dot(d, u_sun_dir), 0.0);
    c += u_sun_col * (2.0 * pow(s, 900.0) + 0.12 * pow(s, 12.0));
    f_color = vec4(c, 1.0);
    f_depth = 0.0;
}
"""


def _has_fp64(ctx: Any) -> bool:
    # Double-precision arithmetic (4.0) and double vertex attributes (4.1).
    return ctx.version_code >= 410


def _program(ctx: Any, name: str) -> Any:
    with _lock:
        if name not in _programs:
            if name == "scene":
                pre = _PRELUDE_FP64 if _has_fp64(ctx) else _PRELUDE_FP32
                vs, fs = pre + _SCENE_VS, pre + _SCENE_FS
            else:
                vs, fs = _SKY_VS, _SKY_FS
            _programs[name] = ctx.program(vertex_shader=vs, fragment_shader=fs)
        return _programs[name]


# --------------------------------------------------------------------- lighting


@dataclass
class Lighting:
    """Lights of one scene.

    Attributes:
        ambient_up: Ambient light on surfaces facing up (world -y).
        ambient_down: Ambient light on surfaces facing down.
        sun_dir: Unit vector towards the directional light (world frame).
        sun_color: Its RGB intensity (0 turns it off).
        points: ``(P, 8)`` point lights: position xyz, range (metres at which
            intensity halves), RGB intensity, light group. A light of group g
            lights the triangles of group g; a light of group -1 lights every
            triangle. At most ``LIGHTS_PER_GROUP`` lights reach one group.
        fog_color: Colour distant surfaces fade to.
        fog_density: Per-metre extinction of the haze (0 for none).
        sun_specular: Scale of the directional light's highlight (0 for none).
    """

    ambient_up: tuple[float, float, float] = (0.35, 0.35, 0.35)
    ambient_down: tuple[float, float, float] = (0.2, 0.2, 0.2)
    sun_dir: tuple[float, float, float] = (0.3, -0.8, 0.5)
    sun_color: tuple[float, float, float] = (0.0, 0.0, 0.0)
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 8)))
    fog_color: tuple[float, float, float] = (0.0, 0.0, 0.0)
    fog_density: float = 0.0
    sun_specular: float = 1.0

    def __post_init__(self) -> None:
        pts = np.asarray(self.points, dtype=np.float64).reshape(-1, 8)
        g = pts[:, 7]
        if np.any((g != np.round(g)) | (g < -1) | (g >= MAX_LIGHT_GROUPS)):
            raise ValueError(f"Expect light groups to be integers in [-1, {MAX_LIGHT_GROUPS}), actually: {np.unique(g)}")
        n_global = int(np.sum(g < 0))
        counts = np.bincount(g[g >= 0].astype(np.int64), minlength=MAX_LIGHT_GROUPS) + n_global
        if n_global > LIGHTS_PER_GROUP or counts.max(initial=0) > LIGHTS_PER_GROUP:
            raise ValueError(
                f"Expect at most {LIGHTS_PER_GROUP} point lights per light group (global ones included), actually: "
                f"{n_global} global and up to {int(counts.max(initial=0)) - n_global} in one group"
            )
        self.points = pts
        d = np.asarray(self.sun_dir, dtype=np.float64)
        self.sun_dir = tuple(d / max(np.linalg.norm(d), 1e-12))  # type: ignore[assignment]


    def slots(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-group light table for the shader: positions+range and colours ``(S, 4)`` float32.

        Slot row ``g + 1`` (``LIGHTS_PER_GROUP`` entries) holds the lights reaching group g;
        row 0 the global lights (for triangles of group -1). Unused entries are black.
        """
        n_rows = MAX_LIGHT_GROUPS + 1
        pos = np.zeros((n_rows, LIGHTS_PER_GROUP, 4), np.float32)
        col = np.zeros((n_rows, LIGHTS_PER_GROUP, 4), np.float32)
        pos[..., 3] = 1.0  # a harmless range for the black entries
        fill = np.zeros(n_rows, np.int64)
        glob = self.points[self.points[:, 7] < 0]
        for row in range(n_rows):
            mine = self.points[self.points[:, 7] == row - 1] if row > 0 else np.zeros((0, 8))
            for light in list(glob) + list(mine):
                pos[row, fill[row]] = light[0:4]
                col[row, fill[row], :3] = light[4:7]
                col[row, fill[row], 3] = 1.0
                fill[row] += 1
        return pos.reshape(-1, 4), col.reshape(-1, 4)


@dataclass
class Sky:
    """A procedural sky drawn behind everything (depth 0 there).

    Attributes:
        zenith: RGB straight up.
        horizon: RGB at the horizon (and below it).
        sun_dir: Unit vector towards the sun.
        sun_color: RGB of the sun disc and glow.
        clouds: Cloud cover in [0, 1].
        cloud_offset: Shifts the cloud pattern (seeded per scene).
    """

    zenith: tuple[float, float, float] = (0.25, 0.45, 0.85)
    horizon: tuple[float, float, float] = (0.75, 0.85, 0.95)
    sun_dir: tuple[float, float, float] = (0.3, -0.8, 0.5)
    sun_color: tuple[float, float, float] = (1.0, 0.95, 0.85)
    clouds: float = 0.4
    cloud_offset: tuple[float, float] = (0.0, 0.0)


# ------------------------------------------------------------------- projection


def projection_matrix(K: np.ndarray, size: tuple[int, int], near: float, far: float) -> np.ndarray:
    """OpenGL clip matrix ``(4, 4)`` for OpenCV intrinsics ``K`` of an ``(H, W)`` image.

    Maps camera coordinates (x right, y down, z forward) so that image
    coordinate ``u`` lands on window coordinate ``u + 0.5`` (the GL sample
    point of pixel ``u``) and image row ``v`` on window row ``v + 0.5``.
    """
    H, W = size
    fx, s, cx = K[0, 0], K[0, 1], K[0, 2]
    fy, cy = K[1, 1], K[1, 2]
    P = np.zeros((4, 4))
    P[0] = [2 * fx / W, 2 * s / W, (2 * cx + 1) / W - 1, 0]
    P[1] = [0, 2 * fy / H, (2 * cy + 1) / H - 1, 0]
    P[2] = [0, 0, (far + near) / (far - near), -2 * far * near / (far - near)]
    P[3] = [0, 0, 1, 0]
    return P


_pools: OrderedDict[tuple[int, int], list[Any]] = OrderedDict()


def _fbo_pool(ctx: Any, width: int, height: int, n: int) -> list[Any]:
    """At least ``n`` framebuffers of one size (RGBA8 colour, R32F depth target, depth buffer), shared by all renderers."""
    key = (width, height)
    pool = _pools.setdefault(key, [])
    _pools.move_to_end(key)
    while len(pool) < n:
        pool.append(
            ctx.framebuffer(
                color_attachments=[ctx.renderbuffer((width, height), 4), ctx.renderbuffer((width, height), 1, dtype="f4")],
                depth_attachment=ctx.depth_renderbuffer((width, height)),
            )
        )
    while len(_pools) > 3:  # keep the three most recent sizes
        _, old = _pools.popitem(last=False)
        for fbo in old:
            fbo.release()
    return pool


def _set(prog: Any, name: str, value: Any = None, data: bytes | None = None) -> None:
    """Set a uniform if the compiled program kept it (drivers drop unused ones)."""
    u = prog.get(name, None)
    if u is None:
        return
    if data is not None:
        u.write(data)
    else:
        u.value = value


def _mat4_bytes(M: np.ndarray) -> bytes:
    return np.ascontiguousarray(M.T, dtype=np.float32).tobytes()  # GL is column-major


# --------------------------------------------------------------------- renderer


class Renderer:
    """Draws one scene's triangles for batches of cameras.

    Args:
        vertices: ``(3 * n_triangles, VERTEX_FLOATS)`` float32, see ``meshbuild``.
        textures: ``(L, T, T, 4)`` uint8 texture layers (RGB + specular mask, top row first), or None.
        lighting: The scene's lights.
        sky: Background sky, or None for black.
        near: Near clip distance in metres.
        far: Far clip distance in metres; nothing beyond it is drawn (depth 0 there).
    """

    def __init__(
        self,
        vertices: np.ndarray,
        textures: np.ndarray | None,
        lighting: Lighting,
        sky: Sky | None = None,
        near: float = 0.05,
        far: float = 200.0,
    ) -> None:
        import moderngl

        if vertices.ndim != 2 or vertices.shape[1] != VERTEX_FLOATS or vertices.shape[0] % 3:
            raise ValueError(f"Expect `vertices` to have shape (3N, {VERTEX_FLOATS}), actually: {vertices.shape}")
        self.ctx = ctx = gl_context()
        self.pid = os.getpid()
        self.near, self.far = float(near), float(far)
        self.lighting, self.sky = lighting, sky
        with _lock:
            self._prog = _program(ctx, "scene")
            self._n = vertices.shape[0]
            self._vbo = None
            if self._n:
                verts = np.ascontiguousarray(vertices, dtype=np.float32)
                # Each triangle's plane normal, in float64 from its float32 corners (exact inputs).
                tri = verts[:, :3].astype(np.float64).reshape(-1, 3, 3)
                n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
                n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-300)
                self._fp64 = _has_fp64(ctx)
                normals = np.repeat(n, 3, axis=0).astype(np.float64 if self._fp64 else np.float32)
                # Shared corners are shaded once: llvmpipe transforms vertices on one thread
                # and caches indexed ones. Triangle order (and so depth ties) is unchanged.
                key = np.concatenate([verts.view(np.uint8), normals.view(np.uint8)], axis=1)
                _, first, index = np.unique(key, axis=0, return_index=True, return_inverse=True)
                self._vbo = ctx.buffer(np.ascontiguousarray(verts[first]).tobytes())
                self._nbo = ctx.buffer(np.ascontiguousarray(normals[first]).tobytes())
                self._ibo = ctx.buffer(index.reshape(-1).astype(np.uint32).tobytes())
                self._vao = ctx.vertex_array(
                    self._prog,
                    [
                        (self._vbo, "3f 3f 2f 3f 4f 1f", "in_pos", "in_nrm", "in_uv", "in_col", "in_mat", "in_group"),
                        (self._nbo, "3f8" if self._fp64 else "3f", "in_plane_n"),
                    ],
                    index_buffer=self._ibo,
                    index_element_size=4,
                )
            tex = textures if textures is not None and len(textures) else np.full((1, 1, 1, 4), 255, np.uint8)
            L, T1, T2, C = tex.shape
            assert C == 4 and tex.dtype == np.uint8
            # Images are stored top row first; texture coordinate v grows upwards (OBJ/glTF as
            # loaded by trimesh, and the procedural walls), so the top row goes to v = 1.
            self._tex = ctx.texture_array((T2, T1, L), 4, np.ascontiguousarray(tex[:, ::-1]).tobytes())
            self._tex.build_mipmaps()
            # Bilinear within the nearest mip level: ~10% faster than trilinear on llvmpipe.
            self._tex.filter = (moderngl.LINEAR_MIPMAP_NEAREST, moderngl.LINEAR)
            if sky is not None:
                self._sky_prog = _program(ctx, "sky")
                tri = np.array([[-1, -1], [3, -1], [-1, 3]], dtype=np.float32)
                self._sky_vbo = ctx.buffer(tri.tobytes())
                self._sky_vao = ctx.vertex_array(self._sky_prog, [(self._sky_vbo, "2f", "in_vert")])
        self._slots = lighting.slots()

    # ------------------------------------------------------------------ state

    def _set_lighting(self) -> None:
        lt = self.lighting
        _set(self._prog, "u_amb_up", tuple(lt.ambient_up))
        _set(self._prog, "u_amb_down", tuple(lt.ambient_down))
        _set(self._prog, "u_sun_dir", tuple(lt.sun_dir))
        _set(self._prog, "u_sun_col", tuple(lt.sun_color))
        _set(self._prog, "u_sun_on", bool(max(lt.sun_color) > 0))
        _set(self._prog, "u_sun_spec", tuple(lt.sun_specular * np.asarray(lt.sun_color)))
        _set(self._prog, "u_fog_on", bool(lt.fog_density > 0))
        _set(self._prog, "u_fog_col", tuple(lt.fog_color))
        _set(self._prog, "u_fog_density", float(lt.fog_density))
        _set(self._prog, "u_lpos", data=self._slots[0].tobytes())
        _set(self._prog, "u_lcol", data=self._slots[1].tobytes())
        if self.sky is not None:
            s, q = self.sky, self._sky_prog
            d = np.asarray(s.sun_dir, dtype=np.float64)
            _set(q, "u_zenith", tuple(s.zenith))
            _set(q, "u_horizon", tuple(s.horizon))
            _set(q, "u_sun_dir", tuple(d / np.linalg.norm(d)))
            _set(q, "u_sun_col", tuple(s.sun_color))
            _set(q, "u_clouds", float(s.clouds))
            _set(q, "u_cloud_offset", tuple(s.cloud_offset))

    # ----------------------------------------------------------------- render

    def render(self, c2w: np.ndarray, K: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Render a batch of views.

        Every view is drawn at the origin of a framebuffer of its own (from a shared
        pool), so a view's pixels do not depend on the batch it came in; the views are
        all drawn before any is read back, so the rasteriser threads stay busy.

        Args:
            c2w: Camera-to-world poses ``(B, 4, 4)`` float64 (OpenCV camera).
            K: Intrinsics ``(B, 3, 3)`` in pixels of ``size``.
            size: ``(H, W)``.

        Returns:
            ``rgb`` ``(B, H, W, 3)`` uint8 and ``depth`` ``(B, H, W)`` float32 metres (0 = nothing).
        """
        import moderngl

        H, W = size
        B = c2w.shape[0]
        rgb = np.empty((B, H, W, 3), np.uint8)
        depth = np.empty((B, H, W), np.float32)
        per_pass = max(1, min(64, (1 << 22) // (H * W)))
        col_buf = np.empty((H, W, 4), np.uint8)
        with _lock:
            ctx = self.ctx
            ctx.disable(moderngl.CULL_FACE | moderngl.BLEND)
            ctx.enable(moderngl.DEPTH_TEST)
            self._set_lighting()
            self._tex.use(0)
            for start in range(0, B, per_pass):
                stop = min(B, start + per_pass)
                fbos = _fbo_pool(ctx, W, H, stop - start)
                for b in range(start, stop):
                    fbo = fbos[b - start]
                    fbo.use()
                    fbo.viewport = (0, 0, W, H)
                    fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
                    self._draw_view(c2w[b], K[b], H, W)
                for b in range(start, stop):
                    fbo = fbos[b - start]
                    fbo.read_into(col_buf, viewport=(0, 0, W, H), components=4, attachment=0, alignment=1)
                    rgb[b] = col_buf[..., :3]
                    fbo.read_into(depth[b], viewport=(0, 0, W, H), components=1, attachment=1, alignment=1, dtype="f4")
        return rgb, depth

    def _draw_view(self, c2w: np.ndarray, K: np.ndarray, H: int, W: int) -> None:
        import moderngl

        ctx = self.ctx
        if self._vbo is not None:
            ctx.depth_func = "<"
            p = self._prog
            # Row-major R read as column-major is R^T: the world-to-camera rotation.
            Rm = np.ascontiguousarray(c2w[:3, :3])
            eye = tuple(float(x) for x in c2w[:3, 3])
            _set(p, "u_rot", data=Rm.astype(np.float32).tobytes())
            _set(p, "u_rot_d", data=Rm.astype(np.float64 if self._fp64 else np.float32).tobytes())
            _set(p, "u_eye_d", eye)
            _set(p, "u_eye", eye)
            _set(p, "u_proj", data=_mat4_bytes(projection_matrix(K, (H, W), self.near, self.far)))
            _set(p, "u_origin", (0.0, 0.0))
            _set(p, "u_kinv", (1.0 / K[0, 0], 1.0 / K[1, 1], float(K[0, 2]), float(K[1, 2])))
            _set(p, "u_skew", float(K[0, 1]))
            self._vao.render(moderngl.TRIANGLES)
        if self.sky is not None:
            # After the scene, at the far plane: only uncovered pixels pass the depth test,
            # so the sky is shaded once per sky pixel.
            ctx.depth_func = "<="
            q = self._sky_prog
            _set(q, "u_origin", (0.0, 0.0))
            _set(q, "u_ray", data=np.ascontiguousarray((c2w[:3, :3] @ np.linalg.inv(K)).T, dtype=np.float32).tobytes())
            self._sky_vao.render(moderngl.TRIANGLES)

    def release(self) -> None:
        """Free the GL objects now (they are also freed with this object)."""
        with _lock:
            for name in ("_vao", "_vbo", "_nbo", "_ibo", "_tex", "_sky_vao", "_sky_vbo"):
                obj = getattr(self, name, None)
                if obj is not None:
                    obj.release()
                    setattr(self, name, None)
