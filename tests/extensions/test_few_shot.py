"""Few-shot recognition: episodes, Sinkhorn, caches, adapters and examples/few_shot.py."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from transformers_mgaclap import MGAClapFeatureExtractor, MGAClapProcessor
from transformers_mgaclap.evaluation.report import mean_confidence_interval
from transformers_mgaclap.extensions.few_shot import (
    METHODS,
    AudioFeatures,
    ClassTexts,
    Episode,
    FewShotConfig,
    episode_logits,
    fixed_class_splits,
    multi_grained_contrastive_loss,
    multi_grained_logits,
    one_hot,
    ot_similarity,
    pairwise_ot_similarity,
    run_episodes,
    sample_episode,
    sinkhorn,
    tip_adapter_logits,
    zero_shot_logits,
)

from conftest import run_example, tiny_model


def reference_sinkhorn(cost, epsilon, a, b, iterations):
    """The textbook scaling form in float64: K = exp(-C / eps), u = a / (K v), v = b / (K^T u)."""
    kernel = np.exp(-np.asarray(cost, dtype=np.float64) / epsilon)
    u, v = np.ones(len(a)), np.ones(len(b))
    for _ in range(iterations):
        u = a / (kernel @ v)
        v = b / (kernel.T @ u)
    return u[:, None] * kernel * v[None, :]


@pytest.mark.parametrize("epsilon", [0.5, 0.1])
def test_sinkhorn_matches_float64_reference_and_marginals(epsilon):
    generator = torch.Generator().manual_seed(0)
    cost = torch.rand(3, 7, 5, generator=generator, dtype=torch.float64) * 2
    a = torch.softmax(torch.randn(3, 7, generator=generator, dtype=torch.float64), -1)
    b = torch.softmax(torch.randn(3, 5, generator=generator, dtype=torch.float64), -1)
    plan = sinkhorn(cost, epsilon, a, b, num_iters=500)
    for i in range(3):
        expected = reference_sinkhorn(cost[i].numpy(), epsilon, a[i].numpy(), b[i].numpy(), 500)
        np.testing.assert_allclose(plan[i].numpy(), expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(plan.sum(-1), a, rtol=0, atol=1e-9)
    torch.testing.assert_close(plan.sum(-2), b, rtol=0, atol=1e-12)
    # float32 with the defaults (uniform marginals) agrees with the float64 plan.
    plan32 = sinkhorn(cost.float(), epsilon, num_iters=500)
    expected = reference_sinkhorn(cost[0].numpy(), epsilon, np.full(7, 1 / 7), np.full(5, 1 / 5), 500)
    np.testing.assert_allclose(plan32[0].numpy(), expected, rtol=1e-4, atol=1e-7)


def test_sinkhorn_small_epsilon_masks_and_tolerance():
    generator = torch.Generator().manual_seed(1)
    cost = torch.rand(4, 6, generator=generator) * 2
    plan = sinkhorn(cost, 0.01, num_iters=2000)  # the scaling form underflows here (exp(-200))
    assert torch.isfinite(plan).all()
    torch.testing.assert_close(plan.sum(-1), torch.full((4,), 0.25), rtol=0, atol=1e-4)
    # A zero weight gets no mass; the rest still meets its marginals.
    a = torch.tensor([0.5, 0.5, 0.0, 0.0])
    masked = sinkhorn(cost.double(), 0.1, a.double(), num_iters=3000)
    assert masked[2:].abs().max() == 0
    torch.testing.assert_close(masked.sum(-1), a.double(), rtol=0, atol=1e-8)
    torch.testing.assert_close(
        masked.sum(-2), torch.full((6,), 1 / 6, dtype=torch.float64), rtol=0, atol=1e-12
    )
    early = sinkhorn(cost, 0.1, num_iters=1000, tol=1e-4)
    torch.testing.assert_close(early, sinkhorn(cost, 0.1, num_iters=1000), rtol=0, atol=1e-4)


def test_ot_similarity_plan_has_no_gradient_and_pairwise_matches():
    generator = torch.Generator().manual_seed(2)
    x = F.normalize(torch.randn(3, 5, 8, generator=generator), dim=-1).requires_grad_()
    y = F.normalize(torch.randn(4, 6, 8, generator=generator), dim=-1)
    x_mask = torch.ones(3, 5)
    x_mask[0, 3:] = 0
    # Fixed iterations: with `tol` the stop is batch-wide, so results would depend on the chunking slightly.
    exact = {"num_iters": 200, "tol": None}
    pairwise = pairwise_ot_similarity(x, x_mask, y, None, chunk_size=2, **exact)
    assert pairwise.shape == (3, 4) and (pairwise.abs() <= 1).all()
    broadcast = ot_similarity(x[:, None], y[None], x_mask[:, None], None, **exact)
    torch.testing.assert_close(pairwise, broadcast)
    # d/dsim of sum(T * sim) with T constant is T: the gradient w.r.t. x is T @ y.
    pairwise[1, 2].backward()
    plan = sinkhorn(1 - x[1].detach() @ y[2].t(), num_iters=200)
    torch.testing.assert_close(x.grad[1], plan @ y[2], rtol=1e-4, atol=1e-6)
    # Padded points do not count: the masked set equals the truncated one.
    truncated = ot_similarity(x[0, :3].detach(), y[1], **exact)
    assert pairwise[0, 1].item() == pytest.approx(truncated.item(), abs=1e-5)


def test_episodes_are_deterministic_and_disjoint():
    labels = np.repeat(np.arange(8), 10)
    splits = fixed_class_splits(8, num_splits=5, n_way=4, seed=0)
    assert (
        splits == fixed_class_splits(8, num_splits=5, n_way=4, seed=0) and len({tuple(s) for s in splits}) > 1
    )
    for index in range(20):
        episode = sample_episode(labels, splits[index % 5], k_shot=3, n_query=5, seed=7, episode_index=index)
        again = sample_episode(labels, splits[index % 5], k_shot=3, n_query=5, seed=7, episode_index=index)
        for field in ("classes", "support", "support_labels", "query", "query_labels"):
            np.testing.assert_array_equal(getattr(episode, field), getattr(again, field))
        assert not set(episode.support) & set(episode.query)  # no support clip is ever a query
        assert len(set(episode.support)) == 12 and len(set(episode.query)) == 20
        np.testing.assert_array_equal(episode.classes[episode.support_labels], labels[episode.support])
        np.testing.assert_array_equal(episode.classes[episode.query_labels], labels[episode.query])
        assert set(episode.classes) == set(splits[index % 5])
    other = sample_episode(labels, splits[0], 3, 5, seed=8, episode_index=0)
    assert not np.array_equal(
        other.support, sample_episode(labels, splits[0], 3, 5, seed=7, episode_index=0).support
    )
    sub = sample_episode(labels, range(8), 1, 2, seed=0, episode_index=0, n_way=3)
    assert len(sub.classes) == 3 and len(sub.query) == 6
    with pytest.raises(ValueError, match="clips"):
        sample_episode(labels, splits[0], k_shot=6, n_query=5, seed=0, episode_index=0)


def random_features(num, frames=6, dim=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    mask = torch.ones(num, frames)
    mask[::3, frames // 2 :] = 0
    return AudioFeatures(
        F.normalize(torch.randn(num, dim, generator=generator), dim=-1),
        F.normalize(torch.randn(num, frames, dim, generator=generator), dim=-1),
        mask,
    )


def random_texts(num_classes, dim=16, seed=1):
    generator = torch.Generator().manual_seed(seed)
    local_mask = torch.ones(num_classes, 4)
    local_mask[0, 2:] = 0
    return ClassTexts(
        F.normalize(torch.randn(num_classes, dim, generator=generator), dim=-1),
        F.normalize(torch.randn(num_classes, 4, dim, generator=generator), dim=-1),
        local_mask,
    )


def test_caches_with_alpha_zero_equal_zero_shot():
    query, support, texts = random_features(9), random_features(6, seed=3), random_texts(3)
    values = one_hot([0, 0, 1, 1, 2, 2], 3)
    zero_shot = zero_shot_logits(query, texts, 100.0)
    off = FewShotConfig(alpha=0.0, fine_alpha=0.0, fine_zero_shot_weight=0.0)
    torch.testing.assert_close(
        tip_adapter_logits(query, support, values, texts, off), zero_shot, rtol=0, atol=0
    )
    torch.testing.assert_close(
        multi_grained_logits(query, support, values, texts, off), zero_shot, rtol=0, atol=0
    )
    on = FewShotConfig()
    assert not torch.allclose(multi_grained_logits(query, support, values, texts, on), zero_shot)
    # The clip-grain cache read-out, recomputed in float64.
    tip = tip_adapter_logits(query, support, values, texts, FewShotConfig(alpha=2.0, beta=3.0)).double()
    affinity = query.clip.double() @ support.clip.double().t()
    expected = (
        100.0 * query.clip.double() @ texts.prototypes.double().t()
        + 2.0 * torch.exp(-3.0 * (1 - affinity)) @ values.double()
    )
    torch.testing.assert_close(tip, expected, rtol=1e-5, atol=1e-4)


def test_cache_recognises_support_copies_and_every_method_runs():
    support, texts = random_features(6, seed=3), random_texts(3)
    labels = np.array([0, 0, 1, 1, 2, 2])
    features = AudioFeatures(
        torch.cat([support.clip, support.clip]),
        torch.cat([support.frames, support.frames]),
        torch.cat([support.frame_mask, support.frame_mask]),
    )
    episode = Episode(np.arange(3), np.arange(6), labels, np.arange(6, 12), labels)
    # Cache-only classifiers (no zero-shot term) must recognise exact copies of the supports.
    config = FewShotConfig(zero_shot_scale=0.0, fine_zero_shot_weight=0.0, beta=50.0, fine_beta=50.0)
    for method in ("tip_adapter", "multi_grained"):
        logits = episode_logits(method, episode, features, texts, config)
        assert (logits.argmax(1).numpy() == labels).all(), method
    for method in METHODS:
        logits = episode_logits(
            method, episode, features, texts, FewShotConfig(train_epochs=2, treff_epochs=2)
        )
        assert logits.shape == (6, 3) and torch.isfinite(logits).all()
    loss = multi_grained_contrastive_loss(support, torch.as_tensor(labels), texts, 0.07, {})
    assert loss.item() > 0


def test_run_episodes_and_interval():
    features, texts = random_features(40), random_texts(4)
    labels = np.repeat(np.arange(4), 10)
    splits = fixed_class_splits(4, 2, 3)
    result = run_episodes(features, labels, texts, splits, 2, 3, 2, methods=("zero_shot", "tip_adapter"))
    summary = result.summary()
    assert summary["zero_shot"]["episodes"] == 4 and 0 <= summary["tip_adapter"]["mean"] <= 1
    mean, half = mean_confidence_interval([0.5, 0.7, 0.6])
    assert mean == pytest.approx(0.6) and half == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-5)


def test_few_shot_script_runs_end_to_end_in_quick_mode(tmp_path, tiny_text_model_dir):
    folder = tmp_path / "model"
    tiny_model().save_pretrained(folder)
    MGAClapProcessor(
        MGAClapFeatureExtractor(), AutoTokenizer.from_pretrained(tiny_text_model_dir)
    ).save_pretrained(folder)
    output = tmp_path / "results.json"
    result = run_example(
        "few_shot.py", "--model_name_or_path", folder, "--quick", "--output_file", output, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    results = json.loads(output.read_text())
    assert {row["method"] for row in results["results"]} == set(METHODS)
    assert all(0 <= row["mean"] <= 1 for row in results["results"])
    assert "| multi_grained |" in result.stdout
