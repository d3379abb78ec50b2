"""A second backbone, for tests only: CSDN's heads and text side over a plain convolution stack
instead of CLIP's ModifiedResNet. It is the "one new file" of adding a backbone (CONTRIBUTING.md):
a subclass that builds its own stems and trunk and declares its own tensor layout, so code written
for CLIP's layout (BatchNorm folding, CLIP and official key maps) steps aside or refuses."""

from __future__ import annotations

from torch import nn

from csdn.config import CSDNConfig
from csdn.model import CSDN

ARCHITECTURE = "test_plainconv"  # its preset: tests/architectures/test_plainconv.json


def _conv(inputs: int, outputs: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
    )


class PlainConvCSDN(CSDN):
    """Stems: two stride-2 convolutions (stride 4); trunk: ``sum(vision_layers)`` convolutions whose
    stages 2-4 stride like ResNet's, ending at ``feature_dim`` channels and stride ``downsample``."""

    layout = "plain-conv"
    int8_float_modules = ("stem_visible", "stem_infrared", "trunk.0")  # its own names: stems, first convolution

    @staticmethod
    def build_tower(config: CSDNConfig) -> tuple[nn.Module, nn.Module, nn.Module]:
        width = config.vision_width

        def stem() -> nn.Module:
            return nn.Sequential(_conv(3, width // 2, 2), _conv(width // 2, width, 2))

        layers, channels = [], width
        for stage, (blocks, stride) in enumerate(zip(config.vision_layers, (1, 2, 2, config.last_stride))):
            outputs = width * 4 * 2**stage  # 4x, 8x, 16x, 32x the stem's width, as ResNet's stages
            for block in range(blocks):
                layers.append(_conv(channels, outputs, stride if block == 0 else 1))
                channels = outputs
        return stem(), stem(), nn.Sequential(*layers)
