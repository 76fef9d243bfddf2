"""The embedding API: the model's own outputs, whatever the batching, input form, padding or model family."""

import io

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from transformers_mgaclap import MGAClapFeatureExtractor, MGAClapProcessor, embed_audio, embed_text
from transformers_mgaclap.embedding import logit_scale, tokenize

from conftest import tiny_model

RATE = 32000


@pytest.fixture(scope="module")
def processor(tiny_text_model_dir):
    return MGAClapProcessor(MGAClapFeatureExtractor(), AutoTokenizer.from_pretrained(tiny_text_model_dir))


@pytest.fixture(scope="module")
def clips():
    rng = np.random.default_rng(0)
    return [
        (rng.standard_normal(int(seconds * RATE)) * 0.1).astype(np.float32)
        for seconds in (1.0, 4.5, 10.0, 12.0)
    ]


def test_audio_embeddings_are_the_models_outputs(processor, clips):
    model = tiny_model()
    embeds = embed_audio(model, processor, clips, batch_size=3, padding_mode="zero")
    features = processor(audio=clips, sampling_rate=RATE, padding_mode="zero", return_tensors="pt")
    with torch.no_grad():
        expected = model.get_audio_features(**features)
    torch.testing.assert_close(embeds.clip_embeds, expected.pooler_output, atol=1e-6, rtol=0)
    torch.testing.assert_close(
        embeds.frame_embeds, F.normalize(expected.local_embeds, dim=-1), atol=1e-6, rtol=0
    )
    assert torch.equal(embeds.frame_mask, expected.local_mask)
    assert not embeds.clip_embeds.requires_grad
    # The padding is a parameter: repeat-padding (the extractor's default) gives other embeddings for short clips.
    repeated = embed_audio(model, processor, clips[:1])
    assert not torch.allclose(repeated.clip_embeds, embeds.clip_embeds[:1])


def test_any_input_form_and_rate(processor, clips, tmp_path):
    model = tiny_model()
    reference = embed_audio(model, processor, clips[:2]).clip_embeds
    buffer = io.BytesIO()
    sf.write(buffer, clips[1], RATE, format="WAV", subtype="FLOAT")
    (tmp_path / "clip.wav").write_bytes(buffer.getvalue())
    mixed = embed_audio(
        model, processor, [torch.from_numpy(clips[0]), str(tmp_path / "clip.wav")]
    ).clip_embeds
    torch.testing.assert_close(mixed, reference, atol=1e-6, rtol=0)
    # Arrays at another rate are resampled; a file carries its own rate.
    at_16k = clips[0][::2].copy()
    assert embed_audio(model, processor, [at_16k], sampling_rate=16000).clip_embeds.shape == (1, 16)


def test_gradients_flow_only_on_request(processor, clips):
    model = tiny_model().train()
    embeds = embed_audio(model, processor, clips[:2], with_grad=True)
    embeds.clip_embeds.sum().backward()
    assert model.audio_projection[1].weight.grad is not None
    text = embed_text(model, processor, ["a dog barks"], with_grad=True).text_embeds
    assert text.requires_grad


def test_text_embeddings_across_batches(processor):
    model = tiny_model()
    texts = ["a dog barks", "rain falls softly on a tin roof while thunder rolls", "a bell"]
    batched = embed_text(model, processor, texts, batch_size=2)
    with torch.no_grad():
        expected = model.get_text_features(**processor(text=texts, return_tensors="pt"))
    torch.testing.assert_close(batched.text_embeds, expected.pooler_output, atol=1e-6, rtol=0)
    assert batched.word_embeds.shape[:2] == batched.word_mask.shape == expected.local_mask.shape
    torch.testing.assert_close(
        batched.word_embeds * batched.word_mask[..., None], F.normalize(expected.local_embeds, dim=-1)
        * expected.local_mask[..., None], atol=1e-6, rtol=0,
    )  # fmt: skip
    with pytest.raises(ValueError, match="Text 1 is empty"):
        embed_text(model, processor, ["fine", " "])
    with pytest.raises(ValueError, match="empty"):
        embed_text(model, processor, [])


def test_mgaclap_text_is_cut_at_the_official_30_tokens(processor):
    model = tiny_model()
    long_text = " ".join(["dog"] * 80)
    assert tokenize(model, processor.tokenizer, [long_text])["input_ids"].shape == (1, 30)


def test_transformers_clap_gives_global_embeddings_only(tiny_text_model_dir, clips):
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor

    torch.manual_seed(0)
    config = ClapConfig(
        text_config=dict(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=37, projection_dim=16),
        audio_config=dict(patch_embeds_hidden_size=8, depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 1, 1],
                          hidden_size=64, projection_dim=16, enable_fusion=False),
        projection_dim=16,
    )  # fmt: skip
    model = ClapModel(config).eval()
    processor = ClapProcessor(
        ClapFeatureExtractor(truncation="rand_trunc"), AutoTokenizer.from_pretrained(tiny_text_model_dir)
    )
    audio = embed_audio(model, processor, clips[:2], sampling_rate=RATE)
    text = embed_text(model, processor, ["a dog barks"])
    assert audio.clip_embeds.shape == (2, 16) and audio.frame_embeds is None and text.word_embeds is None
    torch.testing.assert_close(logit_scale(model), model.logit_scale_a.exp())
    mgaclap = tiny_model()
    torch.testing.assert_close(logit_scale(mgaclap), 1 / mgaclap.temperature)
