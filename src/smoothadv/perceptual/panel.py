"""Side-by-side panels of images, and magnification of image files into such panels (paper Fig. 1)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from smoothadv.core.errors import InputError, ShapeError
from smoothadv.core.images import read_image, save_image
from smoothadv.core.validation import make_output_dir
from smoothadv.perceptual.magnify import check_magnify_parameters, magnify_together


def save_panel(
    images: Sequence[torch.Tensor],
    titles: Sequence[str] | None,
    path: str | Path,
    *,
    columns: int | None = None,
    tile_inches: float = 2.5,
    dpi: int = 150,
) -> Path:
    """Draw images in a grid with a title above each and save it (PNG, PDF, ... by suffix).

    Args:
        images: (C, H, W) tensors in [0, 1], C = 1 (shown grey) or 3; sizes may differ.
        titles: one caption per image, or None.
        path: output file; parent folders are created.
        columns: images per row (default: all in one row).
        tile_inches: size of one tile in inches.
        dpi: resolution of raster outputs.

    Returns:
        the path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    images = list(images)
    if not images:
        raise InputError("save_panel needs at least one image.")
    if titles is not None and len(titles) != len(images):
        raise InputError(f"got {len(titles)} titles for {len(images)} images; give one per image or None.")
    for k, image in enumerate(images):
        if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] not in (1, 3):
            shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ShapeError(f"images[{k}] must be a (C, H, W) tensor with C = 1 or 3, got {shape}.")
    columns = len(images) if columns is None else max(1, min(int(columns), len(images)))
    rows = -(-len(images) // columns)
    title_space = 0.3 if titles is not None else 0.0
    figure = Figure(figsize=(tile_inches * columns, (tile_inches + title_space) * rows))
    FigureCanvasAgg(figure)
    for k, image in enumerate(images):
        axes = figure.add_subplot(rows, columns, k + 1)
        array = image.detach().float().clamp(0, 1).cpu()
        if array.shape[0] == 1:
            axes.imshow(array[0].numpy(), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        else:
            axes.imshow(array.permute(1, 2, 0).numpy(), interpolation="nearest")
        axes.set_axis_off()
        if titles is not None:
            axes.set_title(str(titles[k]), fontsize=9)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    return path


def magnify_panel(
    images: Sequence[torch.Tensor],
    titles: Sequence[str] | None,
    path: str | Path,
    *,
    columns: int | None = None,
    **magnify_kwargs,
) -> list[torch.Tensor]:
    """Magnify images with one shared stretch (:func:`magnify_together`) and save them as a panel.

    Args:
        images: (C, H, W) tensors in [0, 1].
        titles: one caption per image, or None.
        path: output file.
        columns: images per row (default one row).
        **magnify_kwargs: passed to :func:`smoothadv.perceptual.magnify`.

    Returns:
        the stretched magnified images, (C, H, W) in [0, 1].
    """
    magnified = magnify_together(images, **magnify_kwargs)
    save_panel(magnified, titles, path, columns=columns)
    return magnified


def magnify_files(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    panel_name: str = "panel.png",
    **magnify_kwargs,
) -> dict:
    """Magnify image files on one shared stretch; write each result and, for several inputs, a panel.

    Args:
        paths: input image files (any size; grey or colour).
        out_dir: output folder; ``<stem>_mag.png`` per input and ``panel_name`` (with 2 or more inputs).
        panel_name: file name of the side-by-side panel.
        **magnify_kwargs: ``beta``, ``spatial_sigma``, ``range_sigma``, ``radius``.

    Returns:
        ``{"inputs": [...], "outputs": [...], "panel": path or None, "parameters": {...}}``.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise InputError("give at least one image file to magnify.")
    check_magnify_parameters(**magnify_kwargs)
    out_dir = make_output_dir(out_dir)
    images = [read_image(p) for p in paths]
    magnified = magnify_together(images, **magnify_kwargs)
    outputs, used = [], set()
    for source, image in zip(paths, magnified, strict=True):
        name = f"{source.stem}_mag.png"
        suffix = 1
        while name in used:
            suffix += 1
            name = f"{source.stem}_{suffix}_mag.png"
        used.add(name)
        outputs.append(save_image(image, out_dir / name))
    panel = None
    if len(paths) > 1:
        panel = save_panel(magnified, [p.name for p in paths], out_dir / panel_name)
    return {
        "inputs": [str(p) for p in paths],
        "outputs": [str(p) for p in outputs],
        "panel": None if panel is None else str(panel),
        "parameters": {k: v for k, v in magnify_kwargs.items() if v is not None},
    }
