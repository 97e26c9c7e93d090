"""Attack families (paper section 2.1), the result object, and the checks every attack runs first.

An :class:`Attack` is called like torchattacks (``result = attack(images, labels)``) but is structured like
Foolbox: the final :meth:`Attack.__call__` validates the inputs, runs pre-flight checks, calls the
subclass's :meth:`Attack.run`, quantises to 8 bits, and measures success and distortion on what it
returns. Subclasses write only ``run``.

Families:

* :class:`FixedDistortionAttack` ("target distortion": FGSM, I-FGSM, PGD2, qPGD2) takes an ``epsilon``.
* :class:`MinimizationAttack` ("target success" and "target optimality": DeepFool, C&W, sC&W) looks for the
  smallest perturbation that succeeds.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
from torch import nn

from smoothadv.attacks.losses import goal_reached
from smoothadv.core.errors import (
    ConfigError,
    InputError,
    ModelError,
    OptionError,
    PreflightWarning,
    ShapeError,
    warn,
)
from smoothadv.core.images import quantize_8bit
from smoothadv.core.validation import check_image_batch, check_keywords
from smoothadv.smoothing import describe_operator


@dataclass
class AttackResult:
    """Per-image outcome of an attack on a batch of B images.

    Attributes:
        adversarial: (B, C, H, W) adversarial images in [0, 1] (8-bit levels when quantised).
        success: (B,) bool, the model's prediction on ``adversarial`` meets the goal (p(x_a) != t).
        l2: (B,) L2 distortion ``||x_a - x_o||`` over all pixels and channels, on [0, 1] values.
        linf: (B,) L-inf distortion.
        iterations: (B,) iterations run for each image.
        gradient_evaluations: (B,) forward+backward passes through the model spent on each image.
        labels: (B,) true labels t. targets: (B,) target classes for targeted attacks, else None.
        predictions: (B,) the model's predictions on ``adversarial``.
        attack: attack name. parameters: its parameters. seconds: wall time of the whole call.
        clean_correct: (B,) bool, the model classified the clean image as ``labels`` (untargeted) or not as
            the target (targeted). An image it already gets wrong is never counted as a success.
        clean_predictions: (B,) the model's predictions on the clean images.
    """

    adversarial: torch.Tensor
    success: torch.Tensor
    l2: torch.Tensor
    linf: torch.Tensor
    iterations: torch.Tensor
    gradient_evaluations: torch.Tensor
    labels: torch.Tensor
    predictions: torch.Tensor
    attack: str
    parameters: dict[str, Any] = field(default_factory=dict)
    targets: torch.Tensor | None = None
    seconds: float = 0.0
    clean_correct: torch.Tensor | None = None
    clean_predictions: torch.Tensor | None = None

    @property
    def success_rate(self) -> float:
        """Fraction of images on which the attack succeeded."""
        return float(self.success.float().mean())

    def to_records(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per image (label, prediction, success, l2, linf, iterations, ...)."""
        records = []
        for i in range(len(self.success)):
            records.append({
                "attack": self.attack,
                "label": int(self.labels[i]),
                "target": None if self.targets is None else int(self.targets[i]),
                "clean_prediction": _item(self.clean_predictions, i, int),
                "clean_correct": _item(self.clean_correct, i, bool),
                "prediction": int(self.predictions[i]),
                "success": bool(self.success[i]),
                "l2": float(self.l2[i]),
                "linf": float(self.linf[i]),
                "iterations": int(self.iterations[i]),
                "gradient_evaluations": int(self.gradient_evaluations[i]),
            })
        return records


def _item(values: torch.Tensor | None, index: int, kind: type):
    return None if values is None else kind(values[index])


@dataclass
class CleanPass:
    """The forward pass on the clean images that every attack makes for its checks.

    Attributes:
        inputs: (B, C, H, W) the clean images; a leaf that requires grad when the graph is kept.
        logits: (B, K) the model's outputs on them, attached to the graph when it is kept.
    """

    inputs: torch.Tensor
    logits: torch.Tensor


