"""``smoothadv evaluate`` as one library call: models and data by name, evaluation, report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from smoothadv.core.errors import ConfigError
from smoothadv.data import load_image_folder, load_imagenet_samples, load_mnist
from smoothadv.evaluation.runner import EvaluationResult, evaluate
from smoothadv.experiments.defaults import batch_size_for, preset_for_model
from smoothadv.models import load_model, model_info
from smoothadv.report import write_report

DATASETS = ("mnist", "imagenet-samples")


def resolve_data(data: str, model_name: str, model: Any = None, *, limit: int | None = None):
    """The dataset named ``data`` prepared for ``model_name``.

    Args:
        data: ``mnist`` (test split), ``imagenet-samples`` (the 20 foolbox photos, resized for the
            model), or a folder of images (labelled by ``labels.csv``, else by the model's predictions).
        model_name: registry name or user spec (input size, channels and class names come from it).
        model: the loaded model (labels a folder without ``labels.csv``).
        limit: keep the first ``limit`` images.
    """
    info = model_info(model_name)
    if data == "mnist":
        dataset = load_mnist("test", limit=limit)
    elif data == "imagenet-samples":
        dataset = load_imagenet_samples(info.input_size or 224, resize=info.resize).head(limit)
    elif Path(data).expanduser().is_dir():
        if info.input_size is None:
            raise ConfigError(f"model {model_name!r} has no known input size; cannot prepare {data}.")
        dataset = load_image_folder(
            data,
            channels=info.channels,
            size=info.input_size,
            resize=info.resize,
            model=model,
            class_names=info.class_names(),
        ).head(limit)
    else:
        raise ConfigError(
            f"unknown data {data!r}: give mnist, imagenet-samples, or an existing image folder."
        )
    if tuple(dataset.image_shape[:1]) != (info.channels,) or (
        info.input_size is not None and tuple(dataset.image_shape[1:]) != (info.input_size, info.input_size)
    ):
        raise ConfigError(
            f"{data} holds images of shape {tuple(dataset.image_shape)} but {model_name} takes "
            f"({info.channels}, {info.input_size}, {info.input_size}); pick the matching data set."
        )
    return dataset


def run_evaluation(
    *,
    model: str,
    data: str,
    attacks: str | Sequence[str],
    out_dir: str | Path,
    preset: str | None = None,
    limit: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    epsilons: Mapping[str, Sequence[float]] | None = None,
    attack_options: Mapping[str, Mapping[str, Any]] | None = None,
    perceptual: bool = False,
    restart: bool = False,
    progress: bool = True,
    device: str = "cpu",
) -> tuple[EvaluationResult, dict[str, str]]:
    """Load a model and a dataset by name, run :func:`~smoothadv.evaluation.evaluate`, write the report.

    Args:
        model: registry name (``c4``, ``efficientnet-lite0``, ``c4+bilateral``, ...) or user spec.
        data: ``mnist``, ``imagenet-samples`` or an image folder (see :func:`resolve_data`).
        attacks: comma-separated names or a list.
        out_dir: output folder (resumed when it holds the same run).
        preset: attack parameters; default from the model (:func:`~.defaults.preset_for_model`).
        limit: first ``limit`` images. batch_size: default 100 for MNIST-sized images, 4 for ImageNet.
        seed, epsilons, attack_options, perceptual, restart, progress: see :func:`evaluate`.
        device: where the model runs.

    Returns:
        (the evaluation result, the report's file paths).
    """
    net = load_model(model, device)
    preset = preset or preset_for_model(model)
    dataset = resolve_data(data, model, net, limit=limit)
    if batch_size is None:
        batch_size = batch_size_for(preset)
    result = evaluate(
        net,
        dataset,
        attacks,
        out_dir,
        model_name=model,
        preset=preset,
        epsilons=epsilons,
        attack_options=attack_options,
        batch_size=batch_size,
        seed=seed,
        perceptual=perceptual,
        restart=restart,
        progress=progress,
        extra_config={"data_name": data},
    )
    files = write_report(result, title=f"smoothadv evaluation: {model} on {data}")
    return result, files
