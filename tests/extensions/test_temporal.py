"""TeminAL-style temporal data, loss and ZSTE evaluation (the post-training loop is tested in training/)."""

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from transformers_mgaclap import MGAClapFeatureExtractor, MGAClapProcessor
from transformers_mgaclap.data.labels import class_indices
from transformers_mgaclap.data.soundscapes import build_labelled_clip_dataset
from transformers_mgaclap.extensions.temporal import (
    RELATIONS,
    CompositeLayout,
    build_temporal_example,
    evaluate_temporal,
    key_ids,
    relation_key,
    sample_pair_clips,
    split_class_pairs,
    stage_a_group,
    stage_b_group,
    temporal_batch_loss,
    temporal_candidates,
    temporal_contrastive_loss,
)

from conftest import tiny_model

S, GAP = 100, 7


def clips():
    rng = np.random.default_rng(0)
    # Amplitudes below 0.45: an overlay peaks below 0.95, so no rescaling and the samples can be compared exactly.
    return rng.uniform(0.05, 0.45, S).astype(np.float32), -rng.uniform(0.05, 0.45, S + 20).astype(np.float32)


@pytest.mark.parametrize("relation", RELATIONS)
def test_builder_places_every_clip_at_its_reported_samples(relation):
    a, b = clips()
    fitted_b = b[:S]  # longer clips are cropped from the start
    example = build_temporal_example(a, "siren", b, "bell", relation, CompositeLayout(S, GAP))
    assert example.audio.shape == (2 * S + GAP,) and example.audio.dtype == np.float32
    expected = {
        "single": ("siren", [("siren", 0, S)]),
        "and": ("siren and bell", [("siren", 0, S), ("bell", S + GAP, 2 * S + GAP)]),
        "before": ("siren before bell", [("siren", 0, S), ("bell", S + GAP, 2 * S + GAP)]),
        "after": ("siren after bell", [("bell", 0, S), ("siren", S + GAP, 2 * S + GAP)]),
        "while": ("siren while bell", [("siren", 0, S), ("bell", 0, S)]),
    }[relation]
    assert (example.caption, example.segments) == expected
    reference = np.zeros(2 * S + GAP, dtype=np.float32)
    for label, start, stop in example.segments:
        reference[start:stop] += a if label == "siren" else fitted_b
    np.testing.assert_array_equal(example.audio, reference)
    covered = np.zeros(2 * S + GAP, dtype=bool)
    for _, start, stop in example.segments:
        covered[start:stop] = True
    assert not example.audio[~covered].any()  # silence everywhere else


def test_builder_overlay_layout_short_clips_and_peak_scaling():
    a, b = clips()
    example = build_temporal_example(a, "x", b, "y", "and", CompositeLayout(S), and_layout="overlay")
    assert example.segments == [("x", 0, S), ("y", 0, S)] and example.key == relation_key("and", "y", "x")
    short = build_temporal_example(a[:40], "x", None, None, "single", CompositeLayout(S))
    np.testing.assert_array_equal(short.audio[:40], a[:40])
    assert not short.audio[40:].any() and short.negatives == []
    loud = build_temporal_example(np.ones(S), "x", np.ones(S), "y", "while", CompositeLayout(S))
    np.testing.assert_allclose(loud.audio[:S], 0.95)  # 2.0 scaled down to the peak level as a whole


def test_keys_and_hard_negatives_mean_the_right_thing():
    a, b = clips()
    before = build_temporal_example(a, "x", b, "y", "before", CompositeLayout(S))
    after = build_temporal_example(
        b, "y", a, "x", "after", CompositeLayout(S)
    )  # "y after x": the same audio and meaning
    assert after.caption == "y after x" and after.key == before.key == "seq|x|y"
    np.testing.assert_array_equal(before.audio, after.audio)
    assert before.negatives == [("y before x", "seq|y|x"), ("x while y", "while|x|y")]
    assert after.negatives == [("x after y", "seq|y|x"), ("y while x", "while|x|y")]
    overlay = build_temporal_example(a, "x", b, "y", "while", CompositeLayout(S))
    assert [k for _, k in overlay.negatives] == ["seq|x|y", "seq|y|x"]
    single = build_temporal_example(a, "x", b, "y", "single", CompositeLayout(S))
    assert single.negatives == [("x and y", "and|x|y")]


def test_stage_groups():
    a, b = clips()
    group_a = stage_a_group((a, "x", b, "y"), np.random.default_rng(0), CompositeLayout(S))
    assert [e.relation for e in group_a] == ["and", "single", "single"]
    assert [e.caption for e in group_a[1:]] == ["x", "y"]
    keys = set()
    for seed in range(8):
        group_b = stage_b_group((a, "x", b, "y"), np.random.default_rng(seed), CompositeLayout(S))
        assert [e.key for e in group_b] == ["seq|x|y", "seq|y|x", "while|x|y"]
        # Every caption's hard-negative keys are the keys of the group's other two audios.
        for example in group_b:
            assert {k for _, k in example.negatives} == {e.key for e in group_b} - {example.key}
        keys |= {e.caption for e in group_b}
    assert {"x before y", "y after x", "y before x", "x after y"} <= keys  # both wordings get drawn


