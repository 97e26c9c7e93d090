"""The paper's perceptual figures: Fig. 1 (magnified adversarial examples) and Fig. 4 (MAD, sC&W vs C&W).

* :func:`figure1` attacks one image with the six attacks of the paper (FGSM, I-FGSM, PGD2, C&W, qPGD2,
  sC&W), magnifies the original and every adversarial example with ONE shared stretch
  (:func:`~smoothadv.perceptual.magnify_together`, Appendix 1 eq. 22) and saves them as one panel.
* :func:`figure4` attacks every correctly classified image with C&W and sC&W, scores both adversarial
  examples with MAD (section 5.1) and draws the per-image scatter on log-log axes with the diagonal;
  :func:`fraction_lower` is the share of images where sC&W's MAD is the lower one (paper: 93%).

C&W and sC&W are slow on ImageNet-sized images on a CPU, so both figures default to reduced settings
(:data:`REDUCED_CW`: 5 binary-search steps of 50 iterations instead of 9 x 100); every result records the
settings it used. :func:`figure1_for_model` and :func:`figure4_for_model` load a model and its default
data by name (what the ``smoothadv figure`` command calls).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from smoothadv.attacks import ATTACKS, make_attack
from smoothadv.core.errors import ConfigError, InputError, ShapeError
from smoothadv.core.images import quantize_8bit, read_image
from smoothadv.core.validation import check_choice, make_output_dir
from smoothadv.experiments.defaults import default_dataset, preset_for_model
from smoothadv.models.spec import ModelSpec
from smoothadv.perceptual.mad import SCALES, default_upsample, mad_batch
from smoothadv.perceptual.magnify import magnify_together
from smoothadv.perceptual.panel import save_panel
from smoothadv.report import write_records_csv

#: Reduced C&W / sC&W settings used by default in both figures (the paper's experiments: 9 x 100).
REDUCED_CW: dict[str, int] = {"binary_search_steps": 5, "steps": 50}
#: The attacks of Fig. 1, in display order.
FIGURE1_ATTACKS: tuple[str, ...] = ("fgsm", "ifgsm", "pgd2", "cw", "qpgd2", "scw")


@dataclass
class Figure1Result:
    """What :func:`figure1` drew.

    Attributes:
        path: the panel file written.
        label: class the attacks were run against (true label, or the model's prediction).
        prediction: the model's prediction on the clean image.
        attacks: per attack ``{"attack", "l2", "linf", "success", "prediction", "seconds"}``.
        titles: captions of the panel tiles, in order.
        settings: preset and C&W/sC&W overrides used.
        magnified: the stretched magnified tiles (C, H, W), original first.
    """

    path: Path
    label: int
    prediction: int
    attacks: list[dict[str, Any]]
    titles: list[str]
    settings: dict[str, Any]
    magnified: list[torch.Tensor] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the image tensors)."""
        return {"figure": "figure1", "path": str(self.path), "label": self.label,
                "prediction": self.prediction, "attacks": self.attacks, "titles": self.titles,
                "settings": self.settings}


@dataclass
class Figure4Result:
    """What :func:`figure4` measured and drew.

    Attributes:
        path: scatter plot file. table: per-image CSV file (None when not written).
        records: per image ``{"id", "label", "mad_cw", "mad_scw", "l2_cw", "l2_scw", "success_cw",
            "success_scw", "mad_cw_equal_l2", "l2_cw_equal_l2"}``.
        fraction_scw_lower: share of the scored images (both attacks successful) where sC&W's MAD is lower.
        fraction_scw_lower_equal_l2: the same share at equal distortion: C&W's perturbation rescaled so
            that its 8-bit image has sC&W's L2 distortion (:func:`rescale_to_l2`).
        comparison, comparison_equal_l2: :func:`compare_scores` of the scored images (lower / tied /
            higher), without and with the rescaling.
        scored: number of images in that fraction. attacked: images attacked (correctly classified).
        skipped_misclassified: images left out because the model got them wrong.
        scale: MAD scale. settings: attack settings. seconds: wall time.
    """

    path: Path
    table: Path | None
    records: list[dict[str, Any]]
    fraction_scw_lower: float
    fraction_scw_lower_equal_l2: float
    comparison: dict[str, int]
    comparison_equal_l2: dict[str, int]
    scored: int
    attacked: int
    skipped_misclassified: int
    scale: str
    settings: dict[str, Any]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {"figure": "figure4", "path": str(self.path),
                "table": None if self.table is None else str(self.table),
                "fraction_scw_lower": self.fraction_scw_lower,
                "fraction_scw_lower_equal_l2": self.fraction_scw_lower_equal_l2,
                "comparison": self.comparison, "comparison_equal_l2": self.comparison_equal_l2,
                "scored": self.scored,
                "attacked": self.attacked, "skipped_misclassified": self.skipped_misclassified,
                "scale": self.scale, "settings": self.settings, "seconds": self.seconds,
                "records": self.records}


def _steps(cw_overrides: Mapping[str, Any] | None) -> str:
    options = dict(REDUCED_CW) if cw_overrides is None else {**REDUCED_CW, **cw_overrides}
    return f"{options['binary_search_steps']} x {options['steps']} iterations"


def _attack_overrides(name: str, cw_overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(cw_overrides or {}) if name in ("cw", "scw") else {}


def _check_single_image(image: torch.Tensor) -> torch.Tensor:
    if not isinstance(image, torch.Tensor):
        raise InputError(f"image must be a (C, H, W) torch.Tensor in [0, 1], got {type(image).__name__}.")
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ShapeError(f"image must have shape (C, H, W) with C = 1 or 3, got {tuple(image.shape)}.")
    if not image.is_floating_point() or float(image.min()) < 0 or float(image.max()) > 1:
        raise InputError("image must be floating point with values in [0, 1]; use x.float() / 255.")
    return image


def figure1(
    model: nn.Module,
    image: torch.Tensor,
    path: str | Path,
    *,
    label: int | None = None,
    attacks: Sequence[str] = FIGURE1_ATTACKS,
    preset: str = "imagenet",
    cw_overrides: Mapping[str, Any] | None = None,
    columns: int = 4,
    **magnify_kwargs,
) -> Figure1Result:
    """Paper Fig. 1: the original, its magnification and the magnified adversarial examples, one stretch.

    Fixed-distortion attacks (FGSM, I-FGSM, PGD2, qPGD2) run at the preset's epsilon; C&W and sC&W use
    ``cw_overrides`` on top of the preset (default :data:`REDUCED_CW`). All magnified tiles share one
    min-max stretch, so their noise levels compare directly.

    Args:
        model: classifier taking (B, C, H, W) images in [0, 1], returning logits.
        image: (C, H, W) clean image in [0, 1].
        path: panel file to write (PNG, PDF, ... by suffix).
        label: class to move away from; None uses the model's prediction on ``image``.
        attacks: attack names (see :func:`smoothadv.attacks.make_attack`).
        preset: ``"imagenet"`` or ``"mnist"`` parameters.
        cw_overrides: keyword overrides of C&W and sC&W; None means :data:`REDUCED_CW`.
        columns: tiles per row.
        **magnify_kwargs: passed to :func:`smoothadv.perceptual.magnify` (``spatial_sigma``, ``beta``, ...).

    Returns:
        :class:`Figure1Result`.
    """
    image = _check_single_image(image)
    attacks = list(attacks)
    if not attacks:
        raise InputError("give at least one attack for figure 1.")
    cw_overrides = dict(REDUCED_CW) if cw_overrides is None else dict(cw_overrides)
    batch = image.unsqueeze(0)
    with torch.no_grad():
        prediction = int(model(batch).argmax(1)[0])
    target = prediction if label is None else int(label)
    labels = torch.tensor([target])
    adversarials, rows = [], []
    for name in attacks:
        attack = make_attack(name, model, preset=preset, **_attack_overrides(name, cw_overrides))
        result = attack(batch, labels)
        adversarials.append(result.adversarial[0])
        rows.append({"attack": name, "l2": float(result.l2[0]), "linf": float(result.linf[0]),
                     "success": bool(result.success[0]), "prediction": int(result.predictions[0]),
                     "seconds": float(result.seconds)})
    magnified = magnify_together([image, *adversarials], **magnify_kwargs)
    titles = ["original", "magnified original"] + [
        f"{ATTACKS.label(r['attack'])}: L2 {r['l2']:.2f}, {'fooled' if r['success'] else 'failed'}"
        for r in rows
    ]
    tiles = [image, *magnified]
    written = save_panel(tiles, titles, path, columns=columns, tile_inches=2.2, dpi=100)
    settings = {"preset": preset, "cw_overrides": cw_overrides, "attacks": attacks,
                "magnify": dict(magnify_kwargs)}
    return Figure1Result(path=written, label=target, prediction=prediction, attacks=rows, titles=titles,
                         settings=settings, magnified=list(magnified))


def fraction_lower(mad_scw: Sequence[float], mad_cw: Sequence[float]) -> float:
    """Share of images where sC&W's MAD is strictly lower than C&W's (paper: 93% of 1000 images).

    Args:
        mad_scw, mad_cw: per-image MAD scores of the two attacks, same length, finite.

    Raises:
        InputError: different lengths, no scores, or non-finite scores.
    """
    scw, cw = [float(v) for v in mad_scw], [float(v) for v in mad_cw]
    if len(scw) != len(cw):
        raise InputError(f"got {len(scw)} sC&W scores but {len(cw)} C&W scores; give one pair per image.")
    if not scw:
        raise InputError("no MAD scores to compare (no image was attacked successfully by both attacks).")
    if not all(math.isfinite(v) for v in scw + cw):
        raise InputError("MAD scores must be finite numbers.")
    return sum(s < c for s, c in zip(scw, cw, strict=True)) / len(scw)


def plot_mad_scatter(mad_cw: Sequence[float], mad_scw: Sequence[float], path: str | Path, *,
                     title: str | None = None) -> Path:
    """Scatter of per-image MAD, C&W on x and sC&W on y, log-log axes with the diagonal (paper Fig. 4).

    Points below the diagonal are images where sC&W is less perceptible. Scores of 0 (identical images)
    cannot sit on a log axis and are drawn at a small positive floor.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cw, scw = [float(v) for v in mad_cw], [float(v) for v in mad_scw]
    if len(cw) != len(scw) or not cw:
        raise InputError("plot_mad_scatter needs the same, non-zero number of C&W and sC&W scores.")
    positive = [v for v in cw + scw if v > 0]
    floor = min(positive) / 10 if positive else 1e-6
    cw = [max(v, floor) for v in cw]
    scw = [max(v, floor) for v in scw]
    low, high = min(cw + scw) / 1.5, max(cw + scw) * 1.5
    figure = Figure(figsize=(4.5, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    axes.plot([low, high], [low, high], color="grey", linewidth=1, zorder=1)
    axes.scatter(cw, scw, s=14, color="tab:blue", zorder=2)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlim(low, high)
    axes.set_ylim(low, high)
    axes.set_aspect("equal")
    axes.set_xlabel("MAD of C&W")
    axes.set_ylabel("MAD of sC&W")
    if title:
        axes.set_title(title, fontsize=9)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


def figure4(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    out_dir: str | Path,
    *,
    ids: Sequence[str] | None = None,
    preset: str = "imagenet",
    cw_overrides: Mapping[str, Any] | None = None,
    scale: str = "2010",
    upsample_to: int | None = None,
    batch_size: int = 4,
    name: str = "figure4",
    note: str | None = None,
) -> Figure4Result:
    """Paper Fig. 4: per-image MAD of sC&W against C&W on the correctly classified images.

    Args:
        model: classifier taking (B, C, H, W) images in [0, 1], returning logits.
        images: (N, C, H, W) clean images in [0, 1]; labels: (N,) true classes.
        out_dir: folder for ``<name>.png`` (scatter), ``<name>.csv`` and ``<name>.json`` (per-image scores).
        ids: N image names for the table (default their positions).
        preset: attack parameters; cw_overrides: C&W/sC&W overrides (None: :data:`REDUCED_CW`).
        scale: MAD scale, ``"2010"`` (the paper's, default) or ``"2011"``.
        upsample_to: resize before MAD (MAD needs images of at least 34 pixels a side).
        batch_size: images attacked at once.
        name: file stem of the outputs. note: extra caption text for the plot.

    Returns:
        :class:`Figure4Result`; the fraction counts only images both attacks fooled.
    """
    scale = str(scale)
    check_choice(scale, SCALES, "scale")
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ShapeError(f"images must be a (N, C, H, W) tensor, got {shape}.")
    if labels.shape != (images.shape[0],):
        raise ShapeError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}.")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}.")
    ids = [str(i) for i in range(len(images))] if ids is None else [str(i) for i in ids]
    if len(ids) != len(images):
        raise InputError(f"got {len(ids)} ids for {len(images)} images.")
    cw_overrides = dict(REDUCED_CW) if cw_overrides is None else dict(cw_overrides)
    start = time.perf_counter()
    with torch.no_grad():
        predictions = torch.cat([model(images[k:k + batch_size]).argmax(1)
                                 for k in range(0, len(images), batch_size)]) if len(images) else labels
    keep = (predictions == labels).nonzero().flatten().tolist()
    if not keep:
        raise InputError("the model classifies none of the images correctly; nothing to attack for Fig. 4.")
    attacks = {key: make_attack(key, model, preset=preset, **cw_overrides) for key in ("cw", "scw")}
    records = []
    for k in range(0, len(keep), batch_size):
        index = keep[k:k + batch_size]
        x, y = images[index], labels[index]
        results = {key: attack(x, y) for key, attack in attacks.items()}
        equal = rescale_to_l2(x, results["cw"].adversarial, results["scw"].l2)
        scores = {key: mad_batch(x, r.adversarial, scale=scale, upsample_to=upsample_to)
                  for key, r in results.items()}
        scores["cw_equal"] = mad_batch(x, equal, scale=scale, upsample_to=upsample_to)
        equal_l2 = (equal - x).flatten(1).norm(dim=1)
        for j, i in enumerate(index):
            records.append({
                "id": ids[i], "label": int(labels[i]),
                "mad_cw": scores["cw"][j].mad, "mad_scw": scores["scw"][j].mad,
                "l2_cw": float(results["cw"].l2[j]), "l2_scw": float(results["scw"].l2[j]),
                "success_cw": bool(results["cw"].success[j]), "success_scw": bool(results["scw"].success[j]),
                "mad_cw_equal_l2": scores["cw_equal"][j].mad, "l2_cw_equal_l2": float(equal_l2[j]),
            })
    both = [r for r in records if r["success_cw"] and r["success_scw"]]
    fraction = fraction_equal = float("nan")
    if both:
        fraction = fraction_lower([r["mad_scw"] for r in both], [r["mad_cw"] for r in both])
        fraction_equal = fraction_lower([r["mad_scw"] for r in both], [r["mad_cw_equal_l2"] for r in both])
    seconds = time.perf_counter() - start
    out_dir = Path(out_dir)
    ties = sum(r["mad_scw"] == r["mad_cw"] for r in both)
    caption = f"sC&W lower on {100 * fraction:.0f}% of {len(both)} images, {ties} tied (MAD {scale})"
    if note:
        caption = f"{note}\n{caption}"
    plot = plot_mad_scatter([r["mad_cw"] for r in both] or [r["mad_cw"] for r in records],
                            [r["mad_scw"] for r in both] or [r["mad_scw"] for r in records],
                            out_dir / f"{name}.png", title=caption)
    settings = {"preset": preset, "cw_overrides": cw_overrides, "upsample_to": upsample_to}
    result = Figure4Result(path=plot, table=out_dir / f"{name}.csv", records=records,
                           fraction_scw_lower=fraction, fraction_scw_lower_equal_l2=fraction_equal,
                           comparison=compare_scores(*_pairs(both, "mad_cw")),
                           comparison_equal_l2=compare_scores(*_pairs(both, "mad_cw_equal_l2")),
                           scored=len(both), attacked=len(keep),
                           skipped_misclassified=len(images) - len(keep), scale=scale, settings=settings,
                           seconds=seconds)
    write_records_csv(records, out_dir / f"{name}.csv")
    summary = _json_ready(result.to_dict())
    (out_dir / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return result


def rescale_to_l2(originals: torch.Tensor, adversarial: torch.Tensor, target_l2: torch.Tensor, *,
                  steps: int = 40) -> torch.Tensor:
    """The perturbation ``r = adversarial - originals`` scaled by ``s`` so that the 8-bit image
    ``round(255 clip(originals + s r)) / 255`` is at L2 distance ``target_l2`` from ``originals`` (as
    close as the 8-bit levels allow): the same direction at another distortion, measured on the image a
    PNG would hold. ``s`` is found per image by bisection (the rounded L2 grows with ``s``, in steps); the
    result need not fool the model.

    Shapes: (B, C, H, W), (B, C, H, W), (B,) -> (B, C, H, W).
    """
    perturbation = adversarial - originals
    shape = (-1, *([1] * (perturbation.dim() - 1)))
    target = target_l2.to(perturbation.dtype)
    norms = perturbation.flatten(1).norm(dim=1).clamp_min(1e-12)
    low, high = torch.zeros_like(norms), 4.0 * target / norms

    def rounded(scale: torch.Tensor) -> torch.Tensor:
        return quantize_8bit((originals + perturbation * scale.view(shape)).clamp(0.0, 1.0))

    for _ in range(steps):
        middle = (low + high) / 2
        above = (rounded(middle) - originals).flatten(1).norm(dim=1) > target
        high, low = torch.where(above, middle, high), torch.where(above, low, middle)
    candidates = [rounded(low), rounded(high)]
    gaps = [((c - originals).flatten(1).norm(dim=1) - target).abs() for c in candidates]
    return torch.where((gaps[0] <= gaps[1]).view(shape), candidates[0], candidates[1])


def _pairs(records: list[dict[str, Any]], cw_key: str) -> tuple[list[float], list[float]]:
    return [r["mad_scw"] for r in records], [r[cw_key] for r in records]


def compare_scores(mad_scw: Sequence[float], mad_cw: Sequence[float]) -> dict[str, int]:
    """How many images sC&W's MAD is lower than, equal to (ties, e.g. both 0: below MAD's detection
    threshold) and higher than C&W's."""
    pairs = list(zip(mad_scw, mad_cw, strict=True))
    return {"scw_lower": sum(s < c for s, c in pairs), "equal": sum(s == c for s, c in pairs),
            "cw_lower": sum(s > c for s, c in pairs)}


def _json_ready(summary: dict[str, Any]) -> dict[str, Any]:
    """NaN fractions (no image scored) become None: JSON has no NaN."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in summary.items()}


def _load_image_for(spec: ModelSpec, image: str | Path | None, index: int):
    if image is None and spec.is_user_model:
        raise ConfigError(f"{spec.model} is a user model, which has no default photos: give --image PATH.")
    if image is None:
        dataset = default_dataset(spec.model)
        if not 0 <= index < len(dataset):
            raise InputError(f"--index must be in [0, {len(dataset) - 1}], got {index}.")
        batch = dataset.batch([index])
        return batch.images[0], int(batch.labels[0]), batch.ids[0]
    info = spec.info()
    picture = read_image(image, channels=info.channels, size=spec.require_input_size(), resize=info.resize)
    return picture, None, str(image)


#: Where ``smoothadv figure`` writes by default (never the README's docs/figures, unless asked).
DEFAULT_FIGURE_DIR = "out/figures"


def figure1_for_model(model: str | ModelSpec = "efficientnet-lite0", *, image: str | Path | None = None,
                      index: int = 0, out_dir: str | Path = DEFAULT_FIGURE_DIR,
                      cw_overrides: Mapping[str, Any] | None = None,
                      device: str | torch.device = "cpu") -> dict[str, Any]:
    """Fig. 1 for a model: ``image`` (resized and cropped to the model's input) or the ``index``-th photo
    of a registered model's default dataset; writes ``<out_dir>/figure1.png``.

    Returns:
        :meth:`Figure1Result.to_dict` plus ``image`` and ``model``.
    """
    spec = ModelSpec.parse(model)
    picture, label, image_id = _load_image_for(spec, image, index)
    network = spec.load(device)
    out_dir = make_output_dir(out_dir)
    result = figure1(network, picture.to(device), out_dir / "figure1.png", label=label,
                     preset=preset_for_model(spec), cw_overrides=cw_overrides)
    return {**result.to_dict(), "image": image_id, "model": spec.display_name}


def figure4_for_model(model: str | ModelSpec = "efficientnet-lite0", *, limit: int | None = None,
                      scale: str = "2010", out_dir: str | Path = DEFAULT_FIGURE_DIR,
                      cw_overrides: Mapping[str, Any] | None = None,
                      device: str | torch.device = "cpu") -> dict[str, Any]:
    """Fig. 4 for a registered model on its default dataset (the first ``limit`` correctly classified
    images); writes ``figure4.png``, ``figure4.csv`` and ``figure4.json`` into ``out_dir``.
    """
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be >= 1, got {limit}.")
    spec = ModelSpec.parse(model)
    if spec.is_user_model:
        raise ConfigError(f"figure4 runs on a registered model's default photos, not on {spec.model}; "
                          "for your own model and images, `smoothadv evaluate --perceptual` scores MAD.")
    dataset = default_dataset(spec.model)
    network = spec.load(device)
    out_dir = make_output_dir(out_dir)
    batch = dataset.batch(list(range(len(dataset))))
    images, labels, ids = batch.images.to(device), batch.labels.to(device), list(batch.ids)
    if limit is not None:
        with torch.no_grad():
            correct = [i for i in range(len(images))
                       if int(network(images[i:i + 1]).argmax(1)[0]) == int(labels[i])][:limit]
        images, labels, ids = images[correct], labels[correct], [ids[i] for i in correct]
    upsample = default_upsample(*images.shape[-2:])
    result = figure4(network, images, labels, out_dir, ids=ids, preset=preset_for_model(spec),
                     cw_overrides=cw_overrides, scale=scale, upsample_to=upsample,
                     note=f"{spec.display_name}, C&W/sC&W {_steps(cw_overrides)}")
    payload = _json_ready(result.to_dict())
    return {**payload, "model": spec.display_name, "dataset": dataset.source, "limit": limit,
            "dataset_size": len(dataset)}
