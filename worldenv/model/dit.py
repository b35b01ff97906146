"""A causal diffusion transformer over latent frames, with camera encodings.

Read top to bottom: config, rotary tables (camera maths, Plücker rays and
PRoPE matrices relative to the reference camera, live in
:mod:`worldenv.model.camera`), the layout of a training
clip (the block-causal mask), the transformer block, and the DiT with its two
forwards that compute the same function:

- ``DiT.forward(x, t, cond, plucker, proj, layout)``: the training forward
  over a whole clip (reference frames, context frames, optionally noisy copies)
  with a block-causal sliding-window mask and per-token timesteps.
- ``DiT.forward_stream(x, t, cond, camera, cache)``: one frame at a time
  against a :class:`~worldenv.model.cache.KVCache` (reference slots, a ring of
  the last W frames, the current frame).

Per frame, the input is the noisy latent, the warp latent and the warp
validity mask at latent resolution, concatenated on channels (InSpatio-World
eq. 2); reference and history frames carry zeros in the warp and mask channels
so the cache holds image content only. Each token has its own timestep
(adaLN-single: one shared projection of the timestep embedding plus a learned
per-block table), so warped tokens and hole tokens can sit at different noise
levels. Camera: Plücker rays of each token relative to the reference camera
are added to the tokens; optionally (``prope=True``) part of every head is
transformed by the frame's projective camera matrix in attention (PRoPE), so
attention scores depend on relative cameras only. Temporal RoPE positions are
fixed by slot (reference r at r, history frame of age a at R + W - a, current
at R + W), so positions never grow in an unbounded rollout.

Head dimension layout: ``[PRoPE | temporal RoPE | row RoPE | column RoPE]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldenv.model.camera import Camera

if TYPE_CHECKING:
    from worldenv.model.cache import KVCache

__all__ = [
    "DiTConfig",
    "DiT",
    "ClipLayout",
    "patchify",
    "unpatchify",
]


# ----------------------------------------------------------------------------- config


@dataclass
class DiTConfig:
    """Shape of the DiT.

    Attributes:
        latent_channels: Channels C of a latent frame.
        latent_size: Latent (h, w); both divisible by ``patch_size``.
        patch_size: Side of a square patch of latent cells per token.
        dim: Token width D.
        layers: Transformer blocks.
        heads: Attention heads; ``dim / heads`` is the head dimension.
        mlp_ratio: MLP hidden width over D.
        num_ref: Reference (sink) frames R, never evicted.
        window: History frames W kept in the ring.
        prope: Add PRoPE (projective camera transforms in attention) on top of Plücker rays.
        rope_theta: RoPE base; positions here are small (slots, patch grid), hence a small base.
        freq_dim: Width of the sinusoidal timestep features.
    """

    latent_channels: int = 16
    latent_size: tuple[int, int] = (16, 16)
    patch_size: int = 2
    dim: int = 256
    layers: int = 5
    heads: int = 4
    mlp_ratio: float = 4.0
    num_ref: int = 1
    window: int = 4
    prope: bool = False
    rope_theta: float = 100.0
    freq_dim: int = 256

    def __post_init__(self) -> None:
        self.latent_size = (int(self.latent_size[0]), int(self.latent_size[1]))
        for name in ("latent_channels", "patch_size", "dim", "layers", "heads", "num_ref", "window", "freq_dim"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"Expect `{name}` to be a positive int, actually: {v!r}")
        h, w = self.latent_size
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"Expect `latent_size` to be divisible by `patch_size` ({self.patch_size}), "
                f"actually: {self.latent_size}"
            )
        if self.dim % self.heads:
            raise ValueError(f"Expect `dim` ({self.dim}) to be divisible by `heads`, actually: {self.heads}")
        if self.head_dim % 2 or self.head_dim < 16:
            raise ValueError(f"Expect the head dimension `dim / heads` to be even and >= 16, actually: {self.head_dim}")
        if not (self.mlp_ratio > 0):
            raise ValueError(f"Expect `mlp_ratio` to be positive, actually: {self.mlp_ratio}")
        if not (self.rope_theta > 1):
            raise ValueError(f"Expect `rope_theta` to be > 1, actually: {self.rope_theta}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def grid(self) -> tuple[int, int]:
        """Token grid (gh, gw)."""
        return self.latent_size[0] // self.patch_size, self.latent_size[1] // self.patch_size

    @property
    def tokens(self) -> int:
        """Tokens N per frame."""
        gh, gw = self.grid
        return gh * gw

    @property
    def in_channels(self) -> int:
        """Input channels per frame: noisy latent, warp latent, validity mask."""
        return 2 * self.latent_channels + 1

    @property
    def slots(self) -> int:
        """Frames S in one attention window: references, history, current."""
        return self.num_ref + self.window + 1

    @property
    def rope_sections(self) -> tuple[int, int, int, int]:
        """Head-dim sizes of (PRoPE, temporal, row, column) sections."""
        hd = self.head_dim
        p = 4 * (hd // 8) if self.prope else 0
        rest = hd - p
        yx = 2 * (rest // 6)
        return p, rest - 2 * yx, yx, yx


# ----------------------------------------------------------------------------- tensor layout helpers


def patchify(x: Tensor, p: int) -> Tensor:
    """``(B, F, C, h, w)`` latents to ``(B, F * N, C * p * p)`` patch rows."""
    B, Fr, C, h, w = x.shape
    x = x.reshape(B, Fr, C, h // p, p, w // p, p)  # (B, F, C, gh, p, gw, p)
    x = x.permute(0, 1, 3, 5, 2, 4, 6)  # (B, F, gh, gw, C, p, p)
    return x.reshape(B, Fr * (h // p) * (w // p), C * p * p)  # (B, F*N, C*p*p)


def unpatchify(x: Tensor, p: int, channels: int, latent_size: tuple[int, int]) -> Tensor:
    """``(B, F * N, C * p * p)`` patch rows to ``(B, F, C, h, w)`` latents."""
    h, w = latent_size
    gh, gw = h // p, w // p
    B = x.shape[0]
    x = x.reshape(B, -1, gh, gw, channels, p, p)  # (B, F, gh, gw, C, p, p)
    x = x.permute(0, 1, 4, 2, 5, 3, 6)  # (B, F, C, gh, p, gw, p)
    return x.reshape(B, -1, channels, h, w)  # (B, F, C, h, w)


def _rope(x: Tensor, table: Tensor) -> Tensor:
    """Rotate consecutive pairs of the last dim of ``x`` by the angles of ``table``.

    Eager mode uses one complex multiply (the fastest CPU kernel); under
    ``torch.compile`` the same maths is written in real arithmetic, which
    inductor fuses (it does not generate code for complex ops).

    Args:
        x: ``(..., hd)`` real.
        table: ``(..., hd / 2, 2)`` float32 (cos, sin), broadcastable against ``x``'s pairs.
    """
    pairs = x.float().unflatten(-1, (-1, 2))  # (..., hd/2, 2)
    if torch.compiler.is_compiling():
        x0, x1 = pairs.unbind(-1)
        cos, sin = table.unbind(-1)
        return torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2).type_as(x)
    rotated = torch.view_as_complex(pairs) * torch.view_as_complex(table)
    return torch.view_as_real(rotated).flatten(-2).type_as(x)


def _prope(x: Tensor, mat: Tensor, p: int) -> Tensor:
    """Right-multiply each 4-block of the first ``p`` channels of every head by the frame's matrix.

    Args:
        x: ``(B, F, M, hd)`` rows of frame F (M = tokens x heads).
        mat: ``(B, F, 4, 4)``.
        p: PRoPE channels (multiple of 4).

    Returns:
        ``(B, F, M, hd)``, a new tensor.
    """
    B, Fr, M, hd = x.shape
    blocks = x[..., :p].reshape(B, Fr, M * (p // 4), 4)  # (B, F, M*p/4, 4)
    blocks = (blocks @ mat.to(x.dtype)).reshape(B, Fr, M, p)  # (B, F, M, p)
    return torch.cat([blocks, x[..., p:]], dim=-1)


# ----------------------------------------------------------------------------- training-clip layout


@dataclass
class ClipLayout:
    """Frames of a training clip, who attends to whom, and their temporal RoPE positions.

    A clip is ``[ref_0..ref_{R-1}, ctx_1..ctx_T]`` and, with ``noisy=True``,
    ``noisy_1..noisy_T`` after them. Reference frames attend to all references.
    Context frame j attends to the references, to context frames j-W..j-1 and
    to itself. Noisy frame j attends to the references, to context frames
    j-W..j-1 and to itself (not to other noisy frames). This is exactly the
    attention pattern of streaming with the cache: context frames are what
    the cache holds (clean latents with the default ``cache_update="clean"``,
    or the last denoising input with ``"last_step"``), noisy frames are the
    frame being denoised.

    Positions reproduce the cache's slot layout: a query sits at R + W, the
    history frame of age a at R + W - a, reference r at r. Context and noisy
    frames use positions increasing with time (only differences matter for
    RoPE); references are given one key copy per query frame, rotated so that
    their offset to that query is the fixed slot offset R + W - r.

    Attributes:
        q_pos: ``(F,)`` temporal position of each query frame.
        key_src: ``(Fk,)`` the frame each key frame reads its keys and values from.
        key_pos: ``(Fk,)`` temporal position of each key frame.
        frame_mask: ``(F, Fk)`` bool, True where query frame may attend key frame.
        num_ref: R.
        num_ctx: T.
        noisy: Whether noisy copies follow the context frames.
    """

    q_pos: Tensor
    key_src: Tensor
    key_pos: Tensor
    frame_mask: Tensor
    num_ref: int
    num_ctx: int
    noisy: bool

    @classmethod
    def build(cls, num_ref: int, num_ctx: int, window: int, *, noisy: bool = True) -> ClipLayout:
        """Layout of a clip of ``num_ref`` references and ``num_ctx`` generated frames.

        Args:
            num_ref: R reference frames.
            num_ctx: T generated (context) frames, >= 0.
            window: W history frames each frame may attend.
            noisy: Append T noisy frames (the frames being denoised).
        """
        R, T, W = num_ref, num_ctx, window
        cur = R + W  # the query slot position
        q_pos: list[int] = list(range(R)) + [cur + j for j in range(T)] * (2 if noisy else 1)
        keys: dict[tuple[int, int], int] = {}

        def key(src: int, pos: int) -> int:
            return keys.setdefault((src, pos), len(keys))

        n_q = len(q_pos)
        allowed: list[list[int]] = [[] for _ in range(n_q)]
        for r in range(R):
            allowed[r] = [key(s, s) for s in range(R)]
        for j in range(T):  # generated frame j (0-based), query position cur + j
            refs = [key(r, cur + j - (cur - r)) for r in range(R)]
            hist = [key(R + i, cur + i) for i in range(max(0, j - W), j)]
            allowed[R + j] = refs + hist + [key(R + j, cur + j)]
            if noisy:
                allowed[R + T + j] = refs + hist + [key(R + T + j, cur + j)]
        order = sorted(keys.items(), key=lambda kv: kv[1])
        key_src = torch.tensor([s for (s, _), _ in order], dtype=torch.long)
        key_pos = torch.tensor([p for (_, p), _ in order], dtype=torch.long)
        mask = torch.zeros(n_q, len(order), dtype=torch.bool)
        for qi, ks in enumerate(allowed):
            mask[qi, ks] = True
        return cls(torch.tensor(q_pos, dtype=torch.long), key_src, key_pos, mask, R, T, noisy)

    @property
    def num_frames(self) -> int:
        """Frames F in the clip."""
        return int(self.q_pos.numel())

    def token_mask(self, tokens: int) -> Tensor:
        """``(F * N, Fk * N)`` bool attention mask over tokens."""
        return self.frame_mask.repeat_interleave(tokens, 0).repeat_interleave(tokens, 1)


# ----------------------------------------------------------------------------- blocks


class TimestepEmbedder(nn.Module):
    """Scalar timesteps in [0, 1] -> ``(..., D)`` via sinusoids and an MLP."""

    def __init__(self, dim: int, freq_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        half = freq_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        args = (t.float() * 1000.0).unsqueeze(-1) * self.freqs  # (..., freq_dim/2)
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


class Attention(nn.Module):
    """Multi-head self-attention with qk-RMSNorm; the attention pattern comes from the caller."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.head_dim = config.head_dim
        self.prope_dims = config.rope_sections[0]
        self.qkv = nn.Linear(config.dim, 3 * config.dim)
        self.proj = nn.Linear(config.dim, config.dim)
        self.qk_norm = nn.Parameter(torch.ones(2, 1, config.head_dim))  # RMSNorm gains of q and k

    def project(self, x: Tensor, frames: int, camera: Camera) -> tuple[Tensor, Tensor]:
        """Queries and keys (qk-normed) and values, with PRoPE applied, before RoPE.

        Args:
            x: ``(B, F * N, D)``.
            frames: F.
            camera: PRoPE matrices per frame (unused when ``prope`` is off).

        Returns:
            ``qk`` ``(B, F * N, 2, nh, hd)`` (queries then keys) and ``v`` ``(B, F * N, nh, hd)``.
        """
        B, L, _ = x.shape
        qkv = self.qkv(x).view(B, L, 3, self.heads, self.head_dim)  # (B, F*N, 3, nh, hd)
        qk = F.rms_norm(qkv[:, :, :2], (self.head_dim,), eps=1e-6) * self.qk_norm  # (B, F*N, 2, nh, hd)
        v = qkv[:, :, 2]  # (B, F*N, nh, hd)
        if self.prope_dims:
            p, hd = self.prope_dims, self.head_dim
            q = _prope(qk[:, :, 0].reshape(B, frames, -1, hd), camera.prope_q, p)  # (B, F, N*nh, hd)
            k = _prope(qk[:, :, 1].reshape(B, frames, -1, hd), camera.prope_kv, p)  # (B, F, N*nh, hd)
            qk = torch.stack([q.view(B, L, self.heads, hd), k.view(B, L, self.heads, hd)], dim=2)
            v = _prope(v.reshape(B, frames, -1, hd), camera.prope_kv, p).view(B, L, self.heads, hd)
        return qk, v

    def output(self, o: Tensor, frames: int, camera: Camera) -> Tensor:
        """Attention output ``(B, nh, F * N, hd)`` -> ``(B, F * N, D)``."""
        B, D = o.shape[0], self.heads * self.head_dim
        o = o.transpose(1, 2)  # (B, F*N, nh, hd)
        if self.prope_dims:
            o = _prope(o.reshape(B, frames, -1, self.head_dim), camera.prope_o, self.prope_dims)  # (B, F, N*nh, hd)
        return self.proj(o.reshape(B, -1, D))  # (B, F*N, D)