def reference_loss(audio, text, negatives, keys, negative_keys, scale, weight):
    """Float64 loops over rows and columns."""
    audio, text, negatives = audio.double(), text.double(), negatives.double()
    batch = audio.shape[0]
    total = 0.0
    for i in range(batch):
        own = {int(k) for k in negative_keys[i] if k >= 0}
        terms, positive = [], None
        for j in range(batch):
            s = scale * float(audio[i] @ text[j])
            if j == i:
                positive = s
                terms.append(s)
            elif int(keys[j]) != int(keys[i]) and int(keys[j]) not in own:
                terms.append(s)
        for h in range(negatives.shape[1]):
            if negative_keys[i, h] >= 0:
                terms.append(scale * float(audio[i] @ negatives[i, h]) + np.log(weight))
        total += np.log(np.sum(np.exp(terms))) - positive
        terms = []
        for j in range(batch):
            s = scale * float(text[i] @ audio[j])
            if j == i:
                positive = s
            elif int(keys[j]) == int(keys[i]):
                continue
            terms.append(s + (np.log(weight) if int(keys[j]) in own else 0.0))
        total += np.log(np.sum(np.exp(terms))) - positive
    return total / (2 * batch)


@pytest.mark.parametrize("weight", [1.0, 3.0])
def test_contrastive_loss_with_hard_negatives_matches_float64_loops(weight):
    a, b = clips()
    examples = stage_b_group((a, "x", b, "y"), np.random.default_rng(0), CompositeLayout(S))
    examples += stage_a_group((a, "x", b, "z"), np.random.default_rng(1), CompositeLayout(S))
    examples += stage_b_group(
        (b, "y", a, "x"), np.random.default_rng(2), CompositeLayout(S)
    )  # repeats keys: same-key masking
    keys, negative_keys = key_ids(examples, 2)
    assert (negative_keys[3:6] >= 0).sum() == 4  # the single-sound items have one negative each
    generator = torch.Generator().manual_seed(0)
    batch, dim = len(examples), 8

    def unit(*shape):
        return torch.nn.functional.normalize(torch.randn(*shape, dim, generator=generator), dim=-1)

    audio, text, negatives = unit(batch), unit(batch), unit(batch, 2)
    loss = temporal_contrastive_loss(audio, text, negatives, keys, negative_keys, 7.0, weight)
    expected = reference_loss(audio, text, negatives, keys, negative_keys, 7.0, weight)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_loss_without_negatives_is_the_clap_loss():
    from transformers_mgaclap.modeling_mgaclap import clap_loss

    generator = torch.Generator().manual_seed(1)
    audio = torch.nn.functional.normalize(torch.randn(5, 8, generator=generator), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(5, 8, generator=generator), dim=-1)
    loss = temporal_contrastive_loss(
        audio, text, torch.zeros(5, 1, 8), torch.arange(5), torch.full((5, 1), -1), 10.0
    )
    torch.testing.assert_close(loss, clap_loss(10.0 * audio @ text.t()))


def test_pairs_and_candidates():
    train, heldout = split_class_pairs(6, 0.25, seed=3)
    assert len(heldout) == 4 and len(train) == 11 and not set(train) & set(heldout)
    assert split_class_pairs(6, 0.25, seed=3) == (train, heldout)
    labels = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    for first, second in sample_pair_clips(labels, heldout, 50, np.random.default_rng(0)):
        assert tuple(sorted((labels[first], labels[second]))) in heldout
    assert class_indices(["b", "a", "b"]) == ([1, 0, 1], ["a", "b"])
    assert class_indices([2, 0, 2]) == ([2, 0, 2], ["0", "1", "2"])
    assert class_indices([1, 0], names=["dog", "cat"]) == ([1, 0], ["dog", "cat"])
    candidates, truth = temporal_candidates("after", "x", "y")
    assert candidates == ["y after x", "x after y", "x while y", "x", "y"] and truth == 0
    assert temporal_candidates("single", "x", "y")[1] == 3


@pytest.fixture(scope="module")
def tiny_processor(tiny_text_model_dir):
    return MGAClapProcessor(MGAClapFeatureExtractor(), AutoTokenizer.from_pretrained(tiny_text_model_dir))


@pytest.fixture(scope="module")
def labelled_clips():
    return build_labelled_clip_dataset(2, seed=0, duration=1.0, classes=["siren", "bell", "drip"])


