"""Conversion of SegFormer checkpoints between layouts: transformers 4.x/5.x, NVlabs/SegFormer `.pth`,
mmsegmentation MiT -> this package, and this package -> stock transformers or NVlabs' `mit_bX.pth`."""

from ..errors import ConversionError
from .convert import Conversion, convert, convert_checkpoint
from .sources import read_checkpoint
from .to_nvlabs import export_to_nvlabs
from .to_transformers import export_to_transformers

__all__ = [
    "Conversion",
    "ConversionError",
    "convert",
    "convert_checkpoint",
    "export_to_nvlabs",
    "export_to_transformers",
    "read_checkpoint",
]
