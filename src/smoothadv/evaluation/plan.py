"""What an evaluation runs: the :class:`EvaluationPlan` (attacks, preset, epsilon grids, options, batch size,
seed, after-batch steps), validated once when it is built."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from smoothadv.attacks import ATTACKS, Attack, make_attack
from smoothadv.attacks.presets import check_preset
from smoothadv.core.errors import ConfigError, InputError, ShapeError
from smoothadv.core.validation import check_image_batch, check_keywords, check_positive_int
from smoothadv.data import ImageDataset
from smoothadv.perceptual.mad import default_upsample


def resolve_attacks(attacks: str | Sequence[str]) -> list[str]:
    """Normalise ``"fgsm,pgd2"`` or a list of names to registered attack keys (order kept, no repeats)."""
    names = attacks.split(",") if isinstance(attacks, str) else list(attacks)
    resolved: list[str] = []
    for name in names:
        if not str(name).strip():
            continue
        key = ATTACKS.resolve(name)
        if key not in resolved:
            resolved.append(key)
    if not resolved:
        raise ConfigError(f"give at least one attack among {', '.join(ATTACKS)}.")
    return resolved


def epsilon_grid(attack: str, preset: str,
                 epsilons: Mapping[str, Sequence[float]] | None) -> list[float | None]:
    """The epsilons ``attack`` runs at: its grid (ascending) for fixed-distortion attacks, ``[None]`` else."""
    spec = ATTACKS[attack]
    if not spec.fixed_distortion:
        if epsilons and attack in epsilons:
            raise ConfigError(f"{attack} minimises distortion itself; it takes no epsilon grid.")
        return [None]
    grid = epsilons[attack] if epsilons and attack in epsilons else spec.epsilon_grid(preset)
    values = sorted({float(e) for e in grid})
    if not values or any(not np.isfinite(e) or e <= 0 for e in values):
        raise ConfigError(f"epsilons of {attack} must be finite numbers > 0; got {list(grid)!r}.")
    return values


@dataclass
class EvaluationPlan:
    """What to run (the protocol of section 5.1); checked when built.

    Attributes:
        attacks: attack names (``"fgsm,ifgsm,pgd2,qpgd2,cw,scw"`` or a list), resolved to registry keys.
        preset: ``"mnist"`` or ``"imagenet"``: attack parameters and default epsilon grids.
        epsilons: ``{attack: [eps, ...]}`` replacing the preset's grid of fixed-distortion attacks.
        attack_options: ``{attack: {option: value}}`` overrides (e.g. fewer C&W steps).
        limit: use the first ``limit`` images.
        batch_size: images per attack batch (and per record write).
        seed: seed of ``torch.manual_seed`` (per batch, from the seed and the batch key).
        perceptual: compute the MAD score (2011 scale) of each successful adversarial example.
        mad_upsample: side images are upsampled to (nearest neighbour) before MAD; default: 4x for images
            smaller than MAD's 34-pixel minimum (MNIST 28x28 -> 112x112), else none.
        save_adversarial: keep successful adversarial images (8-bit, ``adversarial/*.npz``) for panels.
        grids: the epsilons each attack runs at (derived).
    """

    attacks: str | Sequence[str]
    preset: str = "mnist"
    epsilons: Mapping[str, Sequence[float]] | None = None
    attack_options: Mapping[str, Mapping[str, Any]] | None = None
    limit: int | None = None
    batch_size: int = 64
    seed: int = 0
    perceptual: bool = False
    mad_upsample: int | None = None
    save_adversarial: bool = True
    grids: dict[str, list[float | None]] = field(init=False)

    def __post_init__(self) -> None:
        check_preset(self.preset)
        check_positive_int(self.batch_size, "batch_size")
        if self.limit is not None:
            check_positive_int(self.limit, "limit")
        self.attacks = resolve_attacks(self.attacks)
        options = {}
        for name, values in (self.attack_options or {}).items():
            key = ATTACKS.resolve(name)
            if key not in self.attacks:
                raise ConfigError(
                    f"attack_options names {name!r}, which is not among the attacks {self.attacks}."
                )
            options[key] = dict(values)
        self.attack_options = options
        epsilons = {}
        for name, grid in (self.epsilons or {}).items():
            key = ATTACKS.resolve(name)
            if key not in self.attacks:
                raise ConfigError(f"epsilons names {name!r}, which is not among the attacks {self.attacks}.")
            epsilons[key] = grid
        self.epsilons = epsilons
        self.grids = {name: epsilon_grid(name, self.preset, self.epsilons) for name in self.attacks}

    def attack(self, name: str, model: nn.Module, epsilon: float | None) -> Attack:
        """The attack ``name`` at ``epsilon`` (None for minimisation attacks) with the plan's options."""
        options = dict(self.attack_options.get(name, {}))
        if epsilon is not None:
            options["epsilon"] = epsilon
        return make_attack(name, model, preset=self.preset, **options)

    def mad_upsample_for(self, image_shape: Sequence[int]) -> int | None:
        """The side MAD upsamples images of ``image_shape`` (C, H, W) to (None: no upsampling)."""
        if self.mad_upsample is None and self.perceptual:
            return default_upsample(*image_shape[1:])
        return self.mad_upsample

    def to_config(self) -> dict[str, Any]:
        """The plan's part of ``config.json``."""
        return {"attacks": self.attacks, "preset": self.preset, "epsilons": self.grids,
                "batch_size": self.batch_size, "seed": self.seed, "save_adversarial": self.save_adversarial}


EvaluationPlan.__init__ = check_keywords(EvaluationPlan.__init__)  # a misspelled field names the close ones


def as_dataset(data: Any, limit: int | None = None) -> ImageDataset:
    """An :class:`~smoothadv.data.ImageDataset`, or one built from an ``(images, labels[, ids])`` tuple
    (float images of any precision are stored as float32, the dtype of every dataset); the first ``limit``
    images.

    Raises:
        InputError / ShapeError / RangeError / NonFiniteError: malformed tuple, images that are not a
            finite (N, C, H, W) batch in [0, 1], or repeated ids.
    """
    if isinstance(data, (tuple, list)):
        if len(data) not in (2, 3):
            raise InputError("data must be a dataset or a tuple (images, labels) or (images, labels, ids).")
        images, labels = data[0], data[1]
        check_image_batch(images, "data images")
        images = images.float()
        labels = torch.as_tensor(labels).long().reshape(-1)
        if labels.numel() != images.shape[0]:
            raise ShapeError(
                f"{images.shape[0]} images but {labels.numel()} labels; give one label per image."
            )
        ids = [str(i) for i in data[2]] if len(data) == 3 else [f"{i:06d}" for i in range(len(labels))]
        if len(ids) != len(labels):
            raise ShapeError(f"{len(ids)} ids for {len(labels)} images; give one id per image.")
        data = ImageDataset(labels=labels, ids=ids, source=f"tensor of {len(labels)} images",
                            image_shape=tuple(images.shape[1:]), images=images)
    elif not isinstance(data, ImageDataset):
        raise InputError(
            "data must be a smoothadv.data.ImageDataset or a tuple (images, labels); "
            f"got {type(data).__name__}."
        )
    if len(set(data.ids)) != len(data.ids):
        raise InputError("image ids must be unique; records are keyed by them.")
    return data.head(limit)
