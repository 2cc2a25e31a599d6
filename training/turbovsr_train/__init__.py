"""TurboVSR training on PyTorch with diffusers' own LTX-Video modules (DESIGN §8)."""

from .export import TurboVSRSettings, export_checkpoint
from .model import TurboVSRTransformer, cross_norm

__all__ = ["TurboVSRSettings", "TurboVSRTransformer", "cross_norm", "export_checkpoint"]
