"""MGA-CLAP (multi-grained contrastive language-audio pre-training) for Hugging Face Transformers.

Importing the package registers the classes with the transformers Auto classes, so that
`AutoModel.from_pretrained(folder)` works without `trust_remote_code` when the package is installed, and registers the
`zero-shot-audio-event-detection` pipeline. Saved folders also carry the code (`auto_map`) for users who do not
install it.

The flat modules here are the Hub-copied core (they import only each other, torch, numpy, transformers and
huggingface_hub); the subpackages group the rest by role: `data`, `training`, `evaluation`, `extensions`, `hub`.
"""

from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoProcessor
from transformers.pipelines import PIPELINE_REGISTRY

from .audio_input import AudioInputError, load_audio, open_audio
from .configuration_mgaclap import MGAClapConfig
from .embedding import embed_audio, embed_text
from .feature_extraction_mgaclap import MGAClapFeatureExtractor
from .modeling_mgaclap import MGAClapModel, MGAClapPreTrainedModel, sparsemax
from .pipeline_mgaclap import TASK, MGAClapZeroShotAudioEventDetectionPipeline
from .processing_mgaclap import MGAClapProcessor, post_process_sound_event_detection
from .sound_event_detection import detect_sound_events
from .temporal_relations import ground_relations, parse_relation

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
    "AudioInputError",
    "MGAClapConfig",
    "MGAClapFeatureExtractor",
    "MGAClapModel",
    "MGAClapPreTrainedModel",
    "MGAClapProcessor",
    "MGAClapZeroShotAudioEventDetectionPipeline",
    "detect_sound_events",
    "embed_audio",
    "embed_text",
    "ground_relations",
    "load_audio",
    "open_audio",
    "parse_relation",
    "post_process_sound_event_detection",
    "sparsemax",
]
