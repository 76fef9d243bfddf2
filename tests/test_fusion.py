"""LAION-CLAP feature fusion: the views against a float64 reference, equality with the unfused path for clips up to
10 s, determinism and batch independence, audio of any length, the BatchNorm trap, and save / reload."""

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_feature_extraction_mgaclap import reference_log_mel
from transformers import ClapAudioConfig
from transformers.models.clap.modeling_clap import ClapAudioPatchEmbed

from transformers_mgaclap import MGAClapConfig, MGAClapFeatureExtractor, MGAClapModel
from transformers_mgaclap.modeling_mgaclap import MGAClapFusionPatchEmbed

from conftest import TINY_AUDIO, text_inputs, tiny_model

SR = 32000
FRAMES = 1001


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(round(seconds * SR)))).astype(np.float32)


@pytest.fixture(scope="module")
def fused_extractor() -> MGAClapFeatureExtractor:
    return MGAClapFeatureExtractor(enable_fusion=True)


@pytest.fixture(scope="module")
def models() -> tuple[MGAClapModel, MGAClapModel]:
    """A fused tiny model and the unfused model with the same weights (the fusion modules aside)."""
    fused = tiny_model(enable_fusion=True)
    plain = tiny_model()
    result = plain.load_state_dict(fused.state_dict(), strict=False)
    assert result.missing_keys == [] and all(".patch_embed." in key for key in result.unexpected_keys)
    _randomise_fusion_batch_norms(fused)
    return fused, plain


def _randomise_fusion_batch_norms(model: MGAClapModel) -> None:
    """Non-trivial running statistics, so that eval-mode fusion is not an identity-like map."""
    generator = torch.Generator().manual_seed(1)
    for module in model.audio_encoder.patch_embed.fusion_model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)


