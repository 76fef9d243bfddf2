"""`training.build_model`: towers loaded from CLAP / MGA-CLAP checkpoints, with and without feature fusion."""

import pytest
import torch
from transformers import ClapAudioConfig, ClapAudioModel, ClapConfig, ClapModel

from transformers_mgaclap.training.contrastive import MODEL_INPUTS
from transformers_mgaclap.training.model import FUSION_PREFIXES, build_model

from conftest import TINY_AUDIO, TINY_TEXT, tiny_config

BUILD_KWARGS = dict(projection_dim=16, codebook_size=24, text_config=dict(TINY_TEXT), spec_augment=False)


@pytest.fixture(scope="module")
def clap_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clap")
    torch.manual_seed(0)
    config = ClapConfig(
        audio_config=dict(TINY_AUDIO), text_config=dict(TINY_TEXT, vocab_size=100), projection_dim=8
    )
    ClapModel(config).save_pretrained(folder)
    return folder


def _audio_encoder_state(folder, prefix="audio_model.audio_encoder."):
    state = ClapModel.from_pretrained(folder).state_dict()
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def test_audio_tower_loads_from_a_clap_checkpoint(clap_folder):
    model = build_model(audio_model_name_or_path=str(clap_folder), **BUILD_KWARGS)
    reference = _audio_encoder_state(clap_folder)
    own = model.audio_encoder.state_dict()
    shared = [k for k in reference if k in own]
    assert len(shared) > 20
    for key in shared:
        torch.testing.assert_close(own[key], reference[key], rtol=0, atol=0, msg=key)


def test_fusion_layers_are_added_fresh_on_an_unfused_checkpoint(clap_folder):
    model = build_model(audio_model_name_or_path=str(clap_folder), enable_fusion=True, **BUILD_KWARGS)
    assert model.config.enable_fusion and model.config.audio_config.enable_fusion
    own = model.audio_encoder.state_dict()
    fusion_keys = [k for k in own if k.startswith(FUSION_PREFIXES)]
    assert fusion_keys  # the fusion layers exist ...
    reference = _audio_encoder_state(clap_folder)
    assert not any(k in reference for k in fusion_keys)  # ... and are not in the checkpoint
    for key in reference:
        if key in own:
            torch.testing.assert_close(own[key], reference[key], rtol=0, atol=0, msg=key)


def test_fused_checkpoint_is_an_error(tmp_path):
    fused = tmp_path / "fused"
    ClapAudioModel(ClapAudioConfig(**TINY_AUDIO, enable_fusion=True)).save_pretrained(fused)
    with pytest.raises(ValueError, match="feature fusion"):
        build_model(audio_model_name_or_path=str(fused), **BUILD_KWARGS)


def test_audio_tower_loads_from_an_mgaclap_folder(tmp_path):
    from transformers_mgaclap import MGAClapModel

    folder = tmp_path / "mgaclap"
    torch.manual_seed(1)
    source = MGAClapModel(tiny_config())
    source.save_pretrained(folder)
    model = build_model(audio_model_name_or_path=str(folder), **BUILD_KWARGS)
    assert not model.config.enable_fusion
    own = model.audio_encoder.state_dict()
    for key, value in source.audio_encoder.state_dict().items():
        torch.testing.assert_close(own[key], value, rtol=0, atol=0, msg=key)


def test_is_longer_reaches_the_model():
    assert "is_longer" in MODEL_INPUTS