def test_labelled_clip_dataset_is_deterministic(labelled_clips):
    assert labelled_clips["label"] == [0, 0, 1, 1, 2, 2]
    assert labelled_clips.features["label"].names == ["siren", "bell", "drip"]
    again = build_labelled_clip_dataset(2, seed=0, duration=1.0, classes=["siren", "bell", "drip"])
    heldout = build_labelled_clip_dataset(
        2, seed=0, duration=1.0, classes=["siren", "bell", "drip"], split_name="test"
    )
    first = labelled_clips[0]["audio"]["array"]
    np.testing.assert_array_equal(first, again[0]["audio"]["array"])
    assert first.shape == (32000,) and not np.array_equal(first, heldout[0]["audio"]["array"])


def test_evaluate_temporal_runs_and_is_deterministic(labelled_clips, tiny_processor):
    model = tiny_model()
    metrics = evaluate_temporal(
        model, tiny_processor, labelled_clips, num_pairs=2, segment_seconds=1.0, batch_size=8
    )
    assert metrics["num_pairs"] == 2
    for name in ("accuracy_before", "accuracy_after", "accuracy_while", "accuracy_single", "order_accuracy"):
        assert 0.0 <= metrics[name] <= 1.0
    again = evaluate_temporal(
        model, tiny_processor, labelled_clips, num_pairs=2, segment_seconds=1.0, batch_size=3
    )
    assert again == metrics


def test_transformers_clap_models_work_with_the_global_embeddings(labelled_clips, tiny_text_model_dir):
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
    metrics = evaluate_temporal(model, processor, labelled_clips, num_pairs=2, segment_seconds=1.0)
    assert 0 <= metrics["accuracy"] <= 1
    rng = np.random.default_rng(0)
    a, b = (
        rng.standard_normal(48000).astype(np.float32) * 0.1,
        rng.standard_normal(48000).astype(np.float32) * 0.1,
    )
    loss = temporal_batch_loss(model, processor, stage_b_group((a, "x", b, "y"), rng, CompositeLayout(48000)))
    loss.backward()
    assert torch.isfinite(loss) and model.logit_scale_a.grad is not None


# ---------------------------------------------------------------------------------------------------------------
# The frame-grounded order term of the post-training (--order_loss_weight)
# ---------------------------------------------------------------------------------------------------------------


def _tnce_as_before(model, processor, examples):
    """The batch loss as `temporal_batch_loss` computed it before the order term existed: the TNCE alone."""
    from transformers_mgaclap.embedding import embed_audio, embed_text, logit_scale

    negatives_per_row = max(1, max(len(e.negatives) for e in examples))
    audio = embed_audio(
        model, processor, [e.audio for e in examples], batch_size=len(examples), with_grad=True
    )
    negative_captions = [
        e.negatives[h][0] if h < len(e.negatives) else e.caption
        for e in examples
        for h in range(negatives_per_row)
    ]
    captions = [e.caption for e in examples] + negative_captions
    texts = embed_text(model, processor, captions, batch_size=len(captions), with_grad=True).text_embeds
    keys, negative_keys = key_ids(examples, negatives_per_row)
    return temporal_contrastive_loss(
        audio.clip_embeds, texts[: len(examples)], texts[len(examples) :].view(len(examples), negatives_per_row, -1),
        keys, negative_keys, logit_scale(model),
    )  # fmt: skip


def test_order_loss_weight_zero_is_the_tnce_exactly_and_is_never_computed(tiny_processor, monkeypatch):
    import transformers_mgaclap.extensions.temporal as temporal

    model = tiny_model()
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal(32000).astype(np.float32) * 0.1 for _ in range(2))
    layout = CompositeLayout(32000)
    pair = (a, "x", b, "y")
    examples = stage_a_group(pair, rng, layout, 0.0) + stage_b_group(pair, rng, layout)
    expected = _tnce_as_before(model, tiny_processor, examples)
    with_terms = temporal_batch_loss(
        model, tiny_processor, examples, order_loss_weight=1.0, return_terms=True
    )
    alone = temporal_batch_loss(
        model, tiny_processor, examples, order_loss_weight=2.0, contrastive_loss_weight=0.0
    )

    def refuse(*args, **kwargs):
        raise AssertionError("the order term must not be computed at weight 0")

    monkeypatch.setattr(temporal, "frame_order_loss", refuse)
    default = temporal_batch_loss(model, tiny_processor, examples)
    zero, terms = temporal_batch_loss(
        model, tiny_processor, examples, order_loss_weight=0.0, return_terms=True
    )
    assert default.item() == zero.item() == expected.item() and terms == {"tnce": expected.item()}
    # With a weight, the total is the TNCE plus the weighted term, both reported.
    total, both = with_terms
    assert both["tnce"] == expected.item() and both["order"] > 0
    assert total.item() == pytest.approx(both["tnce"] + both["order"], rel=1e-6)
    # The order term alone (--contrastive_loss_weight 0).
    assert alone.item() == pytest.approx(2 * both["order"], rel=1e-6)


