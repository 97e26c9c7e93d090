"""Options shared by the commands: the model (one set for every command that loads one), the device and
CPU threads, and argument types."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_model_options(parser: argparse.ArgumentParser, *, default: str | None = None,
                      with_preset: bool = True) -> None:
    """``--model`` and the options that describe a user model (see :class:`smoothadv.models.ModelSpec`)."""
    group = parser.add_argument_group(
        "model", "a registered model by name, or your own: a TorchScript file, package.module:factory with "
        "--weights, or a model spec file (.toml/.json) holding these options (options given here replace "
        "the file's)"
    )
    group.add_argument(
        "--model", required=default is None, default=default,
        help="registry name (smoothadv models), <name>+bilateral, TorchScript file, package.module:factory, "
        "or spec file" + (f" (default {default})" if default else ""),
    )
    group.add_argument("--weights",
                       help="weights of a module:factory model (.safetensors or a torch.save state dict)")
    group.add_argument("--input-size", type=positive_int, help="user model: input side in pixels")
    group.add_argument("--channels", type=int, choices=(1, 3), help="user model: input channels (default 3)")
    group.add_argument("--mean", help="user model: per-channel mean on [0,1] pixels, comma-separated, e.g. "
                       "0.485,0.456,0.406 (applied as (x - mean) / std inside the model)")
    group.add_argument("--std", help="user model: per-channel std, comma-separated, e.g. 0.229,0.224,0.225 "
                       "(--mean alone divides by 1, --std alone subtracts 0)")
    group.add_argument("--resize", type=positive_int,
                       help="user model: shorter side before the centre crop (default: the input size)")
    group.add_argument("--class-names", choices=("imagenet", "mnist"),
                       help="user model: its outputs are ImageNet or MNIST classes (names in the output)")
    if with_preset:
        group.add_argument("--preset", choices=("mnist", "imagenet"),
                           help="attack parameters (default: inferred from the model, and printed)")


#: The attacks, as the commands' help lists them (the registry holds them; this avoids importing it).
ATTACK_HELP = ("fgsm, ifgsm, pgd2, qpgd2, cw, scw, deepfool, ddn, sddn, fmn, sfmn, apgd2, sapgd2, spgd2, "
               "or ATTACK+guided|lowpass|dct for the smooth form of an L2 attack (ddn+lowpass)")
SMOOTHING_KINDS = ("guided", "lowpass", "dct")


def add_smoothing_option(parser: argparse.ArgumentParser) -> None:
    """``--smoothing``: run the smooth form of the named attacks."""
    parser.add_argument(
        "--smoothing", choices=SMOOTHING_KINDS,
        help="run the smooth form of each named attack instead: guided (the paper's image-guided smoothing: "
        "cw -> scw, pgd2 -> qpgd2, ddn -> sddn, ...), lowpass (Gaussian blur of the perturbation) or dct "
        "(low-frequency DCT subspace), with the preset's strength",
    )


def smooth_forms(attacks: str, smoothing: str | None) -> str:
    """``"ddn,cw"`` under ``--smoothing lowpass`` -> ``"ddn+lowpass,cw+lowpass"`` (unchanged without it)."""
    if smoothing is None:
        return attacks
    from smoothadv.attacks import ATTACKS

    return ",".join(ATTACKS.smooth_form(name, smoothing) for name in attacks.split(",") if name.strip())


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--threads``."""
    group = parser.add_argument_group("runtime")
    group.add_argument("--device", default="auto",
                       help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N or mps")
    group.add_argument("--threads", type=positive_int,
                       help="CPU threads for torch (default: the free cores of this machine; printed)")


def model_spec(args: argparse.Namespace):
    """The :class:`~smoothadv.models.ModelSpec` the model options describe."""
    from smoothadv.models.spec import ModelSpec, parse_floats

    return ModelSpec.parse(
        args.model,
        weights=args.weights,
        input_size=args.input_size,
        channels=args.channels,
        mean=None if args.mean is None else parse_floats(args.mean, "--mean"),
        std=None if args.std is None else parse_floats(args.std, "--std"),
        resize=args.resize,
        class_names=args.class_names,
        preset=getattr(args, "preset", None),
    )


def runtime(args: argparse.Namespace):
    """Resolve ``--device`` and set torch's threads from ``--threads``; returns the
    :class:`~smoothadv.core.runtime.Runtime`."""
    from smoothadv.core.runtime import set_runtime

    return set_runtime(args.device, args.threads)


def add_engine_options(parser: argparse.ArgumentParser, *, shared_data: bool = True) -> None:
    """``--engine`` and the Ray engine's ``--address``, ``--workers`` and (for commands that read image
    folders) ``--shared-data``."""
    group = parser.add_argument_group(
        "engine", "where the batches run: here (local), or on the workers of a Ray cluster (ray; needs "
        "pip install 'smoothadv[ray]'); either way this process alone writes --out, and a run started on "
        "one engine resumes on the other"
    )
    group.add_argument("--engine", choices=("local", "ray"), default="local", help="default local")
    group.add_argument("--address",
                       help="ray: the cluster's head, host:port (default: RAY_ADDRESS, else a Ray instance "
                       "started on this machine for this run)")
    group.add_argument("--workers", type=positive_int,
                       help="ray: worker processes (default: one per CPU of the cluster, or per GPU with "
                       "--device cuda, growing as nodes join)")
    if shared_data:
        group.add_argument("--shared-data", action="store_true",
                           help="ray: the --data folder is at the same path on every node; workers read "
                           "the images there instead of receiving them")


def runtime_and_engine(args: argparse.Namespace):
    """The driver's :class:`~smoothadv.core.runtime.Runtime` and the engine (None for the local one).

    With ``--engine ray`` the models run on the workers: ``--device`` is theirs (``auto``: CUDA when the
    cluster has GPUs), and this process keeps its copy of the models on the CPU.
    """
    from smoothadv.core.errors import ConfigError
    from smoothadv.core.runtime import set_runtime

    shared_data = getattr(args, "shared_data", False)
    if args.engine == "local":
        given = [flag for flag, value in (("--address", args.address), ("--workers", args.workers),
                                          ("--shared-data", shared_data)) if value]
        if given:
            raise ConfigError(f"{', '.join(given)} go(es) with --engine ray; add --engine ray or drop them.")
        return runtime(args), None
    from smoothadv.evaluation.ray_engine import RayEngine, import_ray

    import_ray()  # say the extra is missing before any model is loaded
    device = None if args.device == "auto" else args.device
    engine = RayEngine(args.address, workers=args.workers, device=device, shared_data=shared_data)
    return set_runtime("cpu", args.threads), engine
