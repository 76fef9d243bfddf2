"""Zero-shot audio classification accuracy (top-1 / top-k), optionally averaged over folds (ESC-50, US8K)."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Top-1 (and optionally top-k) accuracy of zero-shot audio classification from one row of class scores per clip
(e.g. cosine similarities between the clip embedding and the class-prompt embeddings) and the integer label.

The prediction is the argmax of the row; ties go to the lowest class index (as `numpy.argmax` and
`torch.argmax`). A clip is top-k correct when its label is among the k highest scores (ties broken by the
lower class index).

With `folds` (one fold id per clip), the accuracy is computed per fold and the reported accuracy is the
unweighted mean of the per-fold accuracies, as in the official MGA-CLAP evaluation: ESC-50 = mean over its
5 folds, UrbanSound8K = mean of its 10 per-fold accuracies (not weighted by the number of clips).
Without `folds`, all clips form one set (e.g. the VGGSound test csv).
Values are fractions in [0, 1].
"""

_CITATION = """\
@inproceedings{li2024advancing,
  title     = {Advancing Multi-grained Alignment for Contrastive Language-Audio Pre-training},
  author    = {Li, Yiming and Guo, Zhifang and Wang, Xiangdong and Liu, Hong},
  booktitle = {Proceedings of the 32nd ACM International Conference on Multimedia},
  year      = {2024}
}
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (`list` of `list` of `float`): one row of class scores per clip, shape (num_clips, num_classes).
    references (`list` of `int`): the class index of every clip.
    top_k (`int` or `tuple` of `int`, optional): the k values to report besides top-1. Defaults to (1,).
    folds (`list`, optional): one fold id (int or str) per clip, aligned with all predictions given (also
        those added with `add_batch`). When given, every accuracy is the mean of the per-fold accuracies.
Returns:
    `accuracy` (top-1), `top{k}_accuracy` for every k > 1 requested, `num_examples`; with folds also
    `num_folds` and `fold_accuracy` (a dict fold id (as str) -> top-1 accuracy of that fold).
Examples:
    >>> import evaluate
    >>> metric = evaluate.load("metrics/audio_classification_accuracy")
    >>> metric.compute(predictions=[[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]], references=[1, 1, 1])["accuracy"]
    0.6666666666666666
"""


def _topk_correct(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.any(order == labels[:, None], axis=1)


def classification_accuracy(scores, labels, top_k=(1,), folds=None) -> dict:
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if scores.ndim != 2 or scores.shape[0] != labels.shape[0]:
        raise ValueError("predictions must be a (num_clips, num_classes) matrix with one row per reference")
    if labels.size == 0:
        raise ValueError("at least one clip is needed")
    if labels.min() < 0 or labels.max() >= scores.shape[1]:
        raise ValueError(f"labels must lie in [0, {scores.shape[1]})")
    ks = sorted({1, *((top_k,) if isinstance(top_k, int) else tuple(int(k) for k in top_k))})
    correct = {k: _topk_correct(scores, labels, k) for k in ks}
    out = {}
    if folds is None:
        for k in ks:
            out["accuracy" if k == 1 else f"top{k}_accuracy"] = float(correct[k].mean())
    else:
        folds = np.asarray([str(f) for f in folds])
        if folds.shape[0] != labels.shape[0]:
            raise ValueError("folds must hold one fold id per clip")
        fold_ids = sorted(set(folds.tolist()), key=lambda f: (len(f), f))
        for k in ks:
            per_fold = [float(correct[k][folds == f].mean()) for f in fold_ids]
            out["accuracy" if k == 1 else f"top{k}_accuracy"] = float(np.mean(per_fold))
            if k == 1:
                out["fold_accuracy"] = dict(zip(fold_ids, per_fold, strict=True))
        out["num_folds"] = len(fold_ids)
    out["num_examples"] = int(labels.size)
    return out


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class AudioClassificationAccuracy(evaluate.Metric):
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

    def _compute(self, predictions, references, top_k=(1,), folds=None):
        return classification_accuracy(predictions, references, top_k=top_k, folds=folds)
