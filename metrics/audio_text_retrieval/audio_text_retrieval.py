"""Audio-text retrieval metrics (R@k, median / mean rank, mAP@10) in both directions.

Follows the evaluation of the official MGA-CLAP code (``tools/utils.py::t2a`` / ``a2t``), itself identical to
WavCaps and LAION-CLAP, with several captions per clip.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Audio-text retrieval in both directions from one caption-by-clip similarity matrix, with the conventions of the
official MGA-CLAP / WavCaps evaluation (several captions per clip, e.g. 5 for Clotho and AudioCaps).

Text -> audio ("t2a"): every caption queries all clips. Its 0-based rank r is the position of its own clip in
the clips sorted by decreasing similarity. R@k = share of captions with r < k; mAP@10 = mean over captions of
1 / (r + 1) if r < 10 else 0 (one relevant item per query, so AP@10 is the reciprocal rank cut at 10).

Audio -> text ("a2t"): every clip that has at least one caption queries all captions (the same similarity
matrix, read column-wise). R@k uses the best (smallest) rank among the clip's captions. mAP@10 per clip =
(1 / n_i) * sum_{j=1..m} j / r_j, where n_i is the clip's number of ground-truth captions, r_1 < ... < r_m are
the 1-based ranks of those of its captions ranked in the top 10 (m <= n_i). With 5 captions per clip this is the
official "(1/5) * sum" exactly; the official code hard-codes 5, here it is generalised to n_i.
Clips without any caption are still candidates for text -> audio but issue no audio -> text query.

Median rank = floor(median of the 0-based ranks) + 1, mean rank = mean of the 0-based ranks + 1 (1-based, as
in the official code). Ties in similarity count against the query: an item scoring exactly as much as a relevant
one ranks before it, so constant scores rank every relevant item last and the result never depends on the order
of the clips or captions (the official code uses a non-stable numpy argsort). This module is the standalone copy
of `transformers_mgaclap.evaluation.retrieval.retrieval_metrics`; the package's tests check that both agree.

R@k and mAP@10 are percentages (0-100) by default, as printed by the official code; pass ``percentage=False``
for fractions in [0, 1]. Ranks are never scaled.
"""

_CITATION = """\
@inproceedings{li2024advancing,
  title     = {Advancing Multi-grained Alignment for Contrastive Language-Audio Pre-training},
  author    = {Li, Yiming and Guo, Zhifang and Wang, Xiangdong and Liu, Hong},
  booktitle = {Proceedings of the 32nd ACM International Conference on Multimedia},
  year      = {2024}
}
@article{mei2024wavcaps,
  title   = {WavCaps: A ChatGPT-Assisted Weakly-Labelled Audio Captioning Dataset for Audio-Language Multimodal
             Research},
  author  = {Mei, Xinhao and Meng, Chutong and Liu, Haohe and Kong, Qiuqiang and Ko, Tom and Zhao, Chengqi and
             Plumbley, Mark D. and Zou, Yuexian and Wang, Wenwu},
  journal = {IEEE/ACM Transactions on Audio, Speech, and Language Processing},
  year    = {2024}
}
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (`list` of `list` of `float`): one row per caption: its similarity (e.g. cosine) to every
        clip, so the matrix is (num_captions, num_clips). All rows must have the same length.
    references (`list` of `int`): for every caption, the index (column) of its clip.
    ks (`tuple` of `int`, optional): the k of R@k. Defaults to (1, 5, 10, 50).
    percentage (`bool`, optional): report R@k and mAP@10 in percent (default, as the official code) or as
        fractions.
Returns:
    A dict with, for each direction `d` in ("t2a", "a2t"): `d_R@k` for every k, `d_medR`, `d_meanR`,
    `d_mAP@10`, and the query counts `t2a_num_queries` (captions) and `a2t_num_queries` (clips with at least
    one caption).
Examples:
    >>> import evaluate
    >>> metric = evaluate.load("metrics/audio_text_retrieval")
    >>> sims = [[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.6, 0.4]]  # 4 captions, 2 clips
    >>> out = metric.compute(predictions=sims, references=[0, 1, 1, 0])
    >>> out["t2a_R@1"], out["a2t_R@1"]
    (75.0, 100.0)
"""


