"""Pixel graph of a guide image (paper section 3.1, eq. 5) and its normalised adjacency (section 3.3).

Every pixel is a vertex linked to its 4 or 8 grid neighbours (zero padding: no edges leave the image).
The weight of an edge is ``k_f(x_i, x_j)``, a feature kernel of the photometric distance between the two
pixels; the spatial kernel ``k_s`` is 1 on the neighbourhood and 0 elsewhere.

Edges are stored densely, one weight map per neighbour offset: ``weights[b, g, k, y, x]`` is the weight
of the edge between pixel ``(y, x)`` and pixel ``(y + dy_k, x + dx_k)``, and 0 where that neighbour lies
outside the image. Only half of the offsets are stored; the other half are the same edges seen from the
other end (the graph is undirected). This layout gives a matrix-free product with the adjacency matrix
on any device and a direct assembly of the sparse matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from smoothadv.core.validation import check_choice, check_image_batch, check_positive

#: Half of the neighbour offsets (dy, dx) of each neighbourhood; the other half are their negatives.
NEIGHBOUR_OFFSETS: dict[int, tuple[tuple[int, int], ...]] = {
    4: ((0, 1), (1, 0)),
    8: ((0, 1), (1, 0), (1, 1), (1, -1)),
}
KERNELS = ("laplacian", "gaussian")
CHANNEL_MODES = ("per_channel", "joint")


def shift(values: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Return ``out`` with ``out[..., y, x] = values[..., y + dy, x + dx]``, zero outside the image.

    Args:
        values: tensor of shape (..., H, W).
        dy, dx: offset in rows and columns (any sign).
    """
    height, width = values.shape[-2:]
    out = torch.zeros_like(values)
    if abs(dy) >= height or abs(dx) >= width:
        return out
    dst_y = slice(max(-dy, 0), height - max(dy, 0))
    dst_x = slice(max(-dx, 0), width - max(dx, 0))
    src_y = slice(max(dy, 0), height - max(-dy, 0))
    src_x = slice(max(dx, 0), width - max(-dx, 0))
    out[..., dst_y, dst_x] = values[..., src_y, src_x]
    return out


def feature_kernel(distance: torch.Tensor, kernel: str, sigma: float) -> torch.Tensor:
    """Feature kernel ``k_f`` of eq. (5) applied to photometric distances ``d >= 0``.

    ``gaussian``: ``exp(-d^2 / (2 sigma^2))``; ``laplacian``: ``exp(-d / sigma)``.
    """
    if kernel == "gaussian":
        return torch.exp(-(distance**2) / (2.0 * sigma**2))
    return torch.exp(-distance / sigma)