def _order_margin_float64(first, second, lengths, edges):
    """Independent float64 centre-of-mass order margin: centre each curve (frame-length weights), contrast, the
    positive and negative parts as masses, positions of their centres of mass, second minus first."""
    first, second, lengths = (np.asarray(x, dtype=np.float64) for x in (first, second, lengths))
    weights = lengths / lengths.sum()
    d = (first - (first * weights).sum()) - (second - (second * weights).sum())
    centres = (edges[:-1] + edges[1:]) / 2
    positions = []
    for mass in (np.maximum(d, 0) * lengths, np.maximum(-d, 0) * lengths):
        mass = mass if mass.sum() > 0 else lengths
        positions.append((mass * centres).sum() / mass.sum())
    return positions[1] - positions[0]


def test_order_term_matches_a_float64_recomputation_and_rewards_the_heard_order(monkeypatch):
    """Constructed frames whose cosines with two orthogonal phrase embeddings are chosen curves: the order term equals
    an independent float64 computation, and it is low when the caption's order is the one the curves show."""
    import types

    import transformers_mgaclap.extensions.temporal as temporal

    rate, frames_per_window = 100, 32  # a 10 s window of 32 frames, as MGA-CLAP
    processor = types.SimpleNamespace(
        feature_extractor=types.SimpleNamespace(sampling_rate=rate, max_length_s=10.0)
    )
    phrases = {"x": torch.tensor([1.0, 0.0]), "y": torch.tensor([0.0, 1.0])}
    monkeypatch.setattr(
        temporal,
        "embed_text",
        lambda model, processor, texts, **kwargs: types.SimpleNamespace(
            text_embeds=torch.stack([phrases[t] for t in texts])
        ),
    )
    rng = np.random.default_rng(0)
    t = (np.arange(frames_per_window) + 0.5) * 10 / frames_per_window
    bumps = np.stack([np.exp(-((t - 2.5) ** 2)), np.exp(-((t - 7.5) ** 2))], 1)
    x_early = bumps + rng.normal(0, 0.05, (32, 2))
    # Four composites: x then y (10 s, "before"), the same curves read as "y before x" (the wrong order), x then y in
    # a shorter composite (8 s: the frames after its end weigh nothing, the one across it is cut), and an overlay
    # (no order, left out).
    clip = np.zeros(500, np.float32)
    examples = [
        build_temporal_example(clip, "x", clip, "y", "before", CompositeLayout(500)),
        # "x after y": y heard first
        build_temporal_example(clip, "x", clip, "y", "after", CompositeLayout(500)),
        build_temporal_example(clip, "x", clip, "y", "before", CompositeLayout(400)),
        build_temporal_example(clip, "x", clip, "y", "while", CompositeLayout(500)),
    ]
    assert [temporal.sequence_order(e) for e in examples] == [("x", "y"), ("y", "x"), ("x", "y"), None]
    frames = torch.tensor(np.stack([x_early] * 4), dtype=torch.float32, requires_grad=True)
    loss = temporal.frame_order_loss(None, processor, examples, frames, order_scale_seconds=0.5)

    edges = np.arange(frames_per_window + 1) * 10 / frames_per_window
    curves = frames.detach().double().numpy()
    expected = []
    for row, (first, second) in ((0, (0, 1)), (1, (1, 0)), (2, (0, 1))):
        duration = len(examples[row].audio) / rate
        lengths = np.clip(np.minimum(edges[1:], duration) - edges[:-1], 0, None)
        margin = _order_margin_float64(curves[row, :, first], curves[row, :, second], lengths, edges)
        expected.append(np.logaddexp(0, -margin / 0.5))  # softplus(-m / s) = -log sigmoid(m / s)
    assert loss.item() == pytest.approx(np.mean(expected), rel=1e-5)
    # The sign: the heard order (x early) has a positive margin and a small loss, the reversed caption a large one.
    assert expected[0] < 0.01 and expected[2] < 0.05 and expected[1] > 5
    singles = [
        temporal.frame_order_loss(None, processor, [e], frames[i : i + 1]).item()
        for i, e in enumerate(examples[:2])
    ]
    assert singles[0] < singles[1]
    loss.backward()
    # The overlay gets no gradient.
    assert torch.isfinite(frames.grad).all() and frames.grad[3].abs().sum() == 0
    assert temporal.frame_order_loss(None, processor, examples[3:], frames[3:]) is None
    with pytest.raises(ValueError, match="no frame embeddings"):
        temporal.frame_order_loss(None, processor, examples, None)
