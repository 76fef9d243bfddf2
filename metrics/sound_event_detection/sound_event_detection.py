"""Zero-shot sound event detection: PSDS1, PSDS2, collar- and segment-based best F1 through sed_scores_eval.

Reproduces the metric part of the official MGA-CLAP ``zero_shot_sed.py``: frame scores are median-filtered over
3 frames per class, turned into sed_scores_eval score data frames and evaluated threshold-free.
"""

import sys
import types

import datasets
import evaluate
import numpy as np
from scipy.ndimage import median_filter


def _import_sed_scores_eval():
    """Import sed_scores_eval; tolerate a setuptools without ``pkg_resources``.

    sed_scores_eval imports sed_eval, which imports dcase_util, whose ``dcase_util.utils.utils`` does
    ``import pkg_resources`` at import time (only used by its installation checker). setuptools >= 82 no longer
    ships ``pkg_resources``; an empty stand-in module is then registered for the duration of the import (and
    removed afterwards). Nothing this metric calls uses it.
    """
    stand_in = None
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        stand_in = sys.modules.setdefault("pkg_resources", types.ModuleType("pkg_resources"))
    try:
        import sed_scores_eval
        from sed_scores_eval.base_modules import statistics
        from sed_scores_eval.base_modules.scores import create_score_dataframe
    finally:
        if stand_in is not None and sys.modules.get("pkg_resources") is stand_in:
            del sys.modules["pkg_resources"]  # later `import pkg_resources` fails as it would have

    # sed_scores_eval 0.0.4 passes `DataFrame.to_numpy()` views to a Cython function typed with writable
    # memoryviews; under pandas >= 3 (copy-on-write) those views are read-only and the call fails with
    # "ValueError: buffer source array is read-only". Hand it writable copies (same values, same dtypes).
    original = statistics.onset_offset_curves
    if not getattr(original, "_copies_inputs", False):

        def onset_offset_curves(scores, timestamps, change_point_candidates=None):
            if change_point_candidates is not None:
                change_point_candidates = np.array(change_point_candidates)
            return original(np.array(scores), np.array(timestamps), change_point_candidates)

        onset_offset_curves._copies_inputs = True
        statistics.onset_offset_curves = onset_offset_curves
    return sed_scores_eval, create_score_dataframe


sed_scores_eval, create_score_dataframe = _import_sed_scores_eval()

# The parameter sets of the official zero_shot_sed.py (= DCASE Task 4 scenarios 1 and 2).
PSDS_SCENARIOS = {
    "psds1": dict(
        dtc_threshold=0.7, gtc_threshold=0.7, cttc_threshold=None, alpha_ct=0.0, alpha_st=1.0, max_efpr=100.0
    ),
    "psds2": dict(
        dtc_threshold=0.1, gtc_threshold=0.1, cttc_threshold=0.3, alpha_ct=0.5, alpha_st=1.0, max_efpr=100.0
    ),
}
# Diagnostics, never headlines: the same scenarios without the penalty on the across-class spread of the TPR
# (alpha_st = 0). With few clips per class the per-class TPRs spread widely and PSDS1 is then 0 even where the
# classes are detected on average; these show what that penalty hides.
PSDS_SCENARIOS.update(
    {f"{name}_alpha_st0": {**params, "alpha_st": 0.0} for name, params in list(PSDS_SCENARIOS.items())}
)
COLLAR_F1 = dict(onset_collar=0.2, offset_collar=0.2, offset_collar_rate=0.2, time_decimals=30)
SEGMENT_F1 = dict(segment_length=1.0)
ALL_METRICS = ("psds1", "psds2", "collar_f1", "segment_f1")  # the default set
DIAGNOSTIC_METRICS = ("psds1_alpha_st0", "psds2_alpha_st0")  # on request only

_DESCRIPTION = """\
Threshold-free sound event detection metrics computed with sed_scores_eval (Ebbers et al., ICASSP 2022),
exactly as the official MGA-CLAP zero-shot SED evaluation (`zero_shot_sed.py`):

- post-processing: a median filter of 3 frames along time, per class (`scipy.ndimage.median_filter(scores,
  (3, 1))`, option `median_filter_frames`; 1 disables it); scores are used as given (raw cosines in MGA-CLAP,
  no sigmoid / softmax);
- `psds1`: `intersection_based.psds` with dtc = gtc = 0.7, cttc None, alpha_ct 0, alpha_st 1, max_efpr 100
  (eFPR per hour);
- `psds2`: dtc = gtc = 0.1, cttc 0.3, alpha_ct 0.5, alpha_st 1, max_efpr 100;
- `collar_f1`: `collar_based.best_fscore`, onset / offset collar 0.2 s, offset_collar_rate 0.2,
  time_decimals 30; macro average over classes of the best (oracle-threshold, optimistic) F1 per class;
- `segment_f1`: `segment_based.best_fscore` with 1 s segments, macro average of the best F1 per class;
- on request only, diagnostics that are not the standard metrics: `psds1_alpha_st0` and `psds2_alpha_st0`, the same
  scenarios with alpha_st 0 (no penalty on the across-class standard deviation of the TPR).

With a single event class there are no cross triggers: PSDS2 is then computed with cttc None and alpha_ct 0
(sed_scores_eval 0.0.4 fails on a cttc with one class). By default clips without any ground-truth event are
dropped from scores and ground truth, as the official script does (`drop_clips_without_events`). All values
are fractions in [0, 1]. PSDS is computed exactly over all operating points (no threshold grid).

Speed (2 CPU cores, 200 clips x 50 classes x 32 frames): PSDS1 0.9 s, PSDS2 6.5 s (cross triggers, grows
with the square of the number of classes: use `num_jobs` for AudioSet-strong's 407 classes), collar F1 0.9 s,
segment F1 0.5 s. On import, sed_scores_eval 0.0.4 (the latest release) gets writable copies of the score
arrays its Cython code receives (pandas 3's copy-on-write views are read-only and made it fail), and an empty
`pkg_resources` stand-in while it imports if setuptools no longer provides one (dcase_util imports it).
"""