@dataclass
class RunOutput:
    """What :meth:`Attack.run` returns: raw adversarial images and per-image work counters."""

    adversarial: torch.Tensor
    iterations: torch.Tensor
    gradient_evaluations: torch.Tensor


class Attack:
    """Base class: validation, pre-flight checks, 8-bit quantisation and measurement around :meth:`run`.

    Args:
        model: classifier mapping (B, C, H, W) images in [0, 1] to (B, K) logits, in eval mode.
        quantize: round adversarial images to 256 levels (``round(255 x) / 255``) and measure success
            and distortion after rounding, so that an example saved as PNG still fools the model.
    """

    #: Registry key of the attack; ``smooth_key`` is the key it records when given a smoother.
    key = "attack"
    smooth_key: str | None = None
    #: The paper's parameters per dataset preset (section 5.2.4), keyword arguments of ``__init__``.
    presets: dict[str, dict[str, Any]] = {}
    supports_targeted = True
    #: An L2 attack whose ``smoothing`` option takes any perturbation operator: the registry offers its
    #: smooth forms (``KEY+KIND``).
    smoothable = False
    #: Keep the autograd graph of the clean forward pass, for an attack whose first gradient is taken at
    #: the clean images (saves one forward pass per call; FGSM: 3 passes instead of 4).
    reuses_clean_graph = False

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:  # a misspelled option names the close ones, not a bare TypeError
            cls.__init__ = check_keywords(cls.__init__)
        if "Options" in cls.__dict__ and cls.Options is not None:
            cls.Options.__init__ = check_keywords(cls.Options.__init__)

    #: The attack's configuration, a frozen dataclass whose fields are the attack's keyword options (None
    #: for the attacks that take their options in ``__init__``). ``parameters()`` and ``name`` derive
    #: from it; its fields read as attributes (``attack.steps``).
    Options: ClassVar[type | None] = None

    def __init__(self, model: nn.Module, *, quantize: bool = True, **options):
        if not callable(model):
            raise ModelError(f"model must be a callable torch module, got {type(model).__name__}.")
        self.model = model
        self.quantize = quantize
        if self.Options is not None:
            try:
                self.options = self.Options(**options)
            except OptionError as error:  # name the attack the user called, not its options class
                raise OptionError(str(error).replace(f"{self.Options.__name__}()", f"{type(self).__name__}()")
                                  ) from None
        elif options:
            raise ConfigError(f"{type(self).__name__} takes no option {', '.join(map(repr, options))}.")

    def __getattr__(self, name: str):
        options = self.__dict__.get("options")
        if options is not None and name in {f.name for f in fields(options)}:
            return getattr(options, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @classmethod
    def option_names(cls) -> set[str]:
        """The keyword options ``make_attack`` accepts for this class."""
        names = {name for name, parameter in inspect.signature(cls.__init__).parameters.items()
                 if parameter.kind is not inspect.Parameter.VAR_KEYWORD} - {"self", "model"}
        if cls.Options is not None:
            names |= {f.name for f in fields(cls.Options)}
        return names

    @property
    def name(self) -> str:
        """The name results record, from the configuration.

        Given the guided smoothing, an attack records its smooth key (C&W: ``scw``); given another
        perturbation operator, ``key+kind`` (``ddn+lowpass``).
        """
        operator = getattr(self, "smoothing", None)
        if operator is None:
            return self.key
        if operator.kind == "guided" and self.smooth_key:
            return self.smooth_key
        return f"{self.key}+{operator.kind}"

    def parameters(self) -> dict[str, Any]:
        """Parameters recorded with every result: ``quantize`` and the options (operators described by
        their kind and parameters; options that are None left out)."""
        params: dict[str, Any] = {"quantize": self.quantize}
        if self.Options is not None:
            for f in fields(self.options):
                value = getattr(self.options, f.name)
                if value is not None:
                    params[f.name] = describe_operator(value) if f.name == "smoothing" else value
        return params

    def run(self, images: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None,
            clean: CleanPass) -> RunOutput:
        """Attack a validated batch; subclasses implement this. Must not modify ``images``.

        ``clean`` is the forward pass already made on ``images`` for the checks, reusable by the first step.
        """
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, labels: torch.Tensor | None = None,
                 targets: torch.Tensor | None = None) -> AttackResult:
        """Attack a batch and measure the outcome.

        Args:
            images: (B, C, H, W) clean images in [0, 1]. Never modified.
            labels: (B,) true labels; None uses the model's predictions on ``images``.
            targets: optional (B,) target classes for a targeted attack.

        Returns:
            An :class:`AttackResult`, measured after 8-bit quantisation when ``quantize`` is on.
        """
        start = time.perf_counter()
        adversarial, labels, targets, output, clean_logits = self._attack(images, labels, targets)
        with torch.no_grad():
            logits = self.model(adversarial.to(self._work_dtype(images)))
        clean_predictions = clean_logits.argmax(dim=1)
        clean_correct = ~goal_reached(clean_logits, labels, targets)
        difference = (adversarial - images).flatten(1)
        return AttackResult(
            adversarial=adversarial,
            success=goal_reached(logits, labels, targets) & clean_correct,
            clean_correct=clean_correct,
            clean_predictions=clean_predictions,
            l2=difference.norm(dim=1),
            linf=difference.abs().amax(dim=1),
            iterations=output.iterations,
            gradient_evaluations=output.gradient_evaluations,
            labels=labels,
            targets=targets,
            predictions=logits.argmax(dim=1),
            attack=self.name,
            parameters=self.parameters(),
            seconds=time.perf_counter() - start,
        )

    def generate(self, images: torch.Tensor, labels: torch.Tensor | None = None,
                 targets: torch.Tensor | None = None) -> torch.Tensor:
        """Attack a batch and return only the (B, C, H, W) adversarial images (quantised when ``quantize``).

        The same validation and attack as calling the attack, without the final forward pass that
        measures success: for pipelines that evaluate the images themselves (adversarial training,
        transfer to other models), like torchattacks' ``attack(images, labels)``.
        """
        return self._attack(images, labels, targets)[0]

    def _attack(self, images, labels, targets) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None,
                                                       RunOutput, torch.Tensor]:
        """Validate, run pre-flight checks, call :meth:`run`, clamp and quantise.

        Images of another float dtype than the model's (float64 into a float32 model) are attacked in the
        model's dtype; the adversarial images come back in the dtype of ``images``.
        """
        check_image_batch(images, "images")
        self._check_model_device(images)
        self.check_budget(images)
        given_dtype = images.dtype
        images = images.to(self._work_dtype(images))
        clean = self._clean_pass(images)
        num_classes = check_logits(clean.logits, len(images))
        if labels is None:
            labels = clean.logits.detach().argmax(dim=1)
        labels = check_labels(labels, len(images), num_classes, "labels", images.device)
        if targets is not None:
            if not self.supports_targeted:
                raise ConfigError(f"{self.name} is untargeted only; call it without targets.")
            targets = check_labels(targets, len(images), num_classes, "targets", images.device)
        preflight(self.model, clean.logits.detach())

        output = self.run(images, labels, targets, clean)
        adversarial = output.adversarial.detach().clamp(0.0, 1.0)
        if self.quantize:
            adversarial = self.quantize_images(adversarial, images)
        return adversarial.to(given_dtype), labels, targets, output, clean.logits.detach()

    def check_budget(self, images: torch.Tensor) -> None:
        """Reject a budget that makes no sense for images of this size (fixed-distortion attacks)."""

    def _work_dtype(self, images: torch.Tensor) -> torch.dtype:
        """The float dtype of the model's parameters (``images.dtype`` for a model without any)."""
        if isinstance(self.model, nn.Module):
            for parameter in self.model.parameters():
                if parameter.is_floating_point():
                    return parameter.dtype
        return images.dtype

    def _clean_pass(self, images: torch.Tensor) -> CleanPass:
        """Forward the clean images once; with the graph kept when the attack's first step can reuse it."""
        inputs = images.detach().requires_grad_(self.reuses_clean_graph)
        with torch.set_grad_enabled(self.reuses_clean_graph):
            logits = self.model(inputs)
        return CleanPass(inputs=inputs, logits=logits)

    def quantize_images(self, adversarial: torch.Tensor, originals: torch.Tensor) -> torch.Tensor:
        """Round to 8-bit levels (nearest); fixed-distortion attacks override this to keep their budget."""
        return quantize_8bit(adversarial)

    def _check_model_device(self, images: torch.Tensor) -> None:
        if isinstance(self.model, nn.Module):
            parameter = next(self.model.parameters(), None)
            if parameter is not None and parameter.device != images.device:
                raise ModelError(
                    f"model is on {parameter.device} but images are on {images.device}; "
                    "move one of them, e.g. model.to(images.device)."
                )


