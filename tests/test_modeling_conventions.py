"""MGAClapModel honours the conventions of a transformers model: what users and the library's tooling rely on.

Written for this model (a tiny configuration) and covering what transformers' common model checks cover: outputs,
tuples, attention switching, saving, dtype and meta-device loading, gradient checkpointing, initialisation,
batching and export.
"""

import collections
import logging

import numpy as np
import pytest
import torch
from accelerate import init_empty_weights
from transformers import ClapModel, pipeline
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.clap.modeling_clap import ClapOutput

from transformers_mgaclap import MGAClapFeatureExtractor, MGAClapModel, MGAClapProcessor
from transformers_mgaclap.modeling_mgaclap import MGAClapOutput

from conftest import TINY_AUDIO, audio_inputs, text_inputs, tiny_config, tiny_model


def eager_model(**overrides) -> MGAClapModel:
    """The tiny model with eager attention: BERT's SDPA path cannot return attention probabilities."""
    return tiny_model(attn_implementation="eager", **overrides)


def flatten(value) -> list[torch.Tensor]:
    """Every tensor of a (nested) output tuple, in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    return [tensor for item in value for tensor in flatten(item)]


# ---------------------------------------------------------------------------------------------------------------
# Hidden states and attentions (forward and get_*_features)
# ---------------------------------------------------------------------------------------------------------------


def test_text_features_return_berts_hidden_states_and_attentions():
    model, text = eager_model(), text_inputs(3)
    out = model.get_text_features(**text, output_hidden_states=True, output_attentions=True)
    reference = model.text_model(**text, output_hidden_states=True, output_attentions=True)
    length = text["input_ids"].shape[1]
    assert len(out.hidden_states) == model.config.text_config.num_hidden_layers + 1
    assert len(out.attentions) == model.config.text_config.num_hidden_layers
    assert out.attentions[0].shape == (3, 2, length, length)
    for ours, theirs in zip(
        out.hidden_states + out.attentions, reference.hidden_states + reference.attentions, strict=True
    ):
        torch.testing.assert_close(ours, theirs)


def test_audio_features_return_hidden_states_and_attentions_laid_out_as_clap_audio_model():
    model = eager_model()
    out = model.get_audio_features(**audio_inputs(2), output_hidden_states=True, output_attentions=True)
    clap = ClapModel._from_config(ClapModel.config_class(audio_config=dict(TINY_AUDIO))).eval()
    stock = clap.get_audio_features(
        input_features=audio_inputs(2)["input_features"].unsqueeze(1),
        output_hidden_states=True,
        output_attentions=True,
    )
    assert [h.shape for h in out.hidden_states] == [
        h.shape for h in stock.hidden_states
    ]  # (B, C, H, W) per stage
    # One attention map per Swin stage, as ClapAudioModel; the last stage ends with the locality-aware block.
    assert [a.shape for a in out.attentions] == [a.shape for a in stock.attentions[:-1]]
    assert all(torch.allclose(a.sum(-1), torch.ones(())) for a in out.attentions)
    final_grid = out.hidden_states[-1]  # (B, C, 8, 8): the tokens before the final LayerNorm
    assert final_grid.shape == (2, 64, 8, 8)


def test_forward_returns_both_towers_outputs_like_clap_output():
    model, text, audio = eager_model(), text_inputs(2), audio_inputs(2)
    out = model(**text, **audio, output_hidden_states=True, output_attentions=True)
    assert set(ClapOutput.__dataclass_fields__) <= set(MGAClapOutput.__dataclass_fields__)
    text_alone = model.get_text_features(**text, output_hidden_states=True, output_attentions=True)
    audio_alone = model.get_audio_features(**audio, output_hidden_states=True, output_attentions=True)
    for ours, alone in ((out.text_model_output, text_alone), (out.audio_model_output, audio_alone)):
        assert len(ours.hidden_states) == len(alone.hidden_states) and len(ours.attentions) == len(
            alone.attentions
        )
        for a, b in zip(flatten(ours.to_tuple()), flatten(alone.to_tuple()), strict=True):
            torch.testing.assert_close(a, b)


def test_configuration_flags_switch_the_outputs_on():
    model = eager_model(output_hidden_states=True, output_attentions=True)
    out = model(**text_inputs(2), **audio_inputs(2))
    assert out.text_model_output.hidden_states is not None and out.audio_model_output.attentions is not None
    plain = eager_model()(**text_inputs(2), **audio_inputs(2))
    assert plain.text_model_output.hidden_states is None and plain.audio_model_output.attentions is None


# ---------------------------------------------------------------------------------------------------------------
# return_dict=False
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["get_text_features", "get_audio_features", "forward"])
def test_return_dict_false_gives_the_same_tensors_as_a_tuple(method):
    model = eager_model()
    inputs = {
        "get_text_features": text_inputs(3),
        "get_audio_features": audio_inputs(2),
        "forward": {**text_inputs(2), **audio_inputs(2), "return_loss": True},
    }[method]
    flags = {"output_hidden_states": True, "output_attentions": True}
    as_dict = getattr(model, method)(**inputs, **flags)
    as_tuple = getattr(model, method)(**inputs, **flags, return_dict=False)
    assert isinstance(as_tuple, tuple)
    expected = flatten(as_dict.to_tuple())
    assert len(flatten(as_tuple)) == len(expected) > 3
    for a, b in zip(flatten(as_tuple), expected, strict=True):
        torch.testing.assert_close(a, b)


def test_config_return_dict_false_gives_tuples():
    model = tiny_model(return_dict=False)
    assert isinstance(model.get_text_features(**text_inputs(2)), tuple)
    assert isinstance(model.get_audio_features(**audio_inputs(2)), tuple)
    assert isinstance(model(**text_inputs(2), **audio_inputs(2)), tuple)
    assert isinstance(model.get_text_features(**text_inputs(2), return_dict=True), BaseModelOutputWithPooling)


# ---------------------------------------------------------------------------------------------------------------
# What the output fields mean (ClapModel's meaning; MGA-CLAP's local embeddings under their own name)
# ---------------------------------------------------------------------------------------------------------------


def test_output_fields_mean_what_they_mean_in_clap_model(model):
    text, audio = text_inputs(3), audio_inputs(2)
    words = model.get_text_features(**text)
    torch.testing.assert_close(words.last_hidden_state, model.text_model(**text).last_hidden_state)
    assert words.last_hidden_state.shape == (
        3,
        text["input_ids"].shape[1],
        model.config.text_config.hidden_size,
    )
    torch.testing.assert_close(words.local_embeds, model.text_projection(words.last_hidden_state[:, 1:]))
    frames = model.get_audio_features(**audio)
    tower = model.audio_encoder(audio["input_features"]).last_hidden_state
    torch.testing.assert_close(frames.last_hidden_state, tower)
    assert frames.last_hidden_state.shape == (2, 32, model.config.audio_config.hidden_size)
    torch.testing.assert_close(frames.local_embeds, model.audio_projection(tower))
    out = model(**text, **audio)
    torch.testing.assert_close(out.text_embeds, words.pooler_output)
    torch.testing.assert_close(out.audio_embeds, frames.pooler_output)


# ---------------------------------------------------------------------------------------------------------------
# Attention implementation
# ---------------------------------------------------------------------------------------------------------------


def test_set_attn_implementation_switches_the_model(caplog):
    model = tiny_model()
    assert model.config._attn_implementation == "sdpa"
    with caplog.at_level(logging.WARNING):
        model.set_attn_implementation("eager")
    assert "does not support setting its attention implementation" not in caplog.text
    assert model.config._attn_implementation == model.text_model.config._attn_implementation == "eager"
    assert model.get_text_features(**text_inputs(2), output_attentions=True).attentions is not None
    model.set_attn_implementation("sdpa")
    assert model.config._attn_implementation == model.text_model.config._attn_implementation == "sdpa"


def test_eager_and_sdpa_text_towers_agree(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    eager = MGAClapModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    sdpa = MGAClapModel.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    assert eager.text_model.config._attn_implementation == "eager"
    assert sdpa.text_model.config._attn_implementation == "sdpa"
    text = text_inputs(4)  # padded rows: the mask path of both implementations
    a = eager.get_text_features(**text, output_hidden_states=True)
    b = sdpa.get_text_features(**text, output_hidden_states=True)
    for x, y in zip(
        (a.pooler_output, a.local_embeds, *a.hidden_states),
        (b.pooler_output, b.local_embeds, *b.hidden_states),
        strict=True,
    ):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------------------------
# Saving, loading, dtype, meta device
# ---------------------------------------------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path, model):
    model.save_pretrained(tmp_path)
    loaded = MGAClapModel.from_pretrained(tmp_path).eval()
    for name in ("projection_dim", "codebook_size", "codebook_affinity_scale", "max_text_length", "loss"):
        assert getattr(loaded.config, name) == getattr(model.config, name)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    text, audio = text_inputs(2), audio_inputs(2)
    torch.testing.assert_close(
        loaded(**text, **audio).logits_per_audio, model(**text, **audio).logits_per_audio
    )


def test_from_pretrained_in_bfloat16(tmp_path, model):
    model.save_pretrained(tmp_path)
    half = MGAClapModel.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    text, audio = text_inputs(2), audio_inputs(2)
    out = half(**text, input_features=audio["input_features"].bfloat16())
    reference = model(**text, **audio)
    assert out.logits_per_audio.dtype == torch.bfloat16
    # bf16 keeps ~3 significant digits: embeddings agree to a few hundredths of a unit vector.
    torch.testing.assert_close(out.audio_embeds.float(), reference.audio_embeds, atol=0.05, rtol=0)
    torch.testing.assert_close(out.text_embeds.float(), reference.text_embeds, atol=0.05, rtol=0)


def test_meta_device_init_allocates_nothing():
    with init_empty_weights():
        empty = MGAClapModel(tiny_config())
    assert {p.device.type for p in empty.parameters()} == {"meta"}


def test_device_map_auto_offloads_to_disk_and_still_computes(tmp_path, model):
    model.save_pretrained(tmp_path / "model")
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    # "auto" keeps room for the largest layer (BERT's word embeddings, ~90 % of the tiny model): this budget puts
    # some modules in memory and the rest on disk.
    offloaded = MGAClapModel.from_pretrained(
        tmp_path / "model",
        device_map="auto",
        max_memory={"cpu": int(size * 0.97)},
        offload_folder=tmp_path / "offload",
    ).eval()
    placements = collections.Counter(offloaded.hf_device_map.values())
    assert placements["cpu"] > 0 and placements["disk"] > 0, placements
    text, audio = text_inputs(2), audio_inputs(2)
    with torch.no_grad():
        torch.testing.assert_close(
            offloaded(**text, **audio).logits_per_audio, model(**text, **audio).logits_per_audio
        )


# ---------------------------------------------------------------------------------------------------------------
# Training conventions: gradient checkpointing, initialisation
# ---------------------------------------------------------------------------------------------------------------


def gradients(model: MGAClapModel) -> dict[str, torch.Tensor]:
    model.zero_grad()
    model(**text_inputs(3), **audio_inputs(3), return_loss=True).loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def test_gradient_checkpointing_recomputes_and_gives_the_same_gradients():
    model = tiny_model().train()
    expected = gradients(model)
    model.gradient_checkpointing_enable()
    calls = collections.Counter()
    # Hooks inside a checkpointed layer (BERT layer, Swin stage) run again when backward recomputes it.
    model.text_model.encoder.layer[0].attention.register_forward_hook(lambda *_: calls.update(["text"]))
    model.audio_encoder.layers[0].blocks[0].register_forward_hook(lambda *_: calls.update(["audio"]))
    checkpointed = gradients(model)
    assert calls == {"text": 2, "audio": 2}  # forward, then again during backward: activations were not kept
    for name, grad in expected.items():
        torch.testing.assert_close(checkpointed[name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_init_weights_covers_every_parameter_and_buffer():
    model = tiny_model()
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.fill_(float("nan"))
            else:
                tensor.fill_(-1)
    for module in model.modules():
        module._is_hf_initialized = False
    model.initialize_weights()
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point():
            assert torch.isfinite(tensor).all(), f"{name} is not initialised by _init_weights"
        else:
            assert (tensor >= 0).all(), f"{name} is not initialised by _init_weights"
    assert model.temperature.item() == pytest.approx(0.07)
    assert model.codebook.codewords.std().item() == pytest.approx(1.0, abs=0.1)  # official torch.randn


# ---------------------------------------------------------------------------------------------------------------
# Batching, export
# ---------------------------------------------------------------------------------------------------------------


def test_every_row_is_embedded_as_it_would_be_alone(model):
    text, audio = text_inputs(3), audio_inputs(3)
    batched = model(**text, **audio)
    for row in range(3):
        length = int(text["attention_mask"][row].sum())
        alone = model(
            input_ids=text["input_ids"][row : row + 1, :length],
            input_features=audio["input_features"][row : row + 1],
        )
        torch.testing.assert_close(batched.text_embeds[row], alone.text_embeds[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(batched.audio_embeds[row], alone.audio_embeds[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            batched.audio_model_output.local_embeds[row],
            alone.audio_model_output.local_embeds[0],
            atol=1e-5,
            rtol=1e-5,
        )


class TextTower(torch.nn.Module):
    def __init__(self, model: MGAClapModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        out = self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        return out.pooler_output, out.local_embeds


class AudioTower(torch.nn.Module):
    def __init__(self, model: MGAClapModel):
        super().__init__()
        self.model = model

    def forward(self, input_features):
        out = self.model.get_audio_features(input_features=input_features)
        return out.pooler_output, out.local_embeds


@pytest.mark.parametrize("tower", ["text", "audio"])
def test_towers_export_with_torch_export(model, tower):
    module, args = {
        "text": (TextTower(model), tuple(text_inputs(3).values())),
        "audio": (AudioTower(model), (audio_inputs(2)["input_features"],)),
    }[tower]
    exported = torch.export.export(module, args).module()
    new_args = {
        "text": tuple(text_inputs(3, seed=1).values()),
        "audio": (audio_inputs(2, seed=1)["input_features"],),
    }[tower]
    for got, expected in zip(exported(*new_args), module(*new_args), strict=True):
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Strict keyword arguments
# ---------------------------------------------------------------------------------------------------------------


def test_feature_extractor_rejects_unknown_keywords_naming_the_accepted_ones():
    extractor, clip = MGAClapFeatureExtractor(), np.zeros(32000, dtype=np.float32)
    with pytest.raises(
        TypeError, match=r"truncaton_mode.*accepts sampling_rate, return_tensors, padding_mode"
    ):
        extractor(clip, sampling_rate=32000, truncaton_mode="center")
    with pytest.raises(TypeError, match="enable_fusion=True"):
        extractor(clip, sampling_rate=32000, truncation="fusion")


def test_processor_rejects_unknown_keywords(tiny_text_model_dir):
    from transformers import AutoTokenizer

    processor = MGAClapProcessor(
        MGAClapFeatureExtractor(), AutoTokenizer.from_pretrained(tiny_text_model_dir)
    )
    with pytest.raises(TypeError, match=r"\['padding'\].*accepts text, audio.*padded to the longest"):
        processor(text=["a dog"], padding="max_length")
    with pytest.raises(TypeError, match="truncaton_mode"):
        processor(audio=np.zeros(32000, dtype=np.float32), sampling_rate=32000, truncaton_mode="center")


def test_fusion_extractor_lists_is_longer_as_a_model_input(tiny_text_model_dir, tmp_path):
    from transformers import AutoTokenizer

    fused = MGAClapFeatureExtractor(enable_fusion=True)
    assert "is_longer" in fused.model_input_names
    assert "is_longer" not in MGAClapFeatureExtractor().model_input_names
    processor = MGAClapProcessor(fused, AutoTokenizer.from_pretrained(tiny_text_model_dir))
    assert "is_longer" in processor.model_input_names
    fused.save_pretrained(tmp_path)
    assert "is_longer" in MGAClapFeatureExtractor.from_pretrained(tmp_path).model_input_names


# ---------------------------------------------------------------------------------------------------------------
# The official 30-token limit, whoever tokenised
# ---------------------------------------------------------------------------------------------------------------


def test_text_longer_than_the_limit_is_cut_as_tokenizer_truncation_does(model, tiny_text_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_text_model_dir)
    caption = " ".join(["a dog barks loudly near a busy road while rain falls"] * 5)  # ~50 tokens
    whole = tokenizer([caption, "rain"], padding=True, return_tensors="pt")
    cut = tokenizer([caption, "rain"], padding=True, truncation=True, max_length=30, return_tensors="pt")
    assert whole["input_ids"].shape[1] > 30 == cut["input_ids"].shape[1]
    a, b = model.get_text_features(**whole), model.get_text_features(**cut)
    torch.testing.assert_close(a.pooler_output, b.pooler_output)
    assert a.last_hidden_state.shape[1] == 30
    unlimited = tiny_model(max_text_length=None).get_text_features(**whole).pooler_output
    assert not torch.allclose(unlimited[0], a.pooler_output[0])  # the limit really cut something


def test_stock_zero_shot_pipeline_respects_the_limit(model, tiny_text_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_text_model_dir)
    extractor = MGAClapFeatureExtractor()
    processor = MGAClapProcessor(extractor, tokenizer)
    classifier = pipeline(
        "zero-shot-audio-classification", model=model, tokenizer=tokenizer, feature_extractor=extractor
    )
    audio = np.random.default_rng(0).standard_normal(32000 * 3).astype(np.float32) * 0.1
    template = "This is a sound of {}."
    labels = [" ".join(["siren wailing through the empty city streets at night"] * 5), "rain"]  # 48+ tokens
    scores = {
        r["label"]: r["score"]
        for r in classifier(audio, candidate_labels=labels, hypothesis_template=template)
    }
    inputs = processor(
        text=[template.format(label) for label in labels],
        audio=audio,
        sampling_rate=32000,
        return_tensors="pt",
    )
    expected = model(**inputs).logits_per_audio.softmax(dim=-1)[0]
    assert [scores[label] for label in labels] == pytest.approx(expected.tolist(), abs=1e-5)
    novel = " ".join(
        ["a long wandering description of a sound"] * 90
    )  # 600+ words, beyond BERT's 512 positions
    results = classifier(audio, candidate_labels=[novel, "rain"])
    assert sum(r["score"] for r in results) == pytest.approx(1.0)
