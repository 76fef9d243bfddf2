"""Multi-label audio tagging mAP: macro average of the per-class average precision (FSD50K, AudioSet)."""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import average_precision_score

_DESCRIPTION = """\
Mean average precision (mAP) of multi-label audio tagging: for every class, the clips are ranked by their score
for that class and the average precision (AP) of that ranking against the multi-hot targets is computed with
scikit-learn's `average_precision_score` (AP = sum_n (R_n - R_{n-1}) P_n over the distinct score thresholds,
no interpolation; tied scores form one threshold). mAP is the unweighted mean of the per-class APs (macro
average), the usual AudioSet / FSD50K tagging mAP.

Classes without any positive clip have no defined AP; they are excluded from the mean and listed in
`excluded_classes` (scikit-learn would warn and return a meaningless value for them). For zero-shot tagging with
MGA-CLAP the scores are the cosines between the clip embedding and the class-name embeddings (an inferred
protocol: tagging is not among the official evaluation scripts). Values are fractions in [0, 1].
"""

_CITATION = """\
@inproceedings{gemmeke2017audioset,
  title     = {Audio Set: An ontology and human-labeled dataset for audio events},
  author    = {Gemmeke, Jort F. and Ellis, Daniel P. W. and Freedman, Dylan and Jansen, Aren and Lawrence, Wade and
               Moore, R. Channing and Plakal, Manoj and Ritter, Marvin},
  booktitle = {Proc. IEEE ICASSP},
  year      = {2017}
}
@article{scikit-learn,
  title   = {Scikit-learn: Machine Learning in {P}ython},
  author  = {Pedregosa, F. and others},
  journal = {Journal of Machine Learning Research},
  volume  = {12},
  pages   = {2825--2830},
  year    = {2011}
}
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (`list` of `list` of `float`): one row of class scores per clip, (num_clips, num_classes).
    references (`list` of `list` of `int`): the multi-hot targets, same shape (0 / 1 per class).
    class_names (`list` of `str`, optional): names used for `per_class_ap` and `excluded_classes` keys.
Returns:
    `mAP` (mean AP over the classes with at least one positive), `num_classes_evaluated`,
    `excluded_classes` (list of class names / indices without positives) and `per_class_ap` (dict class name or
    index (as str) -> AP, evaluated classes only).
Examples:
    >>> import evaluate
    >>> metric = evaluate.load("metrics/audio_tagging_map")
    >>> out = metric.compute(predictions=[[0.9, 0.2], [0.4, 0.8], [0.6, 0.1]], references=[[1, 0], [0, 1], [1, 0]])
    >>> out["mAP"]
    1.0
"""


def tagging_map(scores, targets, class_names=None) -> dict:
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets)
    if scores.ndim != 2 or scores.shape != targets.shape:
        raise ValueError(
            f"predictions {scores.shape} and references {targets.shape} must be equal-shaped matrices"
        )
    if not np.isin(targets, (0, 1)).all():
        raise ValueError("references must be multi-hot (0 / 1)")
    targets = targets.astype(np.int64)
    num_classes = scores.shape[1]
    names = [str(c) for c in range(num_classes)] if class_names is None else [str(c) for c in class_names]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")
    per_class, excluded = {}, []
    for c in range(num_classes):
        if targets[:, c].sum() == 0:
            excluded.append(names[c])
            continue
        per_class[names[c]] = float(average_precision_score(targets[:, c], scores[:, c]))
    return {
        "mAP": float(np.mean(list(per_class.values()))) if per_class else float("nan"),
        "num_classes_evaluated": len(per_class),
        "excluded_classes": excluded,
        "per_class_ap": per_class,
    }


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class AudioTaggingMap(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Sequence(datasets.Value("int64")),
                }
            ),
            reference_urls=[
                "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.average_precision_score.html"
            ],
        )

    def _compute(self, predictions, references, class_names=None):
        return tagging_map(predictions, references, class_names=class_names)
