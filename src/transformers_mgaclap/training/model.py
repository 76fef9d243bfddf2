"""Building an MGA-CLAP for training: pre-trained text and audio towers, the rest initialised as the paper."""

from ..configuration_mgaclap import MGAClapConfig
from ..modeling_mgaclap import MGAClapModel

# Parameters a fused audio tower has and an unfused HTS-AT checkpoint lacks (LAION-CLAP's fusion layers).
FUSION_PREFIXES = ("patch_embed.mel_conv2d.", "patch_embed.fusion_model.")


def build_model(
    text_model_name_or_path: str | None = None,
    audio_model_name_or_path: str | None = None,
    **config_kwargs,
) -> MGAClapModel:
    """An [`MGAClapModel`] with pre-trained towers where given, the rest initialised as the paper.

    Args:
        text_model_name_or_path (`str`, *optional*): a BERT-family encoder (Hub id or folder); its configuration
            becomes `text_config` and its weights load into the text tower.
        audio_model_name_or_path (`str`, *optional*): a transformers `ClapModel` / `ClapAudioModel` folder or repo
            (HTS-AT without fusion), or an MGA-CLAP folder; its audio configuration and encoder weights are used.
        config_kwargs: any other [`MGAClapConfig`] field (ablation switches, `codebook_size`, `enable_fusion`: the
            fusion layers are then freshly initialised on top of the unfused audio checkpoint, ...).
    """
    from transformers import AutoConfig, BertModel

    if text_model_name_or_path is not None:
        config_kwargs["text_config"] = AutoConfig.from_pretrained(text_model_name_or_path).to_dict()
    audio_state = None
    if audio_model_name_or_path is not None:
        audio_config, audio_state = _audio_tower(audio_model_name_or_path)
        config_kwargs["audio_config"] = audio_config
    model = MGAClapModel(MGAClapConfig(**config_kwargs))
    if text_model_name_or_path is not None:
        text_state = BertModel.from_pretrained(text_model_name_or_path).state_dict()
        model.text_model.load_state_dict({k: v for k, v in text_state.items() if not k.startswith("pooler.")})
    if audio_state is not None:
        # Keys of the replaced blocks' query, key, position bias and MLP are unused by locality-aware blocks.
        result = model.audio_encoder.load_state_dict(audio_state, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith(FUSION_PREFIXES)]
        if missing or (result.missing_keys and not model.config.enable_fusion):
            raise ValueError(
                f"Audio checkpoint {audio_model_name_or_path!r} lacks {(missing or result.missing_keys)[:5]} ..."
            )
    return model


def _audio_tower(name_or_path: str) -> tuple[dict, dict]:
    """(audio config dict, audio encoder state dict) of a CLAP or MGA-CLAP checkpoint."""
    from transformers import AutoConfig, AutoModel, ClapAudioModel, ClapModel

    config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=False)
    if config.model_type == "clap":
        model, prefix = ClapModel.from_pretrained(name_or_path), "audio_model.audio_encoder."
        audio_config = config.audio_config
    elif config.model_type == "clap_audio_model":
        model, prefix = ClapAudioModel.from_pretrained(name_or_path), "audio_encoder."
        audio_config = config
    elif config.model_type == MGAClapConfig.model_type:
        model, prefix = AutoModel.from_pretrained(name_or_path), "audio_encoder."
        audio_config = config.audio_config
    else:
        raise ValueError(
            f"{name_or_path!r} is a {config.model_type!r} model: expected a CLAP or MGA-CLAP checkpoint."
        )
    if audio_config.enable_fusion:
        raise ValueError(
            f"{name_or_path!r} uses feature fusion; start from an unfused HTS-AT (`--enable_fusion` adds the fusion "
            "layers, freshly initialised)."
        )
    state = {k[len(prefix) :]: v for k, v in model.state_dict().items() if k.startswith(prefix)}
    return audio_config.to_dict(), state


__all__ = ["build_model"]
