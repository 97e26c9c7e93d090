"""``smoothadv evaluate`` as one library call: models and data by name, evaluation, report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from smoothadv.core.errors import ConfigError
from smoothadv.core.validation import check_keywords
from smoothadv.data import load_image_folder, load_imagenet_samples, load_mnist
from smoothadv.evaluation.engine import Engine
from smoothadv.evaluation.runner import EvaluationResult, evaluate
from smoothadv.experiments.defaults import batch_size_for, resolve_preset
from smoothadv.models.spec import ModelSpec
from smoothadv.report import write_report

DATASETS = ("mnist", "imagenet-samples")


def resolve_data(data: str, model_name: str | ModelSpec, model: Any = None, *, limit: int | None = None,
                 lazy: bool = False):
    """The dataset named ``data`` prepared for a model.

    Args:
        data: ``mnist`` (test split), ``imagenet-samples`` (the 20 foolbox photos, resized for the
            model), or a folder of images (labelled by ``labels.csv``, else by the model's predictions).
        model_name: registry name, user model or :class:`ModelSpec` (input size, channels and class names
            come from it).
        model: the loaded model (labels a folder without ``labels.csv``).
        limit: keep the first ``limit`` images.
        lazy: check a folder's images now and read them again on demand, by absolute path (workers that
            share the folder read them themselves).
    """
    spec = ModelSpec.parse(model_name)
    model_name = spec.display_name
    info = spec.info()
    if data == "mnist":
        dataset = load_mnist("test", limit=limit)
    elif data == "imagenet-samples":
        dataset = load_imagenet_samples(info.input_size or 224, resize=info.resize).head(limit)
    elif Path(data).expanduser().is_dir():
        dataset = load_image_folder(
            data,
            channels=info.channels,
            size=spec.require_input_size(),
            resize=info.resize,
            model=model,
            class_names=info.class_names(),
            lazy=lazy,
            verify=lazy,
        ).head(limit)
    else:
        raise ConfigError(
            f"unknown data {data!r}: give {', '.join(DATASETS)}, or an existing image folder."
        )
    if tuple(dataset.image_shape[:1]) != (info.channels,) or (
        info.input_size is not None and tuple(dataset.image_shape[1:]) != (info.input_size, info.input_size)
    ):
        raise ConfigError(
            f"{data} holds images of shape {tuple(dataset.image_shape)} but {model_name} takes "
            f"({info.channels}, {info.input_size}, {info.input_size}); pick the matching data set."
        )
    return dataset


@check_keywords
def run_evaluation(
    *,
    model: str | ModelSpec,
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
    device: str | torch.device = "cpu",
    engine: Engine | str | None = None,
) -> tuple[EvaluationResult, dict[str, str]]:
    """Load a model and a dataset by name, run :func:`~smoothadv.evaluation.evaluate`, write the report.

    Args:
        model: registry name (``c4``, ``efficientnet-lite0``, ``c4+bilateral``, ...), user model, spec
            file or :class:`ModelSpec`.
        data: ``mnist``, ``imagenet-samples`` or an image folder (see :func:`resolve_data`).
        attacks: comma-separated names or a list.
        out_dir: output folder (resumed when it holds the same run).
        preset: attack parameters; default from the model (:func:`~.defaults.resolve_preset`).
        limit: first ``limit`` images. batch_size: default 100 for MNIST-sized images, 4 for ImageNet.
        seed, epsilons, attack_options, perceptual, restart, progress: see :func:`evaluate`.
        device: where this process's copy of the model runs (the local engine runs there).
        engine: ``"local"`` (default), ``"ray"`` or a :class:`~smoothadv.evaluation.ray_engine.RayEngine`.

    Returns:
        (the evaluation result, the report's file paths); ``result.config["preset_from"]`` says where the
        preset came from.
    """
    spec = ModelSpec.parse(model)
    if Path(data).expanduser().is_dir():
        spec.require_input_size()  # a folder is prepared for the model's input: say so before the preset
    preset, preset_from = resolve_preset(spec, preset)
    net = spec.load(device)
    dataset = resolve_data(data, spec, net, limit=limit, lazy=bool(getattr(engine, "shared_data", False)))
    if batch_size is None:
        batch_size = batch_size_for(preset)
    result = evaluate(
        net,
        dataset,
        attacks,
        out_dir,
        model_name=spec.display_name,
        preset=preset,
        epsilons=epsilons,
        attack_options=attack_options,
        batch_size=batch_size,
        seed=seed,
        perceptual=perceptual,
        restart=restart,
        progress=progress,
        engine=engine,
        extra_config={"data_name": data, "model_spec": spec.to_dict(), "preset_from": preset_from,
                      "labels_from_model": bool(getattr(dataset, "labels_from_model", False))},
    )
    files = write_report(result, title=f"smoothadv evaluation: {spec.display_name} on {data}")
    return result, files