_CITATION = """\
@inproceedings{ebbers2022threshold,
  title     = {Threshold-Independent Evaluation of Sound Event Detection Scores},
  author    = {Ebbers, Janek and Haeb-Umbach, Reinhold and Serizel, Romain},
  booktitle = {Proc. IEEE ICASSP},
  year      = {2022}
}
@inproceedings{bilen2020framework,
  title     = {A Framework for the Robust Evaluation of Sound Event Detection},
  author    = {Bilen, Cagdas and Ferroni, Giacomo and Tuveri, Francesco and Azcarreta, Juan and Krstulovic, Sacha},
  booktitle = {Proc. IEEE ICASSP},
  year      = {2020}
}
@inproceedings{li2024advancing,
  title     = {Advancing Multi-grained Alignment for Contrastive Language-Audio Pre-training},
  author    = {Li, Yiming and Guo, Zhifang and Wang, Xiangdong and Liu, Hong},
  booktitle = {Proceedings of the 32nd ACM International Conference on Multimedia},
  year      = {2024}
}
"""

_KWARGS_DESCRIPTION = """\
Args (one entry per audio clip; all four are inputs, so they can also be given through `add_batch`):
    predictions (`list` of `list` of `list` of `float`): per clip, the frame scores, shape (T, C), column c
        being the score of `event_classes[c]`. T may differ between clips.
    references (`list` of `list` of `dict`): per clip, its ground-truth events
        `{"event_label": str, "onset": float, "offset": float}` (seconds); may be empty.
    timestamps (`list` of `list` of `float`): per clip, the T + 1 frame boundaries in seconds (frame t spans
        [timestamps[t], timestamps[t + 1]]); MGA-CLAP: k * 10 / 32 for k = 0..32.
    durations (`list` of `float`): per clip, the audio duration in seconds (used for the false-positive rates
        and the segment grid).
Options:
    event_classes (`list` of `str`, required): the class names of the score columns; every ground-truth
        label must be one of them.
    audio_ids (`list` of `str`, optional): clip names (default "clip_0", "clip_1", ...), aligned with the inputs.
    metrics (`tuple` of `str`, optional): a subset of ("psds1", "psds2", "collar_f1", "segment_f1") (the default:
        all four), plus the diagnostics "psds1_alpha_st0" / "psds2_alpha_st0" on request.
    median_filter_frames (`int`, optional): median-filter length in frames, default 3 (official); 1 = none.
    drop_clips_without_events (`bool`, optional): default True (official).
    num_jobs (`int`, optional): processes used by sed_scores_eval, default 1.
Returns:
    `psds1`, `psds2`, `collar_f1`, `segment_f1`, `psds1_alpha_st0`, `psds2_alpha_st0` (floats, those requested;
        the F1s are macro averages), with
    the F1s also `collar_f1_micro` / `segment_f1_micro` (sed_scores_eval's micro average at the per-class best
    thresholds) and `collar_f1_per_class` / `segment_f1_per_class` (dict class -> best F1); `num_clips`.
Examples:
    >>> import evaluate
    >>> metric = evaluate.load("metrics/sound_event_detection")
    >>> scores = [[[0.0], [1.0], [1.0], [0.0]]]  # one clip, 4 frames of 1 s, one class
    >>> out = metric.compute(predictions=scores, references=[[{"event_label": "dog", "onset": 1.0, "offset": 3.0}]],
    ...                      timestamps=[[0.0, 1.0, 2.0, 3.0, 4.0]], durations=[4.0], event_classes=["dog"],
    ...                      median_filter_frames=1)
    >>> round(out["psds1"], 3), out["collar_f1"], out["segment_f1"]
    (1.0, 1.0, 1.0)
"""