class FixedDistortionAttack(Attack):
    """Attacks that target a distortion ``epsilon`` (section 2.1.1) in a given ``norm``.

    ``epsilon_grids`` holds the epsilons of the evaluation protocol (section 5.1) per dataset preset.
    """

    norm = "l2"
    epsilon_grids: dict[str, list[float]] = {}

    def __init__(self, model: nn.Module, epsilon: float, *, quantize: bool = True, **options):
        super().__init__(model, quantize=quantize, **options)
        if not isinstance(epsilon, (int, float)) or not epsilon > 0 or epsilon == float("inf"):
            raise ConfigError(f"epsilon must be a finite number > 0; got {epsilon!r}.")
        if self.norm == "linf" and epsilon > 1:
            raise ConfigError(
                f"epsilon {epsilon:g} is an L-inf budget above 1, the whole [0, 1] pixel range: it allows "
                f"any image. Pixels are on [0, 1]; for a budget of {epsilon:g}/255 give {epsilon / 255:.4g}."
            )
        self.epsilon = float(epsilon)

    def check_budget(self, images: torch.Tensor) -> None:
        """An L2 budget may not exceed ``sqrt(C H W)``, the diameter of the [0, 1] image cube."""
        if self.norm == "l2":
            diameter = float(images[0].numel()) ** 0.5
            if self.epsilon > diameter:
                raise ConfigError(
                    f"epsilon {self.epsilon:g} exceeds {diameter:.4g}, the largest L2 distance between two "
                    f"{'x'.join(map(str, images.shape[1:]))} images in [0, 1]: it allows any image. L2 "
                    "budgets are on [0, 1] pixels over all of C x H x W (the paper's MNIST grid is 0.5-5)."
                )

    def parameters(self) -> dict[str, Any]:
        return {**super().parameters(), "epsilon": self.epsilon, "norm": self.norm}

    def quantize_images(self, adversarial: torch.Tensor, originals: torch.Tensor) -> torch.Tensor:
        """Nearest 8-bit rounding; where that would exceed ``epsilon``, round toward the original instead."""
        return quantize_within_budget(adversarial, originals, self.epsilon, self.norm)


