"""Loading models and their image processors by folder or Hub id (temporary: replaced on merge)."""

import torch

from .errors import InputError
from .image_processing_segformer import SegFormerImageProcessor
from .modeling_segformer import SegFormerForSemanticSegmentation

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def load_model(name_or_path, model_class=SegFormerForSemanticSegmentation, *, revision=None, token=None, device=None, dtype=None, **kwargs):
    try:
        loaded = model_class.from_pretrained(str(name_or_path), revision=revision, token=token, **kwargs)
    except OSError as error:
        raise InputError(f"Cannot load model {str(name_or_path)!r}: {error}") from None
    model = loaded[0] if isinstance(loaded, tuple) else loaded
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = DTYPES.get(dtype, dtype) or torch.float32
    model.to(device, dtype).eval()
    return loaded


def load_image_processor(name_or_path, *, revision=None, token=None) -> SegFormerImageProcessor:
    try:
        return SegFormerImageProcessor.from_pretrained(str(name_or_path), revision=revision, token=token)
    except OSError:
        return SegFormerImageProcessor()