def thirds_starts(total_frames: int, rule: str) -> list[int]:
    """LAION's `get_audio_features` ranges, written out: split 0..total-1001 into 3 contiguous near-equal parts."""
    count = total_frames - FRAMES + 1
    sizes = [count // 3 + (1 if i < count % 3 else 0) for i in range(3)]
    bounds = np.cumsum([0] + sizes)
    parts = [list(range(bounds[i], bounds[i + 1])) or [0] for i in range(3)]
    return [part[0] if rule == "start" else part[len(part) // 2] for part in parts]


# ---------------------------------------------------------------------------------------------------------------
# Feature extractor
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [0.5, 10.0, 10.0 + 100 / SR])  # the last: over 10 s by less than a hop
@pytest.mark.parametrize("padding_mode", ["repeatpad", "zero"])
def test_clips_up_to_ten_seconds_repeat_the_unfused_features(fused_extractor, seconds, padding_mode):
    clip = noise(seconds)
    fused = fused_extractor(clip, sampling_rate=SR, padding_mode=padding_mode, return_tensors="pt")
    plain = MGAClapFeatureExtractor()(clip, sampling_rate=SR, padding_mode=padding_mode, return_tensors="pt")
    assert fused["input_features"].shape == (1, 4, FRAMES, 64) and fused["is_longer"].tolist() == [False]
    for view in range(4):
        torch.testing.assert_close(fused["input_features"][:, view], plain["input_features"], atol=0, rtol=0)
    torch.testing.assert_close(fused["input_features_mask"], plain["input_features_mask"], atol=0, rtol=0)


@pytest.mark.parametrize("rule", ["start", "center"])
def test_long_clip_views_match_a_float64_reference(fused_extractor, rule):
    clip = noise(37.0, seed=3)
    out = fused_extractor(clip, sampling_rate=SR, truncation_mode=rule, return_tensors="pt")
    assert out["is_longer"].tolist() == [True] and out["input_features_mask"].all()
    reference = torch.from_numpy(reference_log_mel(clip.astype(np.float64))).double()  # (3701, 64)
    assert reference.shape[0] == 1 + len(clip) // 320
    global_view = F.interpolate(
        reference[None, None], size=(FRAMES, 64), mode="bilinear", align_corners=False
    )
    views = out["input_features"][0].double()
    torch.testing.assert_close(views[0], global_view[0, 0], atol=1e-3, rtol=0)
    starts = thirds_starts(reference.shape[0], rule)
    assert starts[0] < starts[1] < starts[2] <= reference.shape[0] - FRAMES
    for view, start in zip(views[1:], starts, strict=True):
        torch.testing.assert_close(view, reference[start : start + FRAMES], atol=1e-4, rtol=0)
    assert fused_extractor.fusion_crop_starts(reference.shape[0], rule) == starts


def test_random_crops_are_seeded_and_stay_in_their_thirds(fused_extractor):
    total = 3701
    draws = {
        tuple(fused_extractor.fusion_crop_starts(total, "random", torch.Generator().manual_seed(s)))
        for s in range(20)
    }
    assert len(draws) > 1  # really random
    bounds = thirds_starts(total, "start") + [total - FRAMES + 1]
    for draw in draws:
        assert all(bounds[i] <= draw[i] < bounds[i + 1] for i in range(3))
    again = fused_extractor.fusion_crop_starts(total, "random", torch.Generator().manual_seed(7))
    assert again == fused_extractor.fusion_crop_starts(total, "random", torch.Generator().manual_seed(7))
    # Just over one frame longer: the second and third parts are empty and fall back to start 0 (LAION).
    assert fused_extractor.fusion_crop_starts(FRAMES + 1, "start") == [0, 1, 0]


def test_extractor_setting_is_saved(tmp_path, fused_extractor):
    fused_extractor.save_pretrained(tmp_path)
    assert MGAClapFeatureExtractor.from_pretrained(tmp_path).enable_fusion is True
    assert MGAClapFeatureExtractor().enable_fusion is False


# ---------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------


def test_config_switch():
    config = MGAClapConfig(enable_fusion=True)
    assert config.audio_config.enable_fusion and config.audio_config.fusion_type == "aff_2d"
    assert not MGAClapConfig().enable_fusion and not MGAClapConfig().audio_config.enable_fusion
    with pytest.raises(ValueError, match="aff_2d"):
        MGAClapConfig(enable_fusion=True, audio_config={"fusion_type": "channel_map"})


def test_fused_model_equals_the_unfused_path_for_clips_up_to_ten_seconds(models, fused_extractor):
    fused, plain = models
    clips = [noise(0.5, 1), noise(4.0, 2), noise(10.0, 3)]
    fused_inputs = fused_extractor(clips, sampling_rate=SR, return_tensors="pt")
    plain_inputs = MGAClapFeatureExtractor()(clips, sampling_rate=SR, return_tensors="pt")
    with torch.no_grad():
        a = fused.get_audio_features(**fused_inputs)
        b = plain.get_audio_features(**plain_inputs)
    torch.testing.assert_close(a.pooler_output, b.pooler_output, atol=1e-6, rtol=0)
    torch.testing.assert_close(a.local_embeds, b.local_embeds, atol=1e-6, rtol=0)
    torch.testing.assert_close(a.local_mask, b.local_mask)


def test_long_clips_change_the_embedding_through_the_local_views(models, fused_extractor):
    fused, plain = models
    inputs = fused_extractor(noise(37.0, 4), sampling_rate=SR, return_tensors="pt")
    with torch.no_grad():
        with_locals = fused.get_audio_features(**inputs).pooler_output
        global_only = plain.get_audio_features(inputs["input_features"][:, 0]).pooler_output
    assert (with_locals - global_only).abs().max() > 1e-3


def test_embeddings_are_deterministic_and_independent_of_batch_order(models, fused_extractor):
    fused, _ = models
    seconds = [37.0, 0.5, 12.0, 10.0, 25.0, 3.0]
    clips = [noise(s, seed=i) for i, s in enumerate(seconds)]
    inputs = fused_extractor(clips, sampling_rate=SR, return_tensors="pt")
    assert inputs["is_longer"].tolist() == [True, False, True, False, True, False]
    with torch.no_grad():
        reference = fused.get_audio_features(**inputs).pooler_output
        again = fused.get_audio_features(**fused_extractor(clips, sampling_rate=SR, return_tensors="pt"))
        torch.testing.assert_close(again.pooler_output, reference, atol=0, rtol=0)
        generator = torch.Generator().manual_seed(0)
        for _ in range(3):  # shuffled batches of mixed lengths, through the extractor as well
            order = torch.randperm(len(clips), generator=generator).tolist()
            shuffled = fused_extractor([clips[i] for i in order], sampling_rate=SR, return_tensors="pt")
            torch.testing.assert_close(
                fused.get_audio_features(**shuffled).pooler_output, reference[order], atol=1e-6, rtol=0
            )
        for index in (0, 1):  # alone, in batches of one
            alone = fused_extractor(clips[index], sampling_rate=SR, return_tensors="pt")
            torch.testing.assert_close(
                fused.get_audio_features(**alone).pooler_output,
                reference[index : index + 1],
                atol=1e-6,
                rtol=0,
            )
        # `is_longer` lost on the way (a collator, a hand-made batch): recovered from the views.
        dropped = {k: v for k, v in inputs.items() if k != "is_longer"}
        torch.testing.assert_close(
            fused.get_audio_features(**dropped).pooler_output, reference, atol=0, rtol=0
        )


def test_audio_of_any_length_embeds(models, fused_extractor, caplog):
    fused, plain = models
    seconds = [0.5, 10.0, 37.0, 600.0]
    clips = [noise(s, seed=i) for i, s in enumerate(seconds)]
    inputs = fused_extractor(clips, sampling_rate=SR, return_tensors="pt")
    assert inputs["is_longer"].tolist() == [False, False, True, True]  # the path each clip took
    with torch.no_grad():
        embeds = fused(**text_inputs(2), **inputs).audio_embeds
    assert embeds.shape == (4, 16) and torch.isfinite(embeds).all()
    torch.testing.assert_close(embeds.norm(dim=-1), torch.ones(4))
    # Without fusion, long clips are cropped, and the extractor says so.
    logging.Logger.warning_once.cache_clear()
    with caplog.at_level(logging.WARNING):
        plain_inputs = MGAClapFeatureExtractor()(clips, sampling_rate=SR, return_tensors="pt")
    assert "enable_fusion=True" in caplog.text
    assert torch.isfinite(plain.get_audio_features(**plain_inputs).pooler_output).all()


def test_frame_similarity_refuses_fused_long_clips(models, fused_extractor):
    fused, plain = models
    long_inputs = fused_extractor([noise(3.0), noise(20.0)], sampling_rate=SR, return_tensors="pt")
    with pytest.raises(ValueError, match="windowed"):
        fused.get_frame_text_similarity(**long_inputs, **text_inputs(2))
    short = [noise(3.0)]
    a = fused.get_frame_text_similarity(
        **fused_extractor(short, sampling_rate=SR, return_tensors="pt"), **text_inputs(2)
    )
    b = plain.get_frame_text_similarity(
        **MGAClapFeatureExtractor()(short, sampling_rate=SR, return_tensors="pt"), **text_inputs(2)
    )
    torch.testing.assert_close(a.frame_similarity, b.frame_similarity, atol=1e-6, rtol=0)
    torch.testing.assert_close(a.frame_boundaries, b.frame_boundaries)


def test_shape_errors(models):
    fused, plain = models
    with pytest.raises(ValueError, match="enable_fusion=False"):
        plain.get_audio_features(torch.zeros(1, 4, FRAMES, 64))
    with pytest.raises(ValueError, match="no local views"):
        fused.get_audio_features(torch.zeros(1, FRAMES, 64), is_longer=torch.tensor([True]))


# ---------------------------------------------------------------------------------------------------------------
# Training: the BatchNorm trap and LAION's training-time flag
# ---------------------------------------------------------------------------------------------------------------


def _fusion_batch_norm_state(model: MGAClapModel) -> list[torch.Tensor]:
    fusion = model.audio_encoder.patch_embed.fusion_model
    return [b.clone() for name, b in fusion.named_buffers() if "running" in name]


def _fused_batch(lengths: list[float], extractor) -> dict:
    return extractor([noise(s, seed=i) for i, s in enumerate(lengths)], sampling_rate=SR, return_tensors="pt")


def test_transformers_patch_embed_crashes_on_one_longer_clip_in_training():
    """The trap this package fixes: transformers' fused patch embedding with exactly one flagged clip."""
    config = ClapAudioConfig(**TINY_AUDIO, enable_fusion=True, fusion_type="aff_2d")
    image = torch.randn(3, 4, 256, 256)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        ClapAudioPatchEmbed(config).train()(image, torch.tensor([1]))
    torch.manual_seed(0)
    ours = MGAClapFusionPatchEmbed(config).train()
    assert ours(image, torch.tensor([1])).shape == (3, 64 * 64, TINY_AUDIO["patch_embeds_hidden_size"])


def test_training_with_one_longer_clip_runs_and_keeps_fusion_statistics(fused_extractor):
    model = tiny_model(enable_fusion=True).train()
    batch = _fused_batch([20.0, 4.0, 6.0], fused_extractor)
    assert batch["is_longer"].tolist() == [True, False, False]
    before = _fusion_batch_norm_state(model)
    out = model(**text_inputs(3), **batch, return_loss=True)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert missing == [], f"parameters without gradient: {missing}"
    assert model.audio_encoder.patch_embed.mel_conv2d.weight.grad.abs().sum() > 0
    after = _fusion_batch_norm_state(model)
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))  # one clip: no batch statistics
    assert model.audio_encoder.patch_embed.fusion_model.training  # restored after the step

    two = _fused_batch([20.0, 15.0, 6.0], fused_extractor)
    model(**text_inputs(3), **two, return_loss=True).loss.backward()
    updated = _fusion_batch_norm_state(model)
    assert any(
        not torch.equal(a, b) for a, b in zip(after, updated, strict=True)
    )  # two clips: usual BatchNorm


