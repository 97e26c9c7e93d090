"""Models: C4 (MNIST), EfficientNet-Lite0/Lite2 (ImageNet), the bilateral-filter defence, user models.

Every model takes (B, C, H, W) images in [0, 1] and returns (B, K) logits; normalisation lives inside.
``load_model("c4")`` gives a ready model in eval mode; ``model_info(name)`` tells its input size, classes,
source and measured accuracy; ``smoothadv models`` lists them. A :class:`ModelSpec` names any model with
its input (size, channels, normalisation) once, for every command.
"""

from __future__ import annotations

from smoothadv.models.accuracy import measure_accuracy
from smoothadv.models.c4 import C4
from smoothadv.models.defenses import BilateralDefense
from smoothadv.models.efficientnet_lite import EfficientNetLite, efficientnet_lite
from smoothadv.models.layers import Conv2dSame, Normalize, Preprocessed
from smoothadv.models.spec import ModelSpec
from smoothadv.models.zoo import Accuracy, ModelInfo, known_models, list_models, load_model, model_info

__all__ = [
    "Accuracy",
    "BilateralDefense",
    "C4",
    "Conv2dSame",
    "EfficientNetLite",
    "ModelInfo",
    "ModelSpec",
    "Normalize",
    "Preprocessed",
    "efficientnet_lite",
    "known_models",
    "list_models",
    "load_model",
    "measure_accuracy",
    "model_info",
]
