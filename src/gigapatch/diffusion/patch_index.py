"""PatchIndex: the clean patch set of one pyramid level, with multiplicities.

The denoiser's prior is a uniform mixture over every P x P patch of the level (stride 1).
Equal patches can be merged into one entry with multiplicity n_j: adding log n_j to its
logit leaves the posterior mean unchanged, so merging duplicates is exact and is the
base of a pruned dictionary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["PatchIndex", "extract_patches"]


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
    """

    patches: torch.Tensor
    log_counts: torch.Tensor
    sq_norms: torch.Tensor
    patch_size: int
    channels: int

    @classmethod
    def from_patches(cls, patches: torch.Tensor, patch_size: int, channels: int,
                     counts: torch.Tensor | None = None) -> "PatchIndex":
        """Build an index from explicit patches and optional multiplicities.

        Parameters
        ----------
        patches : Tensor, shape (N, D)
        patch_size, channels : int
        counts : Tensor, shape (N,), optional
            Positive multiplicities n_j (default all ones).
        """
        patches = patches.to(torch.float32).contiguous()
        if counts is None:
            log_counts = torch.zeros(patches.shape[0], dtype=torch.float32,
                                     device=patches.device)
        else:
            log_counts = torch.log(counts.to(torch.float32).to(patches.device))
        return cls(patches, log_counts, (patches * patches).sum(1), patch_size, channels)

    @classmethod
    def from_image(cls, image: torch.Tensor, patch_size: int, *,
                   merge_duplicates: bool = True) -> "PatchIndex":
        """Every stride-1 patch of one pyramid level.

        Parameters
        ----------
        image : Tensor, shape (C, H, W)
            One level of the reference, values in [-1, 1].
        patch_size : int
        merge_duplicates : bool
            Merge bit-identical patches into one entry with its multiplicity (exact).
        """
        patches = extract_patches(image, patch_size)
        if merge_duplicates:
            uniq, counts = torch.unique(patches, dim=0, return_counts=True)
            if uniq.shape[0] < patches.shape[0]:
                return cls.from_patches(uniq, patch_size, image.shape[0], counts)
        return cls.from_patches(patches, patch_size, image.shape[0])

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
                   for t in (self.patches, self.log_counts, self.sq_norms))

    def to(self, device: torch.device | str) -> "PatchIndex":
        """A copy on another device (self when already there)."""
        if self.patches.device == torch.device(device):
            return self
        return PatchIndex(self.patches.to(device), self.log_counts.to(device),
                          self.sq_norms.to(device), self.patch_size, self.channels)

    def mean(self) -> torch.Tensor:
        """The multiplicity-weighted mean patch, shape (D,): the denoiser's output at a = 0."""
        w = torch.softmax(self.log_counts, 0)
        return w @ self.patches