def test_training_flags_one_clip_when_none_is_longer(fused_extractor):
    """LAION's rule in training (the fusion branch always trains); never in eval mode."""
    model = tiny_model(enable_fusion=True)
    batch = _fused_batch([4.0, 6.0, 8.0], fused_extractor)
    assert not batch["is_longer"].any()
    model.train()
    model(**text_inputs(3), **batch, return_loss=True).loss.backward()
    assert model.audio_encoder.patch_embed.fusion_model.local_att[0].weight.grad is not None
    model.zero_grad(set_to_none=True)
    model.eval()
    model(**text_inputs(3), **batch, return_loss=True).loss.backward()
    assert model.audio_encoder.patch_embed.fusion_model.local_att[0].weight.grad is None


def test_save_and_reload_a_trained_fused_model(tmp_path, fused_extractor):
    model = tiny_model(enable_fusion=True).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for lengths in ([20.0, 15.0, 4.0], [30.0, 2.0, 12.0]):
        optimizer.zero_grad()
        model(**text_inputs(3), **_fused_batch(lengths, fused_extractor), return_loss=True).loss.backward()
        optimizer.step()
    model.eval()
    model.save_pretrained(tmp_path)
    reloaded = MGAClapModel.from_pretrained(tmp_path).eval()
    assert reloaded.config.enable_fusion and isinstance(
        reloaded.audio_encoder.patch_embed, MGAClapFusionPatchEmbed
    )
    batch = _fused_batch([37.0, 3.0], fused_extractor)
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(**text_inputs(2), **batch).logits_per_audio,
            model(**text_inputs(2), **batch).logits_per_audio,
            atol=0,
            rtol=0,
        )
