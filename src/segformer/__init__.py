"""SegFormer for the Hugging Face ecosystem: models, conversion, training, inference and Hub publishing."""

from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForSemanticSegmentation,
)

from .configuration_segformer import VARIANTS, SegFormerConfig
from .image_processing_segformer import SegFormerImageProcessor
from .modeling_segformer import (
    SegFormerBackbone,
    SegFormerForImageClassification,
    SegFormerForSemanticSegmentation,
    SegFormerModel,
    SegFormerPreTrainedModel,
)

__version__ = "0.1.0"

# Auto classes resolve our model type when this package is imported ...
AutoConfig.register(SegFormerConfig.model_type, SegFormerConfig, exist_ok=True)
for _auto_class, _model_class in (
    (AutoModel, SegFormerModel),
    (AutoModelForSemanticSegmentation, SegFormerForSemanticSegmentation),
    (AutoModelForImageClassification, SegFormerForImageClassification),
    (AutoBackbone, SegFormerBackbone),
):
    _auto_class.register(SegFormerConfig, _model_class, exist_ok=True)
    # ... and `save_pretrained` writes `auto_map` and copies the code, so they resolve without it.
    _model_class.register_for_auto_class(_auto_class.__name__)
SegFormerConfig.register_for_auto_class()
# The image processor likewise: `AutoImageProcessor` finds it here, and saved folders carry its code.
AutoImageProcessor.register(SegFormerConfig, SegFormerImageProcessor, exist_ok=True)
SegFormerImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = [
    "VARIANTS",
    "SegFormerBackbone",
    "SegFormerConfig",
    "SegFormerForImageClassification",
    "SegFormerForSemanticSegmentation",
    "SegFormerImageProcessor",
    "SegFormerModel",
    "SegFormerPreTrainedModel",
]
