"""Audio-text retrieval metrics: the package's one implementation, used by training validation and the evaluation.

The conventions are those of the official MGA-CLAP evaluation (`tools/utils.py` `t2a` / `a2t`, itself WavCaps'), with
several captions per clip:

- text -> audio: every caption queries all clips; its 0-based rank is the number of other clips ranked before its
  own. R@k is the share of captions with rank < k; mAP@10 is the mean of 1 / (rank + 1) over captions, 0 from rank 10.
- audio -> text: every clip with at least one caption queries all captions. R@k uses the best rank among the clip's
  captions; mAP@10 per clip is `(1 / n_i) * sum_j j / r_j` over its captions ranked in the top 10 (1-based ranks
  `r_1 < r_2 < ...`, `n_i` its number of captions).
- median rank = floor(median of the 0-based ranks) + 1, mean rank = mean of the 0-based ranks + 1.

**Ties count against the query**: an item that scores exactly as much as a relevant one is ranked before it. A model
that gives every pair the same score therefore ranks every relevant item last, not first, and the metrics never
depend on the order of the clips or captions. (The official code sorts with numpy's non-stable argsort, which breaks
ties arbitrarily.)

`metrics/audio_text_retrieval` is the standalone `evaluate` module of the same computation (it cannot import the
package); a test checks that both agree, ties included.
"""

import numpy as np

DEFAULT_KS = (1, 5, 10, 50)


def _ranked_positions(similarity: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """`(queries, items)` 0-based positions of every item when each row is sorted by decreasing similarity, ties put
    irrelevant items first (then by index)."""
    items = np.broadcast_to(np.arange(similarity.shape[1]), similarity.shape)
    order = np.lexsort(
        (items, relevant, -similarity), axis=-1
    )  # last key first: score, then relevance, then index
    positions = np.empty_like(order)
    np.put_along_axis(positions, order, np.arange(similarity.shape[1])[None, :], axis=1)
    return positions


def _rank_metrics(ranks: np.ndarray, ks, scale: float, prefix: str) -> dict[str, float]:
    metrics = {f"{prefix}_R@{k}": float(scale * np.mean(ranks < k)) for k in ks}
    metrics[f"{prefix}_medR"] = float(np.floor(np.median(ranks)) + 1)
    metrics[f"{prefix}_meanR"] = float(np.mean(ranks) + 1)
    return metrics


def _checked(similarity, clip_index) -> tuple[np.ndarray, np.ndarray]:
    """`(similarity as float64, clip_index as int64)`, or a `ValueError` saying what is wrong with them."""
    similarity = np.asarray(similarity, dtype=np.float64)
    clip_index = np.asarray(clip_index, dtype=np.int64)
    if similarity.ndim != 2:
        raise ValueError(
            f"The similarity must be a (num_captions, num_clips) matrix, got shape {similarity.shape}."
        )
    num_captions, num_clips = similarity.shape
    if clip_index.shape != (num_captions,):
        raise ValueError("Give exactly one clip index per caption (per similarity row).")
    if num_captions == 0:
        raise ValueError("At least one caption is needed.")
    if clip_index.min() < 0 or clip_index.max() >= num_clips:
        raise ValueError(f"Clip indices must lie in [0, {num_clips}).")
    return similarity, clip_index


def text_to_audio_ranks(similarity, clip_index) -> np.ndarray:
    """The 0-based text-to-audio rank of every caption's own clip (`(num_captions,)`; ties count against the query):
    what [`retrieval_metrics`]' `t2a_*` metrics summarise, per query (e.g. to compare two models query by query).

    Args: as [`retrieval_metrics`].
    """
    similarity, clip_index = _checked(similarity, clip_index)
    relevant = clip_index[:, None] == np.arange(similarity.shape[1])[None, :]  # (captions, clips)
    return _ranked_positions(similarity, relevant)[np.arange(len(clip_index)), clip_index]


def retrieval_metrics(similarity, clip_index, ks=DEFAULT_KS, percentage: bool = True) -> dict[str, float]:
    """R@k, median / mean rank and mAP@10 in both directions from one caption-by-clip similarity matrix.

    Args:
        similarity (array-like of shape `(num_captions, num_clips)`): e.g. cosines of the global embeddings.
        clip_index (array-like of shape `(num_captions,)`): the clip of every caption.
        ks (`tuple[int, ...]`, *optional*, defaults to `(1, 5, 10, 50)`): the k of R@k.
        percentage (`bool`, *optional*, defaults to `True`): R@k and mAP@10 in percent (as the official code prints
            them) or as fractions.

    Returns:
        `dict`: for each direction `d` in `("t2a", "a2t")`, `d_R@k` for every k, `d_medR`, `d_meanR`, `d_mAP@10`, and
        `t2a_num_queries` (captions) and `a2t_num_queries` (clips with at least one caption).
    """
    similarity, clip_index = _checked(similarity, clip_index)
    scale = 100.0 if percentage else 1.0
    ks = tuple(int(k) for k in ks)
    num_captions, num_clips = similarity.shape
    relevant = clip_index[:, None] == np.arange(num_clips)[None, :]  # (captions, clips)

    t2a_ranks = text_to_audio_ranks(similarity, clip_index)
    metrics = _rank_metrics(t2a_ranks, ks, scale, "t2a")
    metrics["t2a_mAP@10"] = float(scale * np.where(t2a_ranks < 10, 1.0 / (t2a_ranks + 1.0), 0.0).mean())
    metrics["t2a_num_queries"] = int(num_captions)

    queries = np.flatnonzero(relevant.any(axis=0))  # clips with at least one caption
    positions = _ranked_positions(similarity.T[queries], relevant.T[queries])  # (queries, captions)
    a2t_ranks, a2t_ap = [], []
    for row, clip in enumerate(queries):
        ranks = np.sort(positions[row, clip_index == clip])  # 0-based, distinct
        top = ranks[ranks < 10] + 1
        a2t_ranks.append(ranks[0])
        a2t_ap.append(np.sum(np.arange(1, top.size + 1) / top) / ranks.size)
    metrics.update(_rank_metrics(np.asarray(a2t_ranks), ks, scale, "a2t"))
    metrics["a2t_mAP@10"] = float(scale * np.mean(a2t_ap))
    metrics["a2t_num_queries"] = int(queries.size)
    return metrics


__all__ = ["DEFAULT_KS", "retrieval_metrics", "text_to_audio_ranks"]
