"""C4, the MNIST network of the paper (section 5.2.1): three convolutions and one dense layer.

The authors used cleverhans' basic CNN: conv 64 filters 8x8 stride 2 with "SAME" padding, conv 128 6x6
stride 2 "VALID", conv 128 5x5 stride 1 "VALID", each followed by ReLU, then a dense layer to 10 logits.
On 28x28 inputs the feature maps are 14x14x64, 5x5x128 and 1x1x128.
"""

from __future__ import annotations

import torch
from torch import nn

from smoothadv.core.errors import ShapeError
from smoothadv.models.layers import Conv2dSame


class C4(nn.Module):
    """The C4 convolutional network for 28x28 greyscale digits.

    Args:
        num_classes: number of output logits (10 for MNIST).

    Shape:
        (B, 1, 28, 28) pixels in [0, 1] -> (B, num_classes) logits.
    """

    input_size = 28

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = Conv2dSame(1, 64, kernel_size=8, stride=2)
        self.conv2 = nn.Conv2d(64, 128, kernel_size=6, stride=2)
        self.conv3 = nn.Conv2d(128, 128, kernel_size=5, stride=1)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise ShapeError(f"C4 takes (B, 1, 28, 28) images, got {tuple(x.shape)}.")
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.relu(self.conv3(x))
        return self.fc(x.flatten(1))
