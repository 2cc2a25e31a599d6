"""Training data: photos turned into (HR, LR) clip pairs.

A pseudo-video by smooth random affine motion over a still (`motion`, TurboVSR supplementary §6),
degraded to 1/scale by the Real-ESRGAN second-order model, a milder single-order one, or a clean
bicubic downscale (`degrade`); the trainer draws clips from a `ClipSource` (`clips`); `evalset`
writes the fixed evaluation folder `turbovsr eval` reads. Everything is driven by one seed.
"""

from .clips import (
    Clip,
    ClipSource,
    ClipSpec,
    FolderSource,
    MixedSource,
    SyntheticSource,
    make_clip,
    seconds_per_clip,
)
from .degrade import (
    PRESETS,
    BlurConfig,
    DegradeConfig,
    DegradeParams,
    StageConfig,
    degrade_frame,
)
from .images import DEFAULT_MAX_SHORT_SIDE, ImageFolder, load_image, read_split
from .motion import MotionConfig

__all__ = [
    "DEFAULT_MAX_SHORT_SIDE",
    "PRESETS",
    "BlurConfig",
    "Clip",
    "ClipSource",
    "ClipSpec",
    "DegradeConfig",
    "DegradeParams",
    "FolderSource",
    "ImageFolder",
    "MixedSource",
    "MotionConfig",
    "StageConfig",
    "SyntheticSource",
    "degrade_frame",
    "load_image",
    "make_clip",
    "read_split",
    "seconds_per_clip",
]
