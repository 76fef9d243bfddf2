"""The Hub: publishing a model with its code, pipeline, endpoint handler and card (`publish`), model cards
(`model_card`), the converter of the official checkpoints (`convert_original_checkpoint`) and the Inference
Endpoints entry point copied into repositories as `handler.py` (`endpoint_entry`)."""

from .publish import custom_pipelines_entry, default_model_card, push_model_to_hub, save_for_hub

__all__ = ["custom_pipelines_entry", "default_model_card", "push_model_to_hub", "save_for_hub"]
