"""MGA-CLAP (multi-grained contrastive language-audio pre-training) for Hugging Face Transformers.

Importing the package registers the classes with the transformers Auto classes, so that
`AutoModel.from_pretrained(folder)` works without `trust_remote_code` when the package is installed. Saved folders
also carry the code (`auto_map`) for users who do not install it.
"""

from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoProcessor
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_mgaclap import MGAClapConfig
from .feature_extraction_mgaclap import MGAClapFeatureExtractor
from .modeling_mgaclap import MGAClapModel, MGAClapPreTrainedModel, sparsemax
from .pipeline_mgaclap import TASK, MGAClapZeroShotAudioEventDetectionPipeline
from .processing_mgaclap import MGAClapProcessor

AutoConfig.register(MGAClapConfig.model_type, MGAClapConfig, exist_ok=True)
AutoModel.register(MGAClapConfig, MGAClapModel, exist_ok=True)
AutoFeatureExtractor.register(MGAClapConfig, MGAClapFeatureExtractor, exist_ok=True)
AutoProcessor.register(MGAClapConfig, MGAClapProcessor, exist_ok=True)
# `pipeline("zero-shot-audio-event-detection", ...)`; `pipe.save_pretrained` writes it into config.json.
PIPELINE_REGISTRY.register_pipeline(
    TASK, pipeline_class=MGAClapZeroShotAudioEventDetectionPipeline, pt_model=AutoModel, type="multimodal"
)

# `save_pretrained` writes `auto_map` and copies these modules next to the weights.
MGAClapConfig.register_for_auto_class()
MGAClapModel.register_for_auto_class("AutoModel")
MGAClapFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
MGAClapProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "MGAClapConfig",
    "MGAClapFeatureExtractor",
    "MGAClapModel",
    "MGAClapPreTrainedModel",
    "MGAClapProcessor",
    "sparsemax",
]
