"""Shared machinery of the classical (non-learned) fusion methods: STARFM, ESTARFM, FSDAF, Fit-FC.

Not a model (the leading underscore keeps the registry from importing it as one).

Vectorisation: every moving-window method here is a loop over the window *offsets* ``(dy, dx)``;
each iteration works on whole shifted images, never on single pixels. Shifting is a slice of an
image padded once by the window radius. Out-of-image neighbours are excluded, never replicated,
so a pixel's result depends only on the pixels within ``radius`` of it: a scene predicted in
overlapping tiles joins without seams.

Speed (measured on the 2-core Xeon this was written on): the work is element-wise arithmetic
over ``pixels x window^2``, so what counts is the number of passes per offset and their cost.
(1) ``Padded.row`` views all ``2r+1`` offsets of one window row at once (a strided view, no copy):
one op per row of offsets instead of one per offset, so Python/dispatch overhead vanishes even
for tiny images with large windows. (2) Blocks of pixels (``tiles``) sized so the temporaries stay
in the L2 cache: element-wise ops run 3-4x slower once they spill. (3) Masks are float 0/1
computed by subtractions and one ``>= 0`` / ``> 0`` test into a float tensor: comparisons into
bool tensors, bool-float products and ``torch.where`` measured 3-30x slower per element than a
float subtraction; strict ``<`` against a per-pixel bound becomes ``<=`` against the next float
below (``torch.nextafter``), so every decision is bit-identical to the plain comparison.
(4) The n-th smallest score per pixel is one numpy ``partition`` over a pixel-major copy of the
scores (8x faster than ``torch.kthvalue``, 3x faster than ``torch.topk``).

Memory stays bounded: the output is computed in blocks (neighbours are read from the padded
image, so there is no recomputed halo), only per-pixel accumulators and per-block temporaries
are kept, never an ``(H*W*window^2)`` tensor, and whole scenes go through ``by_row_chunks``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from scipy.fft import next_fast_len
from torch import Tensor

from stfcat.models.base import REQUIRED_KEYS, Batch, FusionModel

NAN = float("nan")
FLT_MAX = float(torch.finfo(torch.float32).max)


def check_batch(batch: Batch, n_refs: int, model: str) -> tuple[int, int, int, int]:
    """Check keys and shapes of a batch; return ``(N, B, H, W)``."""
    keys = REQUIRED_KEYS[n_refs]
    missing = [k for k in keys if k not in batch]
    if missing:
        raise KeyError(f"{model}: batch lacks {missing} (needs {list(keys)})")
    shape = tuple(batch[keys[0]].shape)
    if len(shape) != 4:
        raise ValueError(f"{model}: batch[{keys[0]!r}] must be (N, B, H, W), got shape {shape}")
    for k in keys:
        if tuple(batch[k].shape) != shape:
            raise ValueError(f"{model}: batch[{k!r}] has shape {tuple(batch[k].shape)}, expected {shape}")
    return shape  # type: ignore[return-value]


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` intra-op threads (None: leave torch's setting), then restore.

    The offset loops issue many small element-wise ops; OpenMP fork/join costs more than it
    gains there, and on an oversubscribed machine 2 threads measured 14x slower than 1
    (Fit-FC, 256 x 256 x 6). Parallelism belongs to the tiles (processes) instead.
    """
    old = torch.get_num_threads()
    if n is not None and n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n is not None and n != old:
            torch.set_num_threads(old)


