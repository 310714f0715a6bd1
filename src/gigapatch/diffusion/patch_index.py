"""PatchIndex: the clean patch set of one pyramid level, with multiplicities.

The denoiser's prior is a uniform mixture over every P x P patch of the level (stride 1).
Equal patches can be merged into one entry with multiplicity n_j: adding log n_j to its
logit leaves the posterior mean unchanged, so merging duplicates is exact and is the
base of a pruned dictionary. Saving and loading an index is storage's job
(:mod:`gigapatch.storage.patch_index_io`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .numerics import blas_invariant

__all__ = ["PatchIndex", "extract_patches", "gather_patches", "patch_set_bytes"]


def patch_set_bytes(height: int, width: int, channels: int, patch_size: int) -> int:
    """float32 bytes of the full stride-1 patch set of an image (before any merging)."""
    p = patch_size
    return max(0, height - p + 1) * max(0, width - p + 1) * channels * p * p * 4


#: bytes of index temporaries per chunk when gathering or hashing patches: the index build's
#: peak is the kept patches plus about this much, never a second copy of the patch set
CHUNK_BYTES = 64 * 2**20


def _chunk_rows(row_bytes: int) -> int:
    return max(1, CHUNK_BYTES // max(1, row_bytes))


def gather_patches(image: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor,
                   patch_size: int) -> torch.Tensor:
    """The P x P patches with top-left corners (ys, xs), flattened like ``extract_patches``.

    Gathered in row blocks of about ``CHUNK_BYTES`` straight into the result, so the peak
    is the result plus one block (the values are plain copies: no arithmetic).

    Parameters
    ----------
    image : Tensor, shape (C, H, W)
    ys, xs : Tensor, shape (M,), int64

    Returns
    -------
    Tensor, shape (M, C * P * P)
    """
    c, h, w = image.shape
    p = patch_size
    m = ys.numel()
    o = torch.arange(p, device=image.device)
    flat_img = image.reshape(c, h * w)
    out = torch.empty((m, c * p * p), dtype=image.dtype, device=image.device)
    rows = _chunk_rows(c * p * p * (image.element_size() * 2 + 8))
    for r0 in range(0, m, rows):
        yb, xb = ys[r0:r0 + rows], xs[r0:r0 + rows]
        flat = ((yb[:, None, None] + o[None, :, None]) * w
                + (xb[:, None, None] + o[None, None, :])).reshape(-1)  # (B * P * P)
        vals = flat_img[:, flat].reshape(c, yb.numel(), p * p)
        out[r0:r0 + rows] = vals.permute(1, 0, 2).reshape(yb.numel(), c * p * p)
    return out


def _row_sq_norms(patches: torch.Tensor) -> torch.Tensor:
    """``(patches * patches).sum(1)`` in row blocks (each row's sum as the unblocked one)."""
    n = patches.shape[0]
    out = torch.empty(n, dtype=patches.dtype, device=patches.device)
    rows = _chunk_rows(patches.shape[1] * patches.element_size())
    for r0 in range(0, n, rows):
        b = patches[r0:r0 + rows]
        out[r0:r0 + rows] = (b * b).sum(1)
    return out


def _hash_coefficients(d: int) -> torch.Tensor:
    """Fixed odd int64 multipliers of the row hash (seeded: the same on every run)."""
    gen = torch.Generator().manual_seed(0x5EED)
    return torch.randint(-2**62, 2**62, (d,), generator=gen, dtype=torch.int64) | 1


def _duplicate_groups(patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Groups of bit-identical rows of an (N, D) matrix (see :func:`_duplicate_groups_of`)."""
    n, d = patches.shape
    return _duplicate_groups_of(lambda i: patches[i], n, d, patches.device)


def _duplicate_groups_of(rows_of, n: int, d: int, device: torch.device, *,
                         check: bool = True) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Groups of bit-identical rows without sorting or even holding the whole (N, D) matrix.

    ``rows_of(i)`` returns the rows ``i`` (a slice or an int64 index tensor) as a (len, D)
    tensor: a view of a matrix, or patches gathered from an image on demand (then the
    un-merged patch set never exists, only one block of it at a time).

    Each row's bits (``-0.0`` read as ``0.0``, as ``torch.unique`` compares) are hashed to
    one int64 in row blocks (wrapping integer arithmetic: deterministic); rows are grouped
    by hash and every row is then compared with its group's first row, so the grouping is
    exact. Returns ``(inverse, counts)`` with groups numbered in increasing hash order, or
    ``None`` when two different rows share a hash (the caller falls back to
    ``torch.unique``). ``check=False`` skips the comparison: the caller must then compare
    each row with its group's first itself (:func:`_group_mismatch`).
    """
    dev = device
    coef = _hash_coefficients(d).to(dev)
    h = torch.empty(n, dtype=torch.int64, device=dev)
    rows = _chunk_rows(d * 16)
    for r0 in range(0, n, rows):
        b = (rows_of(slice(r0, r0 + rows)) + 0.0).contiguous().view(torch.int32)
        h[r0:r0 + rows] = (b.to(torch.int64) * coef).sum(1)
    _, inverse, counts = torch.unique(h, return_inverse=True, return_counts=True)
    if counts.numel() == n or not check:
        return inverse, counts
    first = torch.full((counts.numel(),), n, dtype=torch.long, device=dev)
    first.scatter_reduce_(0, inverse, torch.arange(n, device=dev), reduce="amin")
    dup = (counts > 1)[inverse].nonzero().flatten()
    if _mismatch(rows_of, lambda i: rows_of(first[inverse[i]]), dup, d):
        return None
    return inverse, counts


def _mismatch(rows_of, first_rows_of, dup: torch.Tensor, d: int) -> bool:
    """Whether any of the rows ``dup`` differs (``-0.0`` read as ``0.0``) from its group's
    first row; ``first_rows_of(i)`` gives the first rows of rows ``i``. In blocks."""
    rows = _chunk_rows(d * 16)
    for r0 in range(0, dup.numel(), rows):
        i = dup[r0:r0 + rows]
        if not torch.equal(rows_of(i) + 0.0, first_rows_of(i) + 0.0):
            return True
    return False


def _merge_plan(inverse: torch.Tensor, counts: torch.Tensor, log_counts: torch.Tensor) \
        -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """From row groups to merged entries: ``(first, new_of_old, mult)``.

    ``first`` (M,): the first row of each group, ascending (entries keep positional
    order); ``new_of_old`` (N,): each row's entry; ``mult`` (M,): the summed
    multiplicities ``exp(log_counts)`` of each entry's rows.
    """
    n, n_new = inverse.numel(), counts.shape[0]
    dev = inverse.device
    # first occurrence of each group: min original index per group
    first = torch.full((n_new,), n, dtype=torch.long, device=dev)
    first.scatter_reduce_(0, inverse, torch.arange(n, device=dev), reduce="amin")
    first, perm = torch.sort(first)  # keep the original (positional) order
    rank = torch.empty_like(perm)
    rank[perm] = torch.arange(n_new, device=dev)
    new_of_old = rank[inverse]
    mult = torch.zeros(n_new, dtype=torch.float32, device=dev)
    mult.index_add_(0, new_of_old, log_counts.exp())
    return first, new_of_old, mult


def _prune_key(patches: torch.Tensor, tolerance: float) -> torch.Tensor:
    """What ``prune`` compares: the patches, or with a tolerance their values rounded to
    multiples of ``2 * tolerance``."""
    return patches if tolerance <= 0 else torch.round(patches / (2 * tolerance))


def extract_patches(image: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Every P x P patch of an image, stride 1, flattened channel-major.

    Parameters
    ----------
    image : Tensor, shape (C, H, W)
    patch_size : int
        P; H and W must be >= P.

    Returns
    -------
    Tensor, shape ((H - P + 1) * (W - P + 1), C * P * P)
        Row-major over patch positions (top-left corner), same layout as ``F.unfold``.
    """
    c, h, w = image.shape
    if h < patch_size or w < patch_size:
        raise ValueError(f"image {h}x{w} is smaller than the patch size {patch_size}")
    cols = F.unfold(image.unsqueeze(0), kernel_size=patch_size)  # (1, C*P*P, L)
    return cols[0].transpose(0, 1).contiguous()


@dataclass(frozen=True, eq=False)
class PatchIndex:
    """One level's patch set.

    Attributes
    ----------
    patches : Tensor, shape (N, D)
        Clean patches y_j, D = C * P * P, values in [-1, 1].
    log_counts : Tensor, shape (N,)
        log n_j, the log multiplicity of each entry (zeros when nothing was merged).
    sq_norms : Tensor, shape (N,)
        |y_j|^2, cached for the logits.
    patch_size : int
    channels : int
    positions : Tensor, shape (N, 2), int64, optional
        (y, x) of each entry's top-left corner in the level (one representative position
        for merged entries); lets the fast backend shift a match by one pixel.
    position_map : Tensor, shape (ceil(hp / g), ceil(wp / g)), int64, optional
        Entry id of the patch at the top-left positions of the level, one per cell of
        ``position_step`` x ``position_step`` positions (merged and subsampled positions
        map to their representative): its size is bounded by the entries before merging,
        never by the level (:meth:`entry_at` reads it).
    position_step : int
        g, the side of one cell of ``position_map`` (1: one cell per position).
    position_hw : (int, int), optional
        (hp, wp), the level's top-left positions (default: ``position_map``'s shape, which
        it is when ``position_step`` is 1).
    """

    patches: torch.Tensor
    log_counts: torch.Tensor
    sq_norms: torch.Tensor
    patch_size: int
    channels: int
    positions: torch.Tensor | None = None
    position_map: torch.Tensor | None = None
    position_step: int = 1
    position_hw: tuple[int, int] | None = None

    @classmethod
    def from_patches(cls, patches: torch.Tensor, patch_size: int, channels: int,
                     counts: torch.Tensor | None = None, *,
                     positions: torch.Tensor | None = None,
                     position_map: torch.Tensor | None = None, position_step: int = 1,
                     position_hw: tuple[int, int] | None = None) -> "PatchIndex":
        """Build an index from explicit patches and optional multiplicities.

        Parameters
        ----------
        patches : Tensor, shape (N, D)
        patch_size, channels : int
        counts : Tensor, shape (N,), optional
            Positive multiplicities n_j (default all ones).
        positions, position_map, position_step, position_hw
            As the attributes (optional).
        """
        patches = patches.to(torch.float32).contiguous()
        if counts is None:
            log_counts = torch.zeros(patches.shape[0], dtype=torch.float32,
                                     device=patches.device)
        else:
            log_counts = torch.log(counts.to(torch.float32).to(patches.device))
        return cls(patches, log_counts, _row_sq_norms(patches), patch_size, channels,
                   positions, position_map, int(position_step),
                   None if position_hw is None else (int(position_hw[0]), int(position_hw[1])))

    @classmethod
    def from_image(cls, image: torch.Tensor, patch_size: int, *,
                   merge_duplicates: bool = True, max_entries: int | None = None,
                   prune_tolerance: float = 0.0) -> "PatchIndex":
        """Every stride-1 patch of one pyramid level (or a regular subsample of them).

        Parameters
        ----------
        image : Tensor, shape (C, H, W)
            One level of the reference, values in [-1, 1].
        patch_size : int
        merge_duplicates : bool
            Merge bit-identical patches into one entry with its multiplicity (exact).
        max_entries : int, optional
            Memory bound: when the level has more patch positions, keep the positions of a
            regular grid of step g = ceil(sqrt(positions / max_entries)), each standing for
            the g x g positions around it (multiplicity = their number).
        prune_tolerance : float
            > 0 also merges near-duplicates (see :meth:`prune`).

        Notes
        -----
        Streamed: the kept positions' patches are hashed block by block as they are
        gathered, duplicates are found from the hashes (each checked against its group's
        first row, gathered again), and only the entries that remain are gathered into the
        index. The un-merged patch set is never materialised and the build's temporaries
        are blocks of about ``CHUNK_BYTES``: the peak is the index plus one block. The
        result is bit for bit ``from_image(..., merge_duplicates=False).prune(tolerance)``.
        """
        c, h, w = image.shape
        p = patch_size
        if h < p or w < p:
            raise ValueError(f"image {h}x{w} is smaller than the patch size {p}")
        hp, wp = h - p + 1, w - p + 1
        dev = image.device
        g = 1
        if max_entries is not None and hp * wp > max_entries:
            g = math.ceil(math.sqrt(hp * wp / max_entries))
        gy = torch.arange(0, hp, g, device=dev)
        gx = torch.arange(0, wp, g, device=dev)
        ys = gy.repeat_interleave(gx.numel())
        xs = gx.repeat(gy.numel())
        counts = None
        if g > 1:  # each kept position stands for the positions that round to it
            cy = torch.minimum(gy + g, torch.tensor(hp, device=dev)) - gy
            cx = torch.minimum(gx + g, torch.tensor(wp, device=dev)) - gx
            counts = (cy[:, None] * cx[None, :]).reshape(-1).to(torch.float32)
        grid = (gy.numel(), gx.numel())
        n, d = ys.numel(), c * p * p
        log_counts = torch.zeros(n, dtype=torch.float32, device=dev) if counts is None \
            else torch.log(counts)
        groups = None
        if merge_duplicates or prune_tolerance > 0:
            def rows_of(i):
                return _prune_key(gather_patches(image, ys[i], xs[i], p), prune_tolerance)

            # the hashes only: each row is compared with its entry once the entries are
            # gathered (below), which reads each duplicate row once more instead of twice
            groups = _duplicate_groups_of(rows_of, n, d, dev, check=False)
        kw = dict(position_step=g, position_hw=(hp, wp))

        def unmerged() -> "PatchIndex":
            return cls.from_patches(gather_patches(image, ys, xs, p), p, c, counts,
                                    positions=torch.stack([ys, xs], 1),
                                    position_map=torch.arange(n, device=dev).reshape(grid),
                                    **kw)

        if groups is None or groups[1].numel() == n:  # nothing to merge
            return unmerged()
        inverse, gcounts = groups
        first, new_of_old, mult = _merge_plan(inverse, gcounts, log_counts)
        kept = gather_patches(image, ys[first], xs[first], p)
        later = (first[new_of_old] != torch.arange(n, device=dev)).nonzero().flatten()
        if _mismatch(rows_of, lambda i: _prune_key(kept[new_of_old[i]], prune_tolerance),
                     later, d):  # a hash collision: the in-memory route sorts the rows
            del kept
            return unmerged().prune(prune_tolerance)
        return cls.from_patches(kept, p, c, mult,
                                positions=torch.stack([ys[first], xs[first]], 1),
                                position_map=new_of_old.reshape(grid), **kw)

    def prune(self, tolerance: float = 0.0) -> "PatchIndex":
        """Merge (near-)duplicate entries into weighted representatives.

        ``tolerance = 0`` merges bit-identical patches only, which leaves the posterior mean
        unchanged (exact). ``tolerance > 0`` merges patches whose values all round to the same
        multiple of ``2 * tolerance`` (so they differ by less than that per value); the
        representative is the first of them and its multiplicity the sum of theirs.

        Returns
        -------
        PatchIndex
            ``self`` when nothing merges.
        """
        key = _prune_key(self.patches, tolerance)
        groups = _duplicate_groups(key)
        if groups is None:  # a hash collision: sort the rows themselves
            _, inverse, counts = torch.unique(key, dim=0, return_inverse=True,
                                              return_counts=True)
        else:
            inverse, counts = groups
        if counts.shape[0] == self.size:
            return self
        first, new_of_old, mult = _merge_plan(inverse, counts, self.log_counts)
        positions = None if self.positions is None else self.positions[first]
        pos_map = None if self.position_map is None else new_of_old[self.position_map]
        return PatchIndex.from_patches(self.patches[first], self.patch_size, self.channels,
                                       mult, positions=positions, position_map=pos_map,
                                       position_step=self.position_step,
                                       position_hw=self.position_hw)

    def entry_at(self, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        """Entry ids of the patches with top-left corners (ys, xs), any (equal) shape;
        0 <= ys < hp and 0 <= xs < wp (:attr:`position_shape`)."""
        g = self.position_step
        if g == 1:
            return self.position_map[ys, xs]
        return self.position_map[ys // g, xs // g]

    @property
    def position_shape(self) -> tuple[int, int]:
        """(hp, wp): the level's top-left patch positions that :meth:`entry_at` maps."""
        if self.position_hw is not None:
            return self.position_hw
        return int(self.position_map.shape[0]), int(self.position_map.shape[1])

    def full_position_map(self) -> torch.Tensor:
        """The (hp, wp) int64 entry id of every top-left position (materialised: tests and
        small levels; the index itself keeps one id per cell of ``position_step``)."""
        hp, wp = self.position_shape
        dev = self.position_map.device
        ys = torch.arange(hp, device=dev)[:, None].expand(hp, wp)
        xs = torch.arange(wp, device=dev)[None, :].expand(hp, wp)
        return self.entry_at(ys, xs)

    @property
    def size(self) -> int:
        """Number of entries N."""
        return self.patches.shape[0]

    @property
    def dim(self) -> int:
        """Patch dimension D = C * P * P."""
        return self.patches.shape[1]

    @property
    def total_count(self) -> float:
        """Sum of multiplicities (the number of patches before merging)."""
        return float(self.log_counts.exp().sum())

    @property
    def nbytes(self) -> int:
        return sum(t.element_size() * t.numel()
                   for t in (self.patches, self.log_counts, self.sq_norms, self.positions,
                             self.position_map) if t is not None)

    def to(self, device: torch.device | str) -> "PatchIndex":
        """A copy on another device (self when already there)."""
        if self.patches.device == torch.device(device):
            return self
        opt = [None if t is None else t.to(device)
               for t in (self.positions, self.position_map)]
        return PatchIndex(self.patches.to(device), self.log_counts.to(device),
                          self.sq_norms.to(device), self.patch_size, self.channels, *opt,
                          self.position_step, self.position_hw)

    @blas_invariant
    def mean(self) -> torch.Tensor:
        """The multiplicity-weighted mean patch, shape (D,): the denoiser's output at a = 0."""
        w = torch.softmax(self.log_counts, 0)
        return w @ self.patches