def grid_edges(height: int, width: int, offsets) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges of the grid graph.

    Returns:
        rows, cols: (E,) flat pixel indices ``y * width + x`` of the two ends of each edge.
        source: (E,) index of the edge's weight in a flattened ``(offset, y, x)`` map of shape
            (len(offsets), height, width) (the layout of ``PixelGraph.normalized_weights``).
    """
    ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    rows, cols, source = [], [], []
    for k, (dy, dx) in enumerate(offsets):
        inside = (ys + dy >= 0) & (ys + dy < height) & (xs + dx >= 0) & (xs + dx < width)
        y, x = ys[inside], xs[inside]
        rows.append(y * width + x)
        cols.append((y + dy) * width + (x + dx))
        source.append(k * height * width + y * width + x)
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(source)


@dataclass(frozen=True)
class PixelGraph:
    """Normalised adjacency ``D^{-1/2} W D^{-1/2}`` of one pixel graph per image (and per channel).

    Attributes:
        normalized_weights: (B, G, K, H, W) entries of the normalised adjacency, one map per offset in
            ``offsets``; G is 1 (one graph shared by all channels) or C (one graph per channel).
        offsets: the K neighbour offsets (dy, dx).
        degree: (B, G, H, W) degrees ``D = W 1`` of the unnormalised graph.
    """

    normalized_weights: torch.Tensor
    offsets: tuple[tuple[int, int], ...]
    degree: torch.Tensor

    @property
    def num_graphs(self) -> int:
        """G: 1 for a graph shared by all channels, C for one graph per channel."""
        return self.normalized_weights.shape[1]

    def adjacency_matvec(self, values: torch.Tensor) -> torch.Tensor:
        """Product with the normalised adjacency: ``(D^{-1/2} W D^{-1/2}) v`` for each image and channel.

        Args:
            values: (B, C, H, W); broadcast against the G graphs (G = 1 or C).

        Returns:
            (B, C, H, W).
        """
        out = torch.zeros_like(values)
        for k, (dy, dx) in enumerate(self.offsets):
            weight = self.normalized_weights[:, :, k]
            out = out + weight * shift(values, dy, dx) + shift(weight * values, -dy, -dx)
        return out


def build_graph(
    guide: torch.Tensor,
    *,
    neighbourhood: int = 4,
    kernel: str = "laplacian",
    sigma: float = 0.1,
    channels: str = "per_channel",
) -> PixelGraph:
    """Build the pixel graph of each guide image (eq. 5) and normalise it (section 3.3).

    Args:
        guide: (B, C, H, W) guide images ``x_o`` in [0, 1].
        neighbourhood: 4 or 8 grid neighbours.
        kernel: feature kernel, ``"laplacian"`` (``exp(-d / sigma)``) or ``"gaussian"``
            (``exp(-d^2 / (2 sigma^2))``).
        sigma: width of the feature kernel, in [0, 1] intensity units.
        channels: ``"per_channel"``: one graph per channel, each channel guiding itself (the authors'
            experiments); ``"joint"``: one graph per image with the Euclidean distance over all channels
            (eq. 5 as written).

    Returns:
        The normalised graph, on the device and in the dtype of ``guide``.
    """
    check_image_batch(guide, "guide")
    check_choice(neighbourhood, tuple(NEIGHBOUR_OFFSETS), "neighbourhood")
    check_choice(kernel, KERNELS, "kernel")
    check_choice(channels, CHANNEL_MODES, "channels")
    check_positive(sigma, "sigma")

    offsets = NEIGHBOUR_OFFSETS[neighbourhood]
    # Weights are computed in float64 (where the device has it): in float32 exp(-300 d^2) underflows to 0
    # for d > 0.54, yet such an edge can carry an O(1) entry of D^{-1/2} W D^{-1/2} when it is the
    # strongest edge of both of its pixels. The normalised graph is cast back to the guide's dtype.
    dtype = guide.dtype
    if guide.device.type != "mps":
        guide = guide.to(torch.float64)
    height, width = guide.shape[-2:]
    weights = []
    for dy, dx in offsets:
        diff = guide - shift(guide, dy, dx)
        distance = diff.pow(2).sum(dim=1, keepdim=True).sqrt() if channels == "joint" else diff.abs()
        weight = feature_kernel(distance, kernel, sigma) * _inside_mask(height, width, dy, dx, guide)
        weights.append(weight)
    weights = torch.stack(weights, dim=2)  # (B, G, K, H, W)

    degree = torch.zeros_like(weights[:, :, 0])
    for k, (dy, dx) in enumerate(offsets):
        degree = degree + weights[:, :, k] + shift(weights[:, :, k], -dy, -dx)
    # A pixel whose edges all underflow to 0 is isolated: its row of the normalised adjacency is 0.
    inv_sqrt_degree = torch.where(degree > 0, degree.clamp_min(torch.finfo(degree.dtype).tiny).rsqrt(), 0.0)
    normalized = torch.stack(
        [
            weights[:, :, k] * inv_sqrt_degree * shift(inv_sqrt_degree, dy, dx)
            for k, (dy, dx) in enumerate(offsets)
        ],
        dim=2,
    )
    return PixelGraph(normalized_weights=normalized.to(dtype), offsets=offsets, degree=degree.to(dtype))


def _inside_mask(height: int, width: int, dy: int, dx: int, like: torch.Tensor) -> torch.Tensor:
    """(H, W) mask, 1 where the neighbour at offset (dy, dx) lies inside the image."""
    ones = torch.ones(height, width, dtype=like.dtype, device=like.device)
    return shift(ones, dy, dx)
