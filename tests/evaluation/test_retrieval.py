"""Retrieval metrics: the package's one implementation, its tie rule, and the standalone metric module's agreement."""

from pathlib import Path

import evaluate
import numpy as np
import pytest

from transformers_mgaclap.evaluation.retrieval import retrieval_metrics, text_to_audio_ranks

METRIC = Path(__file__).resolve().parents[2] / "metrics" / "audio_text_retrieval"


def test_hand_worked_case():
    # Clips are the rows of eye(3); captions 0, 1 belong to clip 0, caption 2 to clip 1, caption 3 to clip 2.
    text = np.array([[1.0, 0, 0], [0, 0.9, 0.1], [0, 1, 0], [0.6, 0, 0.5]])
    metrics = retrieval_metrics(text @ np.eye(3), [0, 0, 1, 2], ks=(1, 2), percentage=False)
    # t2a ranks: caption 0 -> 0; caption 1 -> its clip scores 0 < 0.9, 0.1: rank 2; caption 2 -> 0; caption 3 -> 1.
    assert metrics["t2a_R@1"] == pytest.approx(2 / 4) and metrics["t2a_R@2"] == pytest.approx(3 / 4)
    assert metrics["t2a_medR"] == 1.0 and metrics["t2a_meanR"] == pytest.approx(3 / 4 + 1)
    # a2t: each clip's best own caption scores highest among all captions (clip 2: [0, 0.1, 0, 0.5]).
    assert metrics["a2t_R@1"] == 1.0 and metrics["a2t_num_queries"] == 3
    # clip 0's captions rank 1st (caption 0) and 4th (caption 1, score 0): AP = (1/1 + 2/4) / 2.
    assert metrics["a2t_mAP@10"] == pytest.approx((0.75 + 1 + 1) / 3)


def test_ties_count_against_the_query():
    """Constant scores rank every relevant item after every tied irrelevant one: R@1 is 0, not 100 %."""
    metrics = retrieval_metrics(np.zeros((4, 2)), [0, 1, 1, 0], percentage=False)
    assert metrics["t2a_R@1"] == 0.0 and metrics["t2a_medR"] == 2.0
    assert metrics["a2t_R@1"] == 0.0 and metrics["a2t_medR"] == 3.0  # 2 tied foreign captions come first
    # One tie: caption 0 scores clips 0 and 1 equally.
    metrics = retrieval_metrics(
        [[0.5, 0.5, 0.1], [0.0, 0.9, 0.0], [0.0, 0.0, 0.9]], [0, 1, 2], percentage=False
    )
    assert metrics["t2a_R@1"] == pytest.approx(2 / 3)


def test_per_caption_ranks_are_what_the_t2a_metrics_summarise():
    # The hand-worked case above: ranks 0, 2, 0, 1; constant scores: every caption last among its clips.
    text = np.array([[1.0, 0, 0], [0, 0.9, 0.1], [0, 1, 0], [0.6, 0, 0.5]])
    assert text_to_audio_ranks(text @ np.eye(3), [0, 0, 1, 2]).tolist() == [0, 2, 0, 1]
    assert text_to_audio_ranks(np.zeros((4, 2)), [0, 1, 1, 0]).tolist() == [1, 1, 1, 1]
    rng = np.random.default_rng(1)
    similarity, owners = np.round(rng.random((30, 8)) * 4) / 4, rng.integers(0, 8, 30)
    ranks = text_to_audio_ranks(similarity, owners)
    metrics = retrieval_metrics(similarity, owners, ks=(1, 5), percentage=False)
    assert metrics["t2a_R@1"] == np.mean(ranks < 1) and metrics["t2a_R@5"] == np.mean(ranks < 5)
    assert metrics["t2a_meanR"] == pytest.approx(ranks.mean() + 1)
    with pytest.raises(ValueError, match="one clip index per caption"):
        text_to_audio_ranks(similarity, owners[:-1])


def test_metrics_do_not_depend_on_the_order_of_clips_or_captions():
    rng = np.random.default_rng(0)
    similarity = rng.integers(0, 4, (30, 10)) / 4.0  # four levels: ties everywhere
    owners = np.repeat(np.arange(10), 3)
    reference = retrieval_metrics(similarity, owners)
    captions, clips = rng.permutation(30), rng.permutation(10)
    position = np.argsort(clips)  # the new column of each old clip
    shuffled = retrieval_metrics(similarity[captions][:, clips], position[owners[captions]])
    assert shuffled == pytest.approx(reference)


@pytest.mark.parametrize("levels", [3, 10, None])
def test_the_standalone_metric_module_agrees_ties_included(levels):
    metric = evaluate.load(str(METRIC))
    rng = np.random.default_rng(levels or 0)
    similarity = rng.random((40, 12))
    if levels is not None:
        similarity = np.round(similarity * levels) / levels
    owners = rng.integers(0, 12, 40)  # uneven caption counts; some clips may have none
    module = metric.compute(predictions=similarity.tolist(), references=owners.tolist())
    assert module == pytest.approx(retrieval_metrics(similarity, owners))
