"""transformers' vanilla CLAP built as the twin of an MGA-CLAP configuration, the peer of the speed benchmarks."""

import copy

from transformers import ClapConfig, ClapTextConfig

from transformers_mgaclap import MGAClapConfig


def clap_config(reference: MGAClapConfig) -> ClapConfig:
    """transformers' ClapConfig with the same HTS-AT (geometry and drop-path) and a text tower of the same size."""
    text = reference.text_config
    audio_config = copy.deepcopy(reference.audio_config)  # a ClapAudioConfig already: identical geometry
    audio_config.enable_fusion = False
    text_config = ClapTextConfig(
        vocab_size=text.vocab_size,
        hidden_size=text.hidden_size,
        num_hidden_layers=text.num_hidden_layers,
        num_attention_heads=text.num_attention_heads,
        intermediate_size=text.intermediate_size,
        hidden_act=text.hidden_act,
        hidden_dropout_prob=text.hidden_dropout_prob,
        attention_probs_dropout_prob=text.attention_probs_dropout_prob,
        max_position_embeddings=text.max_position_embeddings + 2,  # RoBERTa-style positions start at pad + 1
        type_vocab_size=text.type_vocab_size,
        layer_norm_eps=text.layer_norm_eps,
        pad_token_id=0,
    )
    return ClapConfig(
        text_config=text_config, audio_config=audio_config, projection_dim=reference.projection_dim
    )