def _ranked_positions(sim: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """0-based position of every item in its row sorted by decreasing similarity; ties put irrelevant items first."""
    items = np.broadcast_to(np.arange(sim.shape[1]), sim.shape)
    order = np.lexsort((items, relevant, -sim), axis=-1)
    positions = np.empty_like(order)
    np.put_along_axis(positions, order, np.arange(sim.shape[1])[None, :], axis=1)
    return positions


def _recalls_and_ranks(ranks: np.ndarray, ks, scale: float, prefix: str) -> dict:
    out = {}
    for k in ks:
        out[f"{prefix}_R@{k}"] = float(scale * np.mean(ranks < k))
    out[f"{prefix}_medR"] = float(np.floor(np.median(ranks)) + 1)
    out[f"{prefix}_meanR"] = float(np.mean(ranks) + 1)
    return out


def retrieval_metrics(similarity, clip_index, ks=(1, 5, 10, 50), percentage=True) -> dict:
    """R@k, medR, meanR and mAP@10 for text->audio and audio->text from a (captions, clips) similarity matrix."""
    sim = np.asarray(similarity, dtype=np.float64)
    clip_index = np.asarray(clip_index, dtype=np.int64)
    if sim.ndim != 2:
        raise ValueError(f"predictions must form a (num_captions, num_clips) matrix, got shape {sim.shape}")
    num_captions, num_clips = sim.shape
    if clip_index.shape != (num_captions,):
        raise ValueError("references must hold exactly one clip index per caption (per predictions row)")
    if num_captions == 0:
        raise ValueError("at least one caption is needed")
    if clip_index.min() < 0 or clip_index.max() >= num_clips:
        raise ValueError(f"clip indices must lie in [0, {num_clips})")
    scale = 100.0 if percentage else 1.0
    ks = tuple(int(k) for k in ks)
    relevant = clip_index[:, None] == np.arange(num_clips)[None, :]

    # Text -> audio: position of the caption's clip in its row.
    t2a_ranks = _ranked_positions(sim, relevant)[np.arange(num_captions), clip_index]
    out = _recalls_and_ranks(t2a_ranks, ks, scale, "t2a")
    reciprocal = np.where(t2a_ranks < 10, 1.0 / (t2a_ranks + 1.0), 0.0)
    out["t2a_mAP@10"] = float(scale * reciprocal.mean())
    out["t2a_num_queries"] = int(num_captions)

    # Audio -> text: every clip with captions queries all captions (column of the same matrix).
    position = _ranked_positions(sim.T, relevant.T)  # (clips, captions)
    a2t_ranks, a2t_ap = [], []
    for clip in range(num_clips):
        captions = np.flatnonzero(clip_index == clip)
        if captions.size == 0:
            continue
        ranks = np.sort(position[clip, captions])  # 0-based, distinct
        a2t_ranks.append(ranks[0])
        top = ranks[ranks < 10] + 1
        a2t_ap.append(np.sum(np.arange(1, top.size + 1) / top) / captions.size)
    a2t_ranks = np.asarray(a2t_ranks)
    out.update(_recalls_and_ranks(a2t_ranks, ks, scale, "a2t"))
    out["a2t_mAP@10"] = float(scale * np.mean(a2t_ap))
    out["a2t_num_queries"] = int(a2t_ranks.size)
    return out


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class AudioTextRetrieval(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Value("int64"),
                }
            ),
        )

    def _compute(self, predictions, references, ks=(1, 5, 10, 50), percentage=True):
        return retrieval_metrics(predictions, references, ks=ks, percentage=percentage)