class Block(nn.Module):
    """Pre-norm transformer block; adaLN shift/scale/gate come in per token from the DiT."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        D = config.dim
        self.norm1 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(config)
        self.norm2 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        hidden = int(D * config.mlp_ratio)
        self.fc1 = nn.Linear(D, hidden)
        self.fc2 = nn.Linear(hidden, D)

    def forward(self, x: Tensor, mod: Tensor, attend: _Attend, layer: int) -> Tensor:
        """``(B, L, D)`` -> ``(B, L, D)``.

        Args:
            x: Tokens.
            mod: ``(B, L, 6, D)`` (L may be 1): shift1, scale1 (with its +1), gate1, shift2, scale2, gate2.
            attend: Maps ``(attn, normed tokens, layer)`` to the attention output.
            layer: This block's index.
        """
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.unbind(2)
        x = torch.addcmul(x, gate1, attend(self.attn, torch.addcmul(shift1, self.norm1(x), scale1), layer))
        h = torch.addcmul(shift2, self.norm2(x), scale2)
        return torch.addcmul(x, gate2, self.fc2(F.gelu(self.fc1(h))))


class _Attend:
    """Attention pattern of one forward: ``(attn, normed tokens, layer) -> attention output``."""

    def __call__(self, attn: Attention, x: Tensor, layer: int) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class _ClipAttend(_Attend):
    """Block-causal attention within a training clip (see :class:`ClipLayout`)."""

    def __init__(self, layout: ClipLayout, cis_q: Tensor, cis_k: Tensor, mask: Tensor, camera: Camera, tokens: int):
        self.frames = layout.num_frames
        self.key_src = layout.key_src.to(mask.device)
        self.cis_q = cis_q  # (F, N, 1, hd/2, 2) rotation of queries
        self.cis_k = cis_k  # (Fk, N, 1, hd/2, 2) rotation of keys
        self.mask = mask  # (F*N, Fk*N) bool
        self.camera = camera
        self.tokens = tokens
        self.kv_out: list[tuple[Tensor, Tensor]] | None = None

    def __call__(self, attn: Attention, x: Tensor, layer: int) -> Tensor:
        B = x.shape[0]
        Fr, N, nh, hd = self.frames, self.tokens, attn.heads, attn.head_dim
        qk, v = attn.project(x, Fr, self.camera)  # (B, F*N, 2, nh, hd), (B, F*N, nh, hd)
        q = _rope(qk[:, :, 0].reshape(B, Fr, N, nh, hd), self.cis_q)  # (B, F, N, nh, hd)
        k = _rope(qk[:, :, 1].reshape(B, Fr, N, nh, hd)[:, self.key_src], self.cis_k)  # (B, Fk, N, nh, hd)
        v = v.reshape(B, Fr, N, nh, hd)[:, self.key_src]  # (B, Fk, N, nh, hd)
        q = q.reshape(B, Fr * N, nh, hd).transpose(1, 2)  # (B, nh, F*N, hd)
        k = k.reshape(B, -1, nh, hd).transpose(1, 2)  # (B, nh, Fk*N, hd)
        v = v.reshape(B, -1, nh, hd).transpose(1, 2)  # (B, nh, Fk*N, hd)
        if self.kv_out is not None:
            self.kv_out.append((k, v))
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask)  # (B, nh, F*N, hd)
        return attn.output(o, Fr, self.camera)


class _StreamAttend(_Attend):
    """One frame per stream attending to the cache: references, history ring, itself."""

    def __init__(self, cache: KVCache, cis_cur: Tensor, camera: Camera, mask: Tensor | None):
        self.cache = cache
        self.cis_cur = cis_cur  # (N, 1, 1, hd/2, 2): spatial and current-slot temporal rotation
        self.camera = camera
        self.mask = mask  # (B, 1, 1, S*N) bool, or None when every slot is valid

    def write(self, attn: Attention, x: Tensor, layer: int) -> Tensor:
        """Write this frame's keys and values to the current slot; return its rotated queries ``(B, nh, N, hd)``."""
        qk, v = attn.project(x, 1, self.camera)  # (B, N, 2, nh, hd), (B, N, nh, hd)
        raw_k = qk[:, :, 1].transpose(1, 2)  # (B, nh, N, hd) unrotated, kept for when the frame is history
        qk = _rope(qk, self.cis_cur)  # (B, N, 2, nh, hd) rotated at the current slot
        self.cache.write_current(layer, k_raw=raw_k, k=qk[:, :, 1].transpose(1, 2), v=v.transpose(1, 2))
        return qk[:, :, 0].transpose(1, 2)  # (B, nh, N, hd)

    def __call__(self, attn: Attention, x: Tensor, layer: int) -> Tensor:
        q = self.write(attn, x, layer)  # (B, nh, N, hd)
        k, v = self.cache.layer(layer)  # each (B, nh, S*N, hd)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask)  # (B, nh, N, hd)
        return attn.output(o, 1, self.camera)