def build_sed_inputs(
    predictions,
    references,
    timestamps,
    durations,
    event_classes,
    audio_ids=None,
    median_filter_frames=3,
    drop_clips_without_events=True,
):
    """The sed_scores_eval inputs: (scores dict of data frames, ground-truth dict, durations dict)."""
    event_classes = [str(c) for c in event_classes]
    n = len(predictions)
    if not (len(references) == len(timestamps) == len(durations) == n):
        raise ValueError("predictions, references, timestamps and durations must have one entry per clip")
    audio_ids = [f"clip_{i}" for i in range(n)] if audio_ids is None else [str(a) for a in audio_ids]
    if len(audio_ids) != n or len(set(audio_ids)) != n:
        raise ValueError("audio_ids must be unique and give one name per clip")
    scores, ground_truth, audio_durations = {}, {}, {}
    for audio_id, frame_scores, events, stamps, duration in zip(
        audio_ids, predictions, references, timestamps, durations, strict=True
    ):
        events = [(float(e["onset"]), float(e["offset"]), str(e["event_label"])) for e in events]
        unknown = {label for _, _, label in events} - set(event_classes)
        if unknown:
            raise ValueError(f"ground-truth labels {sorted(unknown)} of {audio_id} are not in event_classes")
        if drop_clips_without_events and not events:
            continue
        frame_scores = np.asarray(frame_scores, dtype=np.float64)
        if frame_scores.ndim != 2 or frame_scores.shape[1] != len(event_classes):
            raise ValueError(
                f"{audio_id}: frame scores must be (T, {len(event_classes)} classes), got {frame_scores.shape}"
            )
        if median_filter_frames and median_filter_frames > 1:
            frame_scores = median_filter(frame_scores, size=(int(median_filter_frames), 1))
        scores[audio_id] = create_score_dataframe(
            frame_scores, np.asarray(stamps, dtype=np.float64), event_classes
        )
        ground_truth[audio_id] = events
        audio_durations[audio_id] = float(duration)
    if not scores:
        raise ValueError("no clip left to evaluate (every clip is without ground-truth events)")
    return scores, ground_truth, audio_durations


def sed_metrics(scores, ground_truth, audio_durations, metrics=ALL_METRICS, num_jobs=1) -> dict:
    unknown = set(metrics) - set(ALL_METRICS) - set(DIAGNOSTIC_METRICS)
    if unknown:
        raise ValueError(
            f"unknown metrics {sorted(unknown)}; choose among {ALL_METRICS + DIAGNOSTIC_METRICS}"
        )
    out = {}
    num_classes = len(next(iter(scores.values())).columns) - 2
    for name in PSDS_SCENARIOS:
        if name in metrics:
            params = dict(PSDS_SCENARIOS[name])
            if num_classes == 1:
                # No other class, hence no cross trigger; sed_scores_eval 0.0.4 crashes on a cttc with a
                # single class ("unhashable type: 'numpy.ndarray'"), so drop the (then void) cross-trigger term.
                params.update(cttc_threshold=None, alpha_ct=0.0)
            psds_value, *_ = sed_scores_eval.intersection_based.psds(
                scores=scores,
                ground_truth=ground_truth,
                audio_durations=audio_durations,
                num_jobs=num_jobs,
                **params,
            )
            out[name] = float(psds_value)
    if "collar_f1" in metrics:
        f_best, *_ = sed_scores_eval.collar_based.best_fscore(
            scores=scores, ground_truth=ground_truth, num_jobs=num_jobs, **COLLAR_F1
        )
        out["collar_f1"] = float(f_best["macro_average"])
        out["collar_f1_micro"] = float(f_best["micro_average"])
        out["collar_f1_per_class"] = {k: float(v) for k, v in f_best.items() if not k.endswith("_average")}
    if "segment_f1" in metrics:
        f_best, *_ = sed_scores_eval.segment_based.best_fscore(
            scores=scores,
            ground_truth=ground_truth,
            audio_durations=audio_durations,
            num_jobs=num_jobs,
            **SEGMENT_F1,
        )
        out["segment_f1"] = float(f_best["macro_average"])
        out["segment_f1_micro"] = float(f_best["micro_average"])
        out["segment_f1_per_class"] = {k: float(v) for k, v in f_best.items() if not k.endswith("_average")}
    out["num_clips"] = len(scores)
    return out


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SoundEventDetection(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Sequence(datasets.Value("float64"))),
                    "references": [
                        {
                            "event_label": datasets.Value("string"),
                            "onset": datasets.Value("float64"),
                            "offset": datasets.Value("float64"),
                        }
                    ],
                    "timestamps": datasets.Sequence(datasets.Value("float64")),
                    "durations": datasets.Value("float64"),
                }
            ),
            codebase_urls=["https://github.com/fgnt/sed_scores_eval"],
        )

    def _compute(
        self,
        predictions,
        references,
        timestamps,
        durations,
        event_classes=None,
        audio_ids=None,
        metrics=ALL_METRICS,
        median_filter_frames=3,
        drop_clips_without_events=True,
        num_jobs=1,
    ):
        if event_classes is None:
            raise ValueError("event_classes (the class name of every score column) is required")
        scores, ground_truth, audio_durations = build_sed_inputs(
            predictions,
            references,
            timestamps,
            durations,
            event_classes,
            audio_ids=audio_ids,
            median_filter_frames=median_filter_frames,
            drop_clips_without_events=drop_clips_without_events,
        )
        return sed_metrics(scores, ground_truth, audio_durations, metrics=tuple(metrics), num_jobs=num_jobs)