def by_row_chunks(fn, batch: Batch, halo: int, align: int = 1, pixels: int = 1 << 18) -> Tensor:
    """``fn(batch)`` computed on chunks of about ``pixels`` pixels (rows plus ``halo`` rows above and
    below, chunk starts on multiples of ``align``) and stitched: bounded memory for whole scenes.
    Exact for methods whose output depends only on pixels within ``halo`` (tiles join without
    seams); chunk origins on the coarse grid (``align = ratio``) for methods that aggregate."""
    first = next(iter(batch.values()))
    h, w = first.shape[-2:]
    rows = max(align, (pixels // max(1, w)) // align * align)
    if h <= rows + 2 * halo:
        return fn(batch)
    halo = -(-halo // align) * align
    out = None
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        lo, hi = max(0, r0 - halo), min(h, r1 + halo)
        part = fn({k: v[..., lo:hi, :] for k, v in batch.items()})
        if out is None:
            out = part.new_empty((*part.shape[:-2], h, w))
        out[..., r0:r1, :] = part[..., r0 - lo : r1 - lo, :]
    return out


def offsets(radius: int) -> list[tuple[int, int]]:
    return [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]


def pad(x: Tensor, radius: int, value: float) -> Tensor:
    """Pad the last two dims by ``radius`` with a constant (NaN: excluded from comparisons)."""
    return F.pad(x, (radius, radius, radius, radius), mode="constant", value=value)


def box_mean_any(x: Tensor, radius: int) -> Tensor:
    """Mean over the in-image part of the ``(2r+1)^2`` window of each pixel (any leading dims).

    Summed-area table in float64, one plane at a time (bounded memory): O(1) per pixel whatever
    the window.
    """
    h, w = x.shape[-2:]
    y0 = (torch.arange(h) - radius).clamp(0, h)
    y1 = (torch.arange(h) + radius + 1).clamp(0, h)
    x0 = (torch.arange(w) - radius).clamp(0, w)
    x1 = (torch.arange(w) + radius + 1).clamp(0, w)

    def box_sum(a: Tensor) -> Tensor:
        s = F.pad(a.double().cumsum(-1).cumsum(-2), (1, 0, 1, 0))
        rows1, rows0 = s[y1, :], s[y0, :]
        return rows1[:, x1] - rows1[:, x0] - rows0[:, x1] + rows0[:, x0]

    count = box_sum(torch.ones((h, w), dtype=torch.float64))
    planes = x.reshape(-1, h, w)
    out = torch.empty_like(planes)
    for i in range(planes.shape[0]):
        out[i] = box_sum(planes[i]) / count
    return out.reshape(x.shape)


def window_std(x: Tensor, radius: int) -> Tensor:
    """Population standard deviation over the in-image part of each pixel's window."""
    m = box_mean_any(x, radius)
    m2 = box_mean_any(x * x, radius)
    return (m2 - m * m).clamp_min(0).sqrt()


def to_coarse(x: Tensor, ratio: int) -> Tensor:
    """Average ``ratio x ratio`` blocks of a ``(..., H, W)`` tensor onto the coarse grid.

    H, W need not be multiples of ``ratio``: the last partial block averages the pixels it has.
    """
    if ratio == 1:
        return x.clone()
    shape = x.shape
    h, w = shape[-2:]
    ph, pw = (-h) % ratio, (-w) % ratio
    x4 = F.pad(x.reshape(-1, 1, h, w), (0, pw, 0, ph))
    ones = F.pad(torch.ones((1, 1, h, w), dtype=x.dtype, device=x.device), (0, pw, 0, ph))
    s = F.avg_pool2d(x4, ratio, divisor_override=1)
    n = F.avg_pool2d(ones, ratio, divisor_override=1)
    return (s / n).reshape(*shape[:-2], *s.shape[-2:])


def to_fine(xc: Tensor, ratio: int, h: int, w: int) -> Tensor:
    """Nearest-neighbour copy of coarse pixels back onto the ``(h, w)`` fine grid."""
    return xc.repeat_interleave(ratio, -2).repeat_interleave(ratio, -1)[..., :h, :w]


def row_blocks(h: int, rows: int) -> Iterator[tuple[int, int]]:
    """Consecutive row ranges ``[r0, r1)`` of at most ``rows`` rows covering ``0..h``."""
    rows = max(1, rows)
    for r0 in range(0, h, rows):
        yield r0, min(h, r0 + rows)


def block_rows(width: int, planes: int, budget_elems: int = 1 << 16) -> int:
    """Rows per block so that one ``planes``-deep row block has about ``budget_elems`` elements:
    small enough that the per-offset temporaries stay in cache."""
    return max(1, budget_elems // max(1, width * planes))


class Padded:
    """An image padded once by the window radius; ``nb`` gives the neighbour at ``(dy, dx)`` of
    every pixel of rows ``r0:r1``, ``centre`` the pixels themselves (both views, no copies)."""

    def __init__(self, x: Tensor, radius: int, value: float) -> None:
        self.r = radius
        self.w = x.shape[-1]
        self.xp = pad(x, radius, value)

    def nb(self, dy: int, dx: int, r0: int, r1: int) -> Tensor:
        r = self.r
        return self.xp[..., r + r0 + dy : r + r1 + dy, r + dx : r + dx + self.w]

    def centre(self, r0: int, r1: int) -> Tensor:
        return self.nb(0, 0, r0, r1)

    def row(self, dy: int, r0: int, r1: int, c0: int, c1: int) -> Tensor:
        """All ``2r+1`` neighbours at row offset ``dy`` of the pixels ``[r0:r1, c0:c1]``, as one
        ``(..., 2r+1, r1-r0, c1-c0)`` strided view (no copy): index ``j`` along the new dim is the
        column offset ``dx = j - r``. One op on it replaces ``2r+1`` per-offset ops."""
        xp, r = self.xp, self.r
        st = xp.stride()
        off = xp.storage_offset() + (r + r0 + dy) * st[-2] + c0 * st[-1]
        size = (*xp.shape[:-2], 2 * r + 1, r1 - r0, c1 - c0)
        return xp.as_strided(size, (*st[:-2], st[-1], st[-2], st[-1]), off)

    def rows(self, r0: int, r1: int, c0: int, c1: int) -> tuple[Tensor, ...]:
        """``row(dy, ...)`` for every ``dy`` in ``-r..r``, made by one ``as_strided`` and one
        ``unbind`` (the per-call cost of 2r+1 separate views adds up over many small blocks)."""
        xp, r = self.xp, self.r
        st = xp.stride()
        off = xp.storage_offset() + r0 * st[-2] + c0 * st[-1]
        size = (*xp.shape[:-2], 2 * r + 1, 2 * r + 1, r1 - r0, c1 - c0)
        return xp.as_strided(size, (*st[:-2], st[-2], st[-1], st[-2], st[-1]), off).unbind(-4)

    def block(self, r0: int, r1: int, c0: int, c1: int) -> Tensor:
        r = self.r
        return self.xp[..., r + r0 : r + r1, r + c0 : r + c1]


def tiles(h: int, w: int, depth: int, budget: int = 1 << 16) -> Iterator[tuple[int, int, int, int]]:
    """Blocks ``(r0, r1, c0, c1)`` covering an ``(h, w)`` grid such that ``depth`` planes of one
    block hold about ``budget`` elements: the per-row-of-offsets temporaries then stay in the
    L2 cache (measured: element-wise ops run 3-4x slower once their operands spill out of it)."""
    cols = min(w, max(8, budget // max(1, depth)))
    rows = max(1, budget // max(1, depth * cols))
    for r0 in range(0, h, rows):
        for c0 in range(0, w, cols):
            yield r0, min(h, r0 + rows), c0, min(w, c0 + cols)


def kth_smallest(
    score_row, radius: int, k: int, lead: tuple[int, ...], hh: int, ww: int, none: float = math.inf
):
    """Per pixel of a block, the k-th smallest score over its window (``none`` where the window has
    fewer than k scores): ``score_row(dy)`` gives the scores of the row of offsets ``dy`` as
    ``(*lead, 2r+1, hh, ww)``, ``none`` where there is no score. Returns ``(tau (*lead, hh, ww), rows)``; ``rows(dy)`` is a view of
    the stored scores of row ``dy``, shaped like ``score_row(dy)``. The selection is one partial
    sort (quickselect) over a pixel-major copy of the scores."""
    kk = 2 * radius + 1
    buf = torch.empty(*lead, kk, kk, hh, ww)
    for dy in range(-radius, radius + 1):
        buf[..., dy + radius, :, :, :] = score_row(dy)
    if k > kk * kk:
        tau = torch.full((*lead, hh, ww), none)
    else:
        # pixel-major copy; numpy's introselect is 8x faster than torch.kthvalue (measured)
        flat = buf.view(*lead, kk * kk, hh * ww).transpose(-1, -2).contiguous().numpy()
        tau = torch.from_numpy(np.partition(flat, k - 1, axis=-1)[..., k - 1]).view(*lead, hh, ww)

    def rows(dy: int) -> Tensor:
        return buf[..., dy + radius, :, :, :]

    return tau, rows


def kmeans(x: Tensor, k: int, iters: int = 20) -> tuple[Tensor, Tensor]:
    """Deterministic k-means of the rows of ``x`` ``(P, B)``: returns (labels (P,), centres (k, B)).

    Initial centres are the pixels at the ``(i + 0.5) / k`` quantiles of the band-summed brightness,
    so the result depends on the data only (no random seed); empty clusters keep their centre.
    The nearest centre is the argmin of ``|c|^2 - 2 x.c`` (the squared distance less the row's
    own ``|x|^2``): one float64 matrix product per row chunk instead of ``cdist`` (about 4x
    faster); memory is bounded by the chunk, not by ``P x k``.
    """
    x = x.double()
    bright = x.sum(1)
    order = torch.argsort(bright, stable=True)
    p = x.shape[0]
    idx = order[((torch.arange(k, dtype=torch.float64) + 0.5) / k * p).long().clamp_max(p - 1)]
    centres = x[idx].clone()
    labels = torch.zeros(p, dtype=torch.long)
    new = torch.empty(p, dtype=torch.long)
    chunk = 1 << 16
    for _ in range(iters):
        cn = (centres * centres).sum(1)
        for i0 in range(0, p, chunk):
            torch.argmin(torch.addmm(cn, x[i0 : i0 + chunk], centres.T, alpha=-2.0), 1, out=new[i0 : i0 + chunk])
        if torch.equal(new, labels) and _ > 0:
            break
        labels = new.clone()
        sums = torch.zeros_like(centres).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k).to(x.dtype)
        keep = counts > 0
        centres[keep] = sums[keep] / counts[keep, None]
    return labels, centres.float()


def keys_cubic_upsample(xc: Tensor, ratio: int, h: int, w: int) -> Tensor:
    """Bicubic interpolation of a coarse image ``(N, B, hc, wc)`` onto the fine grid ``(h, w)``.

    Keys' cubic convolution with a = -0.5 (the kernel of MATLAB ``imresize(..., 'bicubic')``;
    PyTorch uses a = -0.75), pixel-centre aligned, edges replicated (``imresize`` mirrors them: pad
    the input symmetrically first, as Fit-FC does). Separable: one small matmul per axis.
    """

    def weights(n_out: int, n_in: int) -> Tensor:
        pos = (torch.arange(n_out, dtype=torch.float64) + 0.5) / ratio - 0.5
        base = torch.floor(pos)
        t = pos - base
        a = -0.5
        m = torch.zeros(n_out, n_in, dtype=torch.float64)
        for o in (-1, 0, 1, 2):
            s = (t - o).abs()
            wgt = torch.where(
                s <= 1,
                (a + 2) * s**3 - (a + 3) * s**2 + 1,
                torch.where(s < 2, a * s**3 - 5 * a * s**2 + 8 * a * s - 4 * a, torch.zeros_like(s)),
            )
            col = (base + o).long().clamp(0, n_in - 1)
            m.index_put_((torch.arange(n_out), col), wgt, accumulate=True)
        return m.to(xc.dtype)

    hc, wc = xc.shape[-2:]
    my = weights(hc * ratio, hc)[:h]
    mx = weights(wc * ratio, wc)[:w]
    return torch.einsum("yi,nbij,xj->nbyx", my, xc, mx)


def tps_fine(zc: Tensor, ratio: int, h: int, w: int) -> Tensor:
    """Thin-plate spline through the coarse pixel centres, evaluated on every fine pixel.

    ``zc`` is ``(B, hc, wc)`` (one value per coarse pixel and band). The spline
    ``f(p) = a0 + a1 y + a2 x + sum_k w_k phi(|p - c_k|)``, ``phi(r) = r^2 log r``, interpolates the
    values exactly (no smoothing), as IDL's ``MIN_CURVE_SURF(/TPS)`` used by FSDAF. The kernel sum
    over a regular grid of centres is a convolution, evaluated with FFTs (exact, O(HW log HW)),
    instead of an (H*W x n_centres) kernel matrix. Memory: the ``(n+3)^2`` system, factorised in
    place (~130 MB for 1000 x 1000 fine pixels at ratio 16), then one band's FFT planes at a time.
    Centres on a single row or column: the polynomial term of the constant coordinate is left out
    (with it the system is singular), which gives the 1-D spline along the line.
    """
    b, hc, wc = zc.shape
    n = hc * wc
    dev = zc.device
    # coordinates in coarse-pixel units (better conditioned than fine pixels)
    cy, cx = torch.meshgrid(
        torch.arange(hc, dtype=torch.float64), torch.arange(wc, dtype=torch.float64), indexing="ij"
    )
    pts = torch.stack([cy.reshape(-1), cx.reshape(-1)], 1)
    if n < 3:
        return zc.mean((1, 2))[:, None, None].expand(b, h, w).to(zc.dtype).clone()
    # centres on one row (column): y (x) is constant and its polynomial term is dropped (kept, it
    # makes the system singular); the spline is then the 1-D one along the line
    cols = [0] + [1] * (hc > 1) + [2] * (wc > 1)
    p = torch.cat([torch.ones(n, 1, dtype=torch.float64), pts], 1)[:, cols]
    m = n + len(cols)
    a = torch.zeros(m, m, dtype=torch.float64)
    # the (n x n) kernel is built in row chunks: whole, its temporaries took ~5 n^2 doubles
    # (0.6 GB for a 1000 x 1000 scene at ratio 16)
    for i0 in range(0, n, 256):
        i1 = min(n, i0 + 256)
        r = torch.cdist(pts[i0:i1], pts)
        a[i0:i1, :n] = torch.where(r > 0, r * r * torch.log(r.clamp_min(1e-300)), torch.zeros_like(r))
    del r
    a[:n, n:] = p
    a[n:, :n] = p.T
    rhs = torch.zeros(m, b, dtype=torch.float64)
    rhs[:n] = zc.reshape(b, n).T.double().cpu()
    # symmetric indefinite (Bunch-Kaufman LDL^T), factorised in place: torch.linalg.solve would
    # take a second m^2 copy for its LU (126 MB at 1000 x 1000, ratio 16)
    sol = torch.from_numpy(  # a.T: the same symmetric matrix, Fortran-ordered (no f2py copy)
        scipy.linalg.solve(a.numpy().T, rhs.numpy(), assume_a="sym", overwrite_a=True, check_finite=False)
    )
    del a, rhs
    wk = sol[:n].T.reshape(b, hc, wc)
    poly = torch.zeros(3, b, dtype=torch.float64)
    poly[cols] = sol[n:]
    # fine pixel (i, j) sits at coarse coordinate ((i + 0.5) / ratio - 0.5, ...)
    hp, wp = hc * ratio, wc * ratio
    # kernel over all fine offsets u = i - ratio*ci in [-(hp-1), hp-1]
    off = (ratio - 1) / 2.0
    uy = (torch.arange(-(hp - 1), hp, dtype=torch.float64) - off) / ratio
    ux = (torch.arange(-(wp - 1), wp, dtype=torch.float64) - off) / ratio
    rr = torch.sqrt(uy[:, None] ** 2 + ux[None, :] ** 2)
    # r^2 log r (0 at r = 0), with one temporary: this plane is ~4 hp x wp doubles
    ker = (rr * rr).mul_(rr.clamp_min_(1e-300).log_())
    del rr
    # a circular convolution of length >= 2 hp - 1 is exact on the outputs we keep
    fh, fw = next_fast_len(2 * hp - 1), next_fast_len(2 * wp - 1)
    kf = torch.fft.rfft2(ker, s=(fh, fw))
    del ker
    fy = (torch.arange(hp, dtype=torch.float64) + 0.5) / ratio - 0.5
    fx = (torch.arange(wp, dtype=torch.float64) + 0.5) / ratio - 0.5
    val = torch.empty(b, h, w, dtype=zc.dtype)
    grid = torch.zeros(hp, wp, dtype=torch.float64)
    for i in range(b):  # one band at a time bounds the FFT memory
        grid[::ratio, ::ratio] = wk[i]
        conv = torch.fft.irfft2(torch.fft.rfft2(grid, s=(fh, fw)).mul_(kf), s=(fh, fw))
        band = conv[hp - 1 : 2 * hp - 1, wp - 1 : 2 * wp - 1]
        band += (poly[0, i] + poly[1, i] * fy)[:, None]
        band += poly[2, i] * fx[None, :]
        val[i] = band[:h, :w]
        del conv, band
    return val.to(dev)


class WindowMethod(FusionModel):
    """What the classical moving-window methods share: no training, a ``threads`` limit while
    predicting, an odd ``window`` (``radius = window // 2``, ``halo = radius`` unless a subclass
    needs more), an optional similarity-threshold scope, and whole scenes predicted in row chunks
    (bounded memory, identical result) whenever the method is local.

    Subclasses implement ``_forward``; ``row_align`` is the chunk alignment (``None``: the method
    has tile-global steps and is never chunked)."""

    trainable = False
    min_window = 1
    row_align: int | None = 1

    def __init__(self, bands: int, ratio: int, *, threads: int | None, window: int,
                 threshold_scope: str | None = None) -> None:
        super().__init__(bands, ratio)
        if window < self.min_window or window % 2 == 0:
            raise ValueError(f"window must be an odd number of fine pixels >= {self.min_window}, got {window}")
        if threshold_scope is not None and threshold_scope not in ("window", "image"):
            raise ValueError(f"threshold_scope must be 'window' or 'image', got {threshold_scope!r}")
        self.threads = threads
        self.window = window
        self.radius = window // 2
        self.halo = self.radius
        self.threshold_scope = threshold_scope

    @property
    def receptive_field(self) -> int | None:  # type: ignore[override]
        # local methods depend on the moving window (halo = its radius, plus coarse-grid steps);
        # tile-global steps or an image-wide threshold have no finite radius
        local = self.row_align is not None and self.threshold_scope in (None, "window")
        return self.halo if local else None

    @property
    def tile_align(self) -> int:  # type: ignore[override]
        # methods with coarse-grid steps (row_align != 1) must not split a coarse pixel
        return 1 if self.row_align == 1 else self.ratio

    def _forward(self, batch: Batch) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, batch: Batch) -> Tensor:
        with torch_threads(self.threads):
            # an image-wide threshold makes every pixel depend on the whole input: no chunking
            if self.row_align is not None and self.threshold_scope in (None, "window"):
                return by_row_chunks(self._forward, batch, self.halo, align=self.row_align)
            return self._forward(batch)

