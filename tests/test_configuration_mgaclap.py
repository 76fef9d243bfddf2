"""MGAClapConfig: documented defaults equal the code, the paper's geometry, validation, serialisation."""

import dataclasses
import math
import re

import pytest
from transformers import AutoConfig, BertConfig, ClapAudioConfig

from transformers_mgaclap import MGAClapConfig


def documented_defaults() -> dict[str, str]:
    """`name (`type`, *optional*, defaults to X):` entries of the class docstring."""
    pattern = re.compile(r"^\s{8}(\w+) \(.*?defaults to `?([^`)]+?)`?\):", re.MULTILINE)
    return dict(pattern.findall(MGAClapConfig.__doc__))


def test_documented_defaults_equal_the_code():
    documented = documented_defaults()
    config = MGAClapConfig()
    own_fields = {f.name for f in dataclasses.fields(MGAClapConfig)} - {
        f.name for f in dataclasses.fields(MGAClapConfig.__mro__[1])
    }
    undocumented = own_fields - set(re.findall(r"^\s{8}(\w+) \(", MGAClapConfig.__doc__, re.MULTILINE))
    assert undocumented == set(), f"fields without documentation: {undocumented}"
    assert len(documented) >= 14
    for name, text in documented.items():
        value = getattr(config, name)
        expected = text.strip('"') if isinstance(value, str) else type(value)(eval(text))  # noqa: S307
        assert value == expected, f"{name}: documented {text}, code {value!r}"


def test_derived_affinity_scale_is_the_official_one():
    assert MGAClapConfig().codebook_affinity_scale == pytest.approx(1 / 32000)
    assert MGAClapConfig(projection_dim=256).codebook_affinity_scale == pytest.approx(
        1 / (math.sqrt(256) * 1000)
    )
    assert MGAClapConfig(codebook_affinity_scale=0.1).codebook_affinity_scale == 0.1


def test_default_towers_are_the_papers():
    config = MGAClapConfig()
    audio = config.audio_config
    assert isinstance(audio, ClapAudioConfig) and isinstance(config.text_config, BertConfig)
    assert (audio.spec_size, audio.patch_size, audio.window_size, audio.num_mel_bins) == (256, 4, 8, 64)
    assert list(audio.depths) == [2, 2, 6, 2] and list(audio.num_attention_heads) == [4, 8, 16, 32]
    assert (audio.patch_embeds_hidden_size, audio.hidden_size) == (96, 768)
    assert audio.drop_path_rate == 0.1 and not audio.enable_fusion
    assert (
        audio.hidden_dropout_prob == 0.0 and audio.attention_probs_dropout_prob == 0.0
    )  # official drop rates
    bert = BertConfig()  # bert-base-uncased geometry
    assert config.text_config.to_dict() == bert.to_dict()
    assert config.num_audio_frames == 32


def test_partial_audio_dict_keeps_paper_settings():
    config = MGAClapConfig(audio_config={"depths": [2, 2, 2, 2]})
    assert config.audio_config.drop_path_rate == 0.1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"aggregator": "attention"}, "aggregator"),
        ({"codebook_pooling": "min"}, "codebook_pooling"),
        ({"codebook_activation": "relu"}, "codebook_activation"),
        ({"loss": "triplet"}, "loss"),
        ({"hard_negative_variant": "x"}, "hard_negative_variant"),
        ({"num_locality_aware_blocks": 13}, "num_locality_aware_blocks"),
        ({"temperature_init": 0.0}, "temperature_init"),
        ({"hard_negative_gamma": -1.0}, "hard_negative_gamma"),
        ({"audio_config": {"hidden_size": 512}}, "hidden_size"),
        ({"audio_config": {"enable_fusion": True}}, "fusion"),
    ],
)
def test_invalid_values_raise(overrides, message):
    with pytest.raises(ValueError, match=message):
        MGAClapConfig(**overrides)


def test_round_trip_and_auto_config(tmp_path):
    config = MGAClapConfig(codebook_size=128, aggregator="mean", num_locality_aware_blocks=2, loss="clap")
    config.save_pretrained(tmp_path)
    reloaded = AutoConfig.from_pretrained(tmp_path)
    assert type(reloaded) is MGAClapConfig
    for name in (
        "codebook_size",
        "aggregator",
        "num_locality_aware_blocks",
        "loss",
        "codebook_affinity_scale",
    ):
        assert getattr(reloaded, name) == getattr(config, name)
    assert reloaded.audio_config.to_dict() == config.audio_config.to_dict()
    assert reloaded.text_config.to_dict() == config.text_config.to_dict()


def test_fusion_switch_round_trips_and_is_the_only_way_in(tmp_path):
    config = MGAClapConfig(enable_fusion=True)
    assert config.audio_config.enable_fusion and config.audio_config.fusion_type == "aff_2d"
    config.save_pretrained(tmp_path)
    reloaded = MGAClapConfig.from_pretrained(tmp_path)
    assert reloaded.enable_fusion and reloaded.audio_config.enable_fusion
    assert reloaded.audio_config.fusion_type == "aff_2d"
    with pytest.raises(ValueError, match="enable_fusion=True on MGAClapConfig"):
        MGAClapConfig(audio_config={"enable_fusion": True})


def test_max_text_length_defaults_to_the_official_limit_and_is_bounded():
    assert MGAClapConfig().max_text_length == 30
    assert MGAClapConfig(max_text_length=None).max_text_length is None
    for bad in (2, 513):  # fewer than [CLS] word [SEP]; more than BERT's 512 positions
        with pytest.raises(ValueError, match="max_text_length"):
            MGAClapConfig(max_text_length=bad)