class MinimizationAttack(Attack):
    """Attacks that look for the smallest successful perturbation (sections 2.1.2 and 2.1.3)."""


def quantize_within_budget(adversarial: torch.Tensor, originals: torch.Tensor, epsilon: float,
                           norm: str) -> torch.Tensor:
    """8-bit rounding that keeps the distortion within ``epsilon`` when the originals are 8-bit.

    Nearest rounding may push a perturbation past its budget by up to half a level per pixel. Rounding
    toward the original never increases any pixel's deviation (when ``originals`` lie on the 8-bit
    grid), so it is used where nearest rounding breaks the budget: per pixel for L-inf, per image for L2.
    """
    nearest = quantize_8bit(adversarial)
    scaled = adversarial * 255.0
    toward = torch.where(adversarial >= originals, torch.floor(scaled), torch.ceil(scaled)) / 255.0
    toward = torch.where((toward - originals) * (adversarial - originals) < 0, originals, toward)
    slack = 1e-6
    if norm == "linf":
        return torch.where((nearest - originals).abs() > epsilon + slack, toward, nearest)
    over = (nearest - originals).flatten(1).norm(dim=1) > epsilon * (1 + slack)
    return torch.where(over[:, None, None, None], toward, nearest)


def check_logits(logits: torch.Tensor, batch: int) -> int:
    """Check the model's output on the clean batch; return the number of classes K."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != batch:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ModelError(f"model must return logits of shape (B, K) = ({batch}, K); got {shape}.")
    if logits.shape[1] < 2:
        raise ModelError("model returns a single score per image; attacks need K >= 2 class logits.")
    if not bool(torch.isfinite(logits).all()):
        raise ModelError("model returned NaN or inf logits on the clean images.")
    return logits.shape[1]


def check_labels(labels, batch: int, num_classes: int, name: str, device: torch.device) -> torch.Tensor:
    """Return ``labels`` as a (B,) int64 tensor on ``device``; raise on wrong shape, dtype or range."""
    labels = torch.as_tensor(labels, device=device)
    if labels.dim() != 1 or labels.shape[0] != batch:
        raise ShapeError(
            f"{name} must have shape ({batch},), one class index per image; got {tuple(labels.shape)}."
        )
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise InputError(f"{name} must be integer class indices, got dtype {labels.dtype}.")
    labels = labels.long()
    if bool(((labels < 0) | (labels >= num_classes)).any()):
        raise InputError(
            f"{name} must lie in [0, {num_classes - 1}] (the model has {num_classes} classes); "
            f"got values in [{int(labels.min())}, {int(labels.max())}]."
        )
    return labels


def preflight(model: nn.Module, clean_logits: torch.Tensor) -> None:
    """Warn about a model in training mode and outputs that look like probabilities instead of logits."""
    if isinstance(model, nn.Module) and model.training:
        warn(
            "model is in training mode (dropout/batch-norm behave differently); call model.eval() first.",
            PreflightWarning)
    rows_sum_to_one = (clean_logits.sum(dim=1) - 1.0).abs().amax() < 1e-3
    if bool((clean_logits >= 0).all()) and bool(rows_sum_to_one):
        warn(
            "model outputs look like probabilities (non-negative, rows sum to 1); attacks need logits: "
            "remove the final softmax.",
            PreflightWarning)


def warn_if_zero_gradients(gradient: torch.Tensor, active: torch.Tensor | None = None) -> None:
    """Warn when the loss gradient is exactly zero for an image that is still being attacked."""
    zero = gradient.flatten(1).abs().amax(dim=1) == 0
    if active is not None:
        zero = zero & active
    if bool(zero.any()):
        warn(
            f"the loss gradient is exactly zero for {int(zero.sum())} image(s) on the first step: the model "
            "may mask gradients (non-differentiable layers, saturated outputs); results may understate risk.",
            PreflightWarning)


def input_gradient(model: nn.Module, images: torch.Tensor, loss_fn,
                   clean: CleanPass | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the (B,) per-image losses and their gradient w.r.t. the (B, C, H, W) images.

    ``clean``, when given with its graph, must be the forward pass at ``images``; it is reused instead of
    forwarding them again.
    """
    with torch.enable_grad():
        if clean is not None and clean.logits.requires_grad:
            images, logits = clean.inputs, clean.logits
        else:
            images = images.detach().requires_grad_(True)
            logits = model(images)
        losses = loss_fn(logits)
        (gradient,) = torch.autograd.grad(losses.sum(), images)
    return losses.detach(), gradient