# ----------------------------------------------------------------------------- the DiT


class DiT(nn.Module):
    """Causal diffusion transformer over latent frames; predicts the flow-matching velocity.

    With ``x_t = (1 - t) x_0 + t eps``, the output is ``v = eps - x_0`` and
    ``x_0 = x_t - t v``.

    Args:
        config: The DiT's shape.
    """

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        D, p = c.dim, c.patch_size
        self.patch_embed = nn.Linear(c.in_channels * p * p, D)
        self.camera_embed = nn.Sequential(nn.Linear(6, D), nn.SiLU(), nn.Linear(D, D))
        self.time_embed = TimestepEmbedder(D, c.freq_dim)
        # adaLN-single: one projection of the timestep embedding shared by all
        # blocks, plus a learned per-block offset (rows: shift1, scale1, gate1,
        # shift2, scale2, gate2). Scales act as (1 + scale).
        self.adaln = nn.Sequential(nn.SiLU(), nn.Linear(D, 6 * D))
        self.mod_tables = nn.Parameter(torch.zeros(c.layers, 6, D))
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.layers))
        self.final_norm = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.final_adaln = nn.Sequential(nn.SiLU(), nn.Linear(D, 2 * D))  # rows: shift, scale
        self.head = nn.Linear(D, c.latent_channels * p * p)
        self.register_buffer("mod_offset", torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0, 0.0])[:, None], persistent=False)
        self.register_buffer("final_offset", torch.tensor([0.0, 1.0])[:, None], persistent=False)
        self._init_weights()
        self._build_rope_tables()

    # -- initialisation and tables

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        # adaLN-Zero: every block starts as the identity and the output as zero.
        for m in (self.adaln[1], self.final_adaln[1], self.head):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
        nn.init.normal_(self.time_embed.mlp[0].weight, std=0.02)
        nn.init.normal_(self.time_embed.mlp[2].weight, std=0.02)

    def _build_rope_tables(self) -> None:
        c = self.config
        p, t, y, x = c.rope_sections
        half = c.head_dim // 2

        def section(offset: int, size: int) -> Tensor:
            f = torch.zeros(half, dtype=torch.float64)
            n = size // 2
            if n:
                f[offset // 2 : offset // 2 + n] = c.rope_theta ** (-torch.arange(n, dtype=torch.float64) / n)
            return f

        self.register_buffer("freq_t", section(p, t).float(), persistent=False)
        freq_y, freq_x = section(p + t, y), section(p + t + y, x)
        gh, gw = c.grid
        gy = torch.arange(gh, dtype=torch.float64).repeat_interleave(gw)  # (N,)
        gx = torch.arange(gw, dtype=torch.float64).repeat(gh)  # (N,)
        spatial = gy[:, None] * freq_y + gx[:, None] * freq_x  # (N, hd/2) angles
        cur = (c.num_ref + c.window) * self.freq_t.double()  # (hd/2,) current-slot angles
        self.register_buffer("rope_spatial", _angles_to_table(spatial), persistent=False)  # (N, hd/2, 2)
        self.register_buffer("rope_current", _angles_to_table(spatial + cur), persistent=False)  # (N, hd/2, 2)

    def temporal_table(self, positions: Tensor) -> Tensor:
        """Temporal rotation at integer ``positions``: ``(P,)`` -> ``(P, hd/2, 2)`` cos/sin pairs (float32)."""
        angles = positions.to(torch.float64)[:, None] * self.freq_t.to(torch.float64)  # (P, hd/2)
        return _angles_to_table(angles)

    def key_table(self, positions: Tensor) -> Tensor:
        """Spatial and temporal rotation of a frame's tokens at ``positions``: ``(P,)`` -> ``(P, N, hd/2, 2)``."""
        c1, s1 = self.rope_spatial.unbind(-1)  # each (N, hd/2)
        c2, s2 = self.temporal_table(positions).to(c1.device)[:, None].unbind(-1)  # each (P, 1, hd/2)
        return torch.stack([c1 * c2 - s1 * s2, s1 * c2 + c1 * s2], dim=-1)  # (P, N, hd/2, 2)

    # -- embeddings

    def prepare_camera(self, plucker: Tensor, proj: Tensor | None = None) -> Camera:
        """Camera encodings of frames.

        Args:
            plucker: ``(B, F, N, 6)`` Plücker rays relative to the reference camera.
            proj: ``(B, F, 4, 4)`` projective matrices P (from :func:`prope_matrices`);
                required when ``prope`` is on, ignored otherwise.

        Returns:
            A :class:`Camera`.
        """
        emb = self.camera_embed(plucker)  # (B, F, N, D)
        if not self.config.prope:
            return Camera(emb)
        if proj is None:
            raise ValueError("Expect `proj` (PRoPE matrices) when the config has prope=True, actually: None")
        proj = proj.float()
        proj_inv = torch.linalg.inv(proj)
        return Camera(emb, prope_q=proj, prope_kv=proj_inv.transpose(-1, -2), prope_o=proj.transpose(-1, -2))

    def modulation(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Per-token timesteps to the shared block modulation and the final modulation.

        Block ``i`` uses ``shared + tables[i]`` with ``tables`` from :meth:`block_tables`.

        Args:
            t: ``(B, L)`` timesteps in [0, 1].

        Returns:
            ``(B, L, 6, D)`` shared block modulation and ``(B, L, 2, D)`` final
            modulation (its scale including the +1).
        """
        B, L = t.shape
        D = self.config.dim
        emb = self.time_embed(t)  # (B, L, D)
        return self.adaln(emb).view(B, L, 6, D), self.final_adaln(emb).view(B, L, 2, D) + self.final_offset

    def block_tables(self) -> Tensor:
        """Per-block modulation offsets ``(layers, 6, D)``, scales including their +1."""
        return self.mod_tables + self.mod_offset

    def embed(self, x: Tensor, cond: Tensor, camera_emb: Tensor) -> Tensor:
        """Frames to tokens.

        Args:
            x: ``(B, F, C, h, w)`` noisy (or clean) latents.
            cond: ``(B, F, C + 1, h, w)`` warp latent and validity mask (zeros for context frames).
            camera_emb: ``(B, F, N, D)``.

        Returns:
            ``(B, F * N, D)``.
        """
        B = x.shape[0]
        tokens = self.patch_embed(patchify(torch.cat([x, cond], dim=2), self.config.patch_size))  # (B, F*N, D)
        return tokens + camera_emb.reshape(B, -1, self.config.dim)

    def unembed(self, h: Tensor, final_mod: Tensor) -> Tensor:
        """Tokens ``(B, F * N, D)`` -> velocity ``(B, F, C, h, w)``."""
        shift, scale = final_mod.unbind(2)  # each (B, L, D)
        out = self.head(torch.addcmul(shift, self.final_norm(h), scale))  # (B, F*N, C*p*p)
        c = self.config
        return unpatchify(out, c.patch_size, c.latent_channels, c.latent_size)

    # -- forwards

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        cond: Tensor,
        plucker: Tensor,
        proj: Tensor | None,
        layout: ClipLayout,
        kv_out: list[tuple[Tensor, Tensor]] | None = None,
    ) -> Tensor:
        """Training forward over a whole clip with the block-causal mask of ``layout``.

        Args:
            x: ``(B, F, C, h, w)`` latents in ``layout`` order (references, context, noisy).
            t: ``(B, F, N)`` or ``(B, F, 1)`` per-token timesteps in [0, 1] (0 for clean frames).
            cond: ``(B, F, C + 1, h, w)`` warp latent and mask (zeros for reference and context frames).
            plucker: ``(B, F, N, 6)`` Plücker rays relative to the reference camera.
            proj: ``(B, F, 4, 4)`` PRoPE matrices, or None when ``prope`` is off.
            layout: The clip's :class:`ClipLayout`; ``layout.num_frames == F``.
            kv_out: If given, receives each layer's attention keys and values
                ``(B, nh, Fk * N, hd)`` (used to prefill the cache's reference slots).

        Returns:
            ``(B, F, C, h, w)`` predicted velocity for every frame.
        """
        B, Fr = x.shape[:2]
        N = self.config.tokens
        camera = self.prepare_camera(plucker, proj)
        h = self.embed(x, cond, camera.emb)  # (B, F*N, D)
        mod, final_mod = self.modulation(t.expand(B, Fr, N).reshape(B, Fr * N))  # (B, F*N, 6, D), (B, F*N, 2, D)
        tables = self.block_tables()  # (layers, 6, D)
        dev = x.device
        cis_q = self.key_table(layout.q_pos)  # (F, N, hd/2, 2)
        cis_k = self.key_table(layout.key_pos)  # (Fk, N, hd/2, 2)
        attend = _ClipAttend(layout, cis_q[:, :, None], cis_k[:, :, None], layout.token_mask(N).to(dev), camera, N)
        attend.kv_out = kv_out
        for i, blk in enumerate(self.blocks):
            h = blk(h, mod + tables[i], attend, i)
        return self.unembed(h, final_mod)

    def forward_stream(
        self,
        x: Tensor,
        t: Tensor,
        cond: Tensor,
        camera: Camera,
        cache: KVCache,
        attn_mask: Tensor | None = None,
        kv_only: bool = False,
    ) -> Tensor | None:
        """One frame per stream against the cache; writes the frame's keys and values to the current slot.

        Args:
            x: ``(B, C, h, w)`` noisy latent.
            t: ``(B, N)`` per-token timesteps, or ``(B, 1)`` for one timestep per frame.
            cond: ``(B, C + 1, h, w)`` warp latent and validity mask (zeros for a cache-update forward).
            camera: :class:`Camera` of this frame, F = 1 (from :meth:`prepare_camera`).
            cache: The streams' :class:`KVCache`.
            attn_mask: ``cache.attn_mask()``, taken once per step by the caller (it only
                changes when the cache commits or resets).
            kv_only: Stop once the last layer's keys and values are written (a cache-update forward).

        Returns:
            ``(B, C, h, w)`` predicted velocity, or None with ``kv_only``.
        """
        h = self.embed(x[:, None], cond[:, None], camera.emb)  # (B, N, D)
        B, L = t.shape
        D = self.config.dim
        tables = self.block_tables()  # (layers, 6, D)
        if L > 1 and x.device.type == "cpu" and not torch.compiler.is_compiling():
            # A frame has few distinct timesteps: embed each once, then gather
            # every block's full modulation per token (contiguous, no per-block add).
            values, inverse = torch.unique(t, return_inverse=True)  # (U,), (B, L)
            emb = self.time_embed(values)  # (U, D)
            mods = (self.adaln(emb).view(1, -1, 6, D) + tables[:, None]).view(
                len(self.blocks), -1, 6 * D
            )  # (layers, U, 6D)
            final_mod = (self.final_adaln(emb).view(-1, 2, D) + self.final_offset)[inverse]  # (B, L, 2, D)
            idx = inverse.flatten()  # (B*L,)

            def block_mod(i: int) -> Tensor:
                return torch.index_select(mods[i], 0, idx).view(B, L, 6, D)

        else:
            shared, final_mod = self.modulation(t)  # (B, L, 6, D), (B, L, 2, D)

            def block_mod(i: int) -> Tensor:
                return shared + tables[i]

        attend = _StreamAttend(cache, self.rope_current[:, None, None], camera, attn_mask)
        last = len(self.blocks) - 1
        for i, blk in enumerate(self.blocks):
            if kv_only and i == last:
                shift1, scale1 = block_mod(i)[:, :, :2].unbind(2)
                attend.write(blk.attn, torch.addcmul(shift1, blk.norm1(h), scale1), i)
                return None
            h = blk(h, block_mod(i), attend, i)
        return self.unembed(h, final_mod)[:, 0]


def _angles_to_table(angles: Tensor) -> Tensor:
    """Angles ``(..., hd/2)`` (float64) -> cos/sin pairs ``(..., hd/2, 2)`` float32, a complex view's storage."""
    return torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1).to(torch.float32).contiguous()
