"""Text-to-audio grounding PSDS (psds1, psds2, psdsm) through psds_eval with the official MGA-CLAP decoding."""

import math
import warnings

import datasets
import evaluate
import numpy as np
import pandas as pd
from psds_eval import PSDSEval, PSDSEvalError
from scipy.ndimage import median_filter


def _step_curve(x, xp, yp):
    """`PSDSEval.step_curve` of psds_eval 0.5.3 with `.ffill()` for the removed `fillna(method="ffill")`.

    psds_eval 0.5.3 (the latest release) calls `DataFrame.fillna(method="ffill")`, which pandas 3 removed
    ("TypeError: NDFrame.fillna() got an unexpected keyword argument 'method'"). Same computation otherwise.
    """
    roc_orig = pd.DataFrame({"x": xp, "y": yp})
    roc_valid_only = roc_orig.groupby("x").agg("max").reset_index().sort_values(by="x")
    if x.size < roc_valid_only.x.size:
        raise PSDSEvalError(f"x: {x.size}, xp: {xp.size}")
    roc_valid_only.y = roc_valid_only.y.cummax()
    roc_new = pd.merge(pd.Series(x, name="x"), roc_valid_only, how="outer", on="x").ffill().fillna(value=0)
    return roc_new.y.values


def _auc(x, y, max_x=None, decreasing_y=False):
    """`PSDSEval._auc` of psds_eval 0.5.3 without `int()` of a 2-d array, which numpy 2 rejects.

    The original does `int(np.argwhere(_x == max_x))` ("TypeError: only 0-dimensional arrays can be converted
    to Python scalars" under numpy >= 2); the index is now taken with `np.flatnonzero(...)[0]`. Same area.
    """
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
        raise PSDSEvalError("x and y must be provided as a numpy.ndarray")
    if x.ndim > 1 or y.ndim > 1:
        raise PSDSEvalError("x or y are not 1-dimensional numpy.ndarray")
    if x.size != y.size:
        raise PSDSEvalError(f"x and y must be of equal length {x.size} != {y.size}")
    if np.any(np.diff(x) < 0):
        raise PSDSEvalError("non-decreasing property not verified for x")
    if not decreasing_y and np.any(np.diff(y) < 0):
        raise PSDSEvalError("non-decreasing property not verified for y")
    _x = np.array(x)
    _y = np.array(y)
    if max_x is None:
        max_x = _x.max()
    if max_x not in _x:
        _x = np.sort(np.concatenate([_x, [max_x]]))
        max_i = int(np.flatnonzero(_x == max_x)[0])
        _y = np.concatenate([_y[:max_i], [_y[max_i - 1]], _y[max_i:]])
    valid_idx = _x <= max_x
    dx = np.diff(_x[valid_idx])
    _y = np.array(_y[valid_idx])[:-1]
    if dx.size != _y.size:
        raise PSDSEvalError(f"{dx.size} != {_y.size}")
    return np.sum(dx * _y)


_original_effective_fp_rate = getattr(PSDSEval._effective_fp_rate, "_original", PSDSEval._effective_fp_rate)


def _effective_fp_rate(self, alpha_ct=0.0):
    """`PSDSEval._effective_fp_rate` where a class without any other class has no cross-trigger term.

    psds_eval >= 0.5.0 fills the cross-trigger rates of a class with itself with NaN, so with a single event
    class (grounding: every query has the label "fake_event") the mean cross-trigger rate is NaN, the eFPR
    `fpr + alpha_ct * NaN` is NaN even for alpha_ct = 0 and the PSDS comes out as 0 for any system (checked
    with pandas 2.1 / numpy 1.26 as well). Here an all-NaN mean counts as 0, i.e. eFPR = FPR, which is the
    definition for alpha_ct = 0 and what psds_eval < 0.5 computed. Rows with other classes are unchanged.
    """
    rates = _original_effective_fp_rate(self, alpha_ct)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Mean of empty slice", category=RuntimeWarning)
        mean_ctr = np.nanmean(rates.ct_rate, axis=1)
    return rates._replace(effective_fp_rate=rates.fp_rate + alpha_ct * np.nan_to_num(mean_ctr, nan=0.0))


_effective_fp_rate._original = _original_effective_fp_rate

# Make psds_eval 0.5.3 run under pandas 3 / numpy 2 and score single-class problems (the class is patched
# once, for every user of psds_eval in the process).
PSDSEval.step_curve = staticmethod(_step_curve)
PSDSEval._auc = staticmethod(_auc)
PSDSEval._effective_fp_rate = _effective_fp_rate

# dtc = gtc of the three scenarios of the official zero_shot_grounding.py (cttc 0, alpha_ct = alpha_st = 0).
SCENARIOS = {"psds1": 0.7, "psds2": 0.1, "psdsm": 0.5}
EVENT_LABEL = "fake_event"

_DESCRIPTION = """\
Text-to-audio grounding (AudioGrounding / TAG) evaluated as the official MGA-CLAP `zero_shot_grounding.py`:
every (audio, phrase) pair is one query with a single event label; its frame scores (in MGA-CLAP the sigmoid
of the cosine between the phrase embedding and each frame embedding) are decoded at 50 thresholds
0.01, 0.03, ..., 0.99 (`np.arange(1 / 100, 1, 1 / 50)`), each one an operating point of psds_eval
(`PSDSEval`, Bilen et al. 2020):

1. binarise: score > threshold;
2. median filter over 3 frames (`scipy.ndimage.median_filter`, reflect mode at the edges);
3. connect clusters separated by at most n_connect = ceil(0.5 s / frame hop) frames (2 at 10/32 s);
4. contiguous regions -> detections (onset, offset) in seconds (the frame boundaries).

Ground-truth segments [0, 0] are skipped and queries without any remaining segment are left out entirely, as
in the official script. PSDS with cttc 0, alpha_ct = alpha_st = 0, max_efpr 800 (per hour) at
dtc = gtc = 0.7 (`psds1`), 0.1 (`psds2`) and 0.5 (`psdsm`, printed as "psds_2021" by the official script
and reported as PSDSm in the paper). Values are fractions in [0, 1].

psds_eval warns "A similar operating point exists, skipping this one" whenever two thresholds give the same
detections (frequent: MGA-CLAP scores lie in [0.27, 0.73]); the duplicates add nothing, and this metric
silences that warning (and psds_eval's other numpy / pandas warnings). Speed (2 CPU cores): decoding about
2 ms per query (50 thresholds), psds_eval 2-3 s per scenario for 2000 queries.

psds_eval 0.5.3, the latest release, is patched on import of this module (process-wide, same arithmetic):
`fillna(method="ffill")` (removed in pandas 3) and `int()` of a 2-d array (rejected by numpy 2) are replaced,
and, with a single event class, the cross-trigger term of the eFPR is taken as 0 instead of NaN. Without
this last fix psds_eval >= 0.5.0 returns a PSDS of 0 for every single-class problem such as grounding (the
NaN cross-trigger rate of a class with itself makes eFPR = FPR + 0 * NaN = NaN), with pandas 2 as well.
"""

_CITATION = """\
@inproceedings{bilen2020framework,
  title     = {A Framework for the Robust Evaluation of Sound Event Detection},
  author    = {Bilen, Cagdas and Ferroni, Giacomo and Tuveri, Francesco and Azcarreta, Juan and Krstulovic, Sacha},
  booktitle = {Proc. IEEE ICASSP},
  year      = {2020}
}
@inproceedings{xu2021text,
  title     = {Text-to-Audio Grounding: Building Correspondence Between Captions and Sound Events},
  author    = {Xu, Xuenan and Dinkel, Heinrich and Wu, Mengyue and Yu, Kai},
  booktitle = {Proc. IEEE ICASSP},
  year      = {2021}
}
@inproceedings{li2024advancing,
  title     = {Advancing Multi-grained Alignment for Contrastive Language-Audio Pre-training},
  author    = {Li, Yiming and Guo, Zhifang and Wang, Xiangdong and Liu, Hong},
  booktitle = {Proceedings of the 32nd ACM International Conference on Multimedia},
  year      = {2024}
}
"""

_KWARGS_DESCRIPTION = """\
Args (one entry per (audio, phrase) query; all four are inputs, so they can also be given through `add_batch`):
    predictions (`list` of `list` of `float`): per query, the frame scores (T,) in [0, 1].
    references (`list` of `list` of `list` of `float`): per query, its ground-truth segments
        `[[onset, offset], ...]` in seconds; `[0, 0]` segments are ignored.
    timestamps (`list` of `list` of `float`): per query, the T + 1 frame boundaries in seconds
        (MGA-CLAP: k * 10 / 32, k = 0..32).
    durations (`list` of `float`): per query, the duration in seconds of its audio clip.
Options:
    query_ids (`list` of `str`, optional): names of the queries (default "query_0", ...), e.g.
        "{audiocap_id}_{start_index}" as in the official script.
    n_thresholds (`int`, optional): number of thresholds, default 50 (0.01 ... 0.99).
    median_filter_frames (`int`, optional): default 3.
    connect_seconds (`float`, optional): gaps up to ceil(connect_seconds / frame hop) frames are closed;
        default 0.5. The frame hop is (timestamps[-1] - timestamps[0]) / T.
    max_efpr (`float`, optional): default 800.
    scenarios (`tuple` of `str`, optional): a subset of ("psds1", "psds2", "psdsm"); default all three.
Returns:
    `psds1`, `psds2`, `psdsm` (floats, those requested), `num_queries` (queries with ground truth) and `num_operating_points`
    (distinct detection sets among the thresholds).
Examples:
    >>> import evaluate
    >>> metric = evaluate.load("metrics/text_to_audio_grounding")
    >>> out = metric.compute(predictions=[[0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]], references=[[[1.0, 2.0]]],
    ...                      timestamps=[[0.5 * k for k in range(9)]], durations=[4.0])
    >>> round(out["psds1"], 3)
    1.0
"""


def find_contiguous_regions(activity: np.ndarray) -> np.ndarray:
    """(start, exclusive end) frame indices of the runs of truthy values of a 1-d array."""
    activity = np.asarray(activity).astype(bool)
    padded = np.concatenate(([False], activity, [False]))
    changes = np.flatnonzero(padded[1:] != padded[:-1])
    return changes.reshape(-1, 2)


def connect_regions(regions: np.ndarray, n_connect: int) -> list:
    """Merge consecutive regions separated by at most `n_connect` inactive frames (official `connect_`)."""
    merged = []
    for start, end in regions:
        if merged and start - merged[-1][1] <= n_connect:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    return merged


def decode_query(scores, timestamps, threshold, median_filter_frames=3, n_connect=2) -> list:
    """Detections [(onset_s, offset_s), ...] of one query at one threshold (official grounding decoding)."""
    binary = (np.asarray(scores, dtype=np.float64) > threshold).astype(np.float64)
    if median_filter_frames and median_filter_frames > 1:
        binary = median_filter(binary, size=int(median_filter_frames))
    regions = connect_regions(find_contiguous_regions(binary), n_connect)
    return [(float(timestamps[start]), float(timestamps[end])) for start, end in regions]


def official_thresholds(n_thresholds: int = 50) -> np.ndarray:
    return np.arange(1 / (n_thresholds * 2), 1, 1 / n_thresholds)


def grounding_tables(
    predictions,
    references,
    timestamps,
    durations,
    query_ids=None,
    n_thresholds=50,
    median_filter_frames=3,
    connect_seconds=0.5,
):
    """psds_eval inputs: (ground truth data frame, metadata data frame, {threshold: detections data frame})."""
    n = len(predictions)
    if not (len(references) == len(timestamps) == len(durations) == n):
        raise ValueError("predictions, references, timestamps and durations must have one entry per query")
    query_ids = [f"query_{i}" for i in range(n)] if query_ids is None else [str(q) for q in query_ids]
    if len(query_ids) != n or len(set(query_ids)) != n:
        raise ValueError("query_ids must be unique and give one name per query")
    thresholds = official_thresholds(n_thresholds)
    gt_rows, meta_rows = [], []
    detections = {float(th): [] for th in thresholds}
    for query_id, scores, segments, stamps, duration in zip(
        query_ids, predictions, references, timestamps, durations, strict=True
    ):
        segments = [(float(on), float(off)) for on, off in segments if not (on == 0 and off == 0)]
        if not segments:
            continue  # the official script scores only queries that have ground truth
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        stamps = np.asarray(stamps, dtype=np.float64)
        if stamps.shape != (scores.size + 1,):
            raise ValueError(f"{query_id}: timestamps must hold the T + 1 frame boundaries of the T scores")
        hop = (stamps[-1] - stamps[0]) / scores.size
        n_connect = math.ceil(round(connect_seconds / hop, 9))
        gt_rows += [
            dict(filename=query_id, onset=on, offset=off, event_label=EVENT_LABEL) for on, off in segments
        ]
        meta_rows.append(dict(filename=query_id, duration=float(duration)))
        for th in thresholds:
            detections[float(th)] += [
                dict(filename=query_id, event_label=EVENT_LABEL, onset=on, offset=off)
                for on, off in decode_query(scores, stamps, th, median_filter_frames, n_connect)
            ]
    if not gt_rows:
        raise ValueError("no query with a ground-truth segment")
    columns = ["filename", "event_label", "onset", "offset"]
    detection_tables = {th: pd.DataFrame(rows, columns=columns) for th, rows in detections.items()}
    return pd.DataFrame(gt_rows), pd.DataFrame(meta_rows), detection_tables


def grounding_psds(ground_truth, metadata, detection_tables, dtc_gtc, max_efpr=800.0):
    """PSDS of one scenario (dtc = gtc = `dtc_gtc`, cttc 0, alpha_ct = alpha_st = 0), as the official script.

    Returns (psds, number of distinct operating points). psds_eval's own warnings are silenced: "A similar
    operating point exists" (identical detections at two thresholds, skipped), numpy's "Mean of empty slice" and
    "Degrees of freedom <= 0" (one class, no cross triggers), "invalid value encountered" (NaN-padded
    intersection tables) and pandas' deprecation of `inplace` (pandas >= 3.1).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="psds_eval")
        warnings.filterwarnings("ignore", message="Degrees of freedom", category=RuntimeWarning)
        warnings.filterwarnings("ignore", message="invalid value encountered", category=RuntimeWarning)
        psds_eval = PSDSEval(
            ground_truth=ground_truth,
            metadata=metadata,
            dtc_threshold=dtc_gtc,
            gtc_threshold=dtc_gtc,
            cttc_threshold=0.0,
        )
        for i, (threshold, detections) in enumerate(detection_tables.items()):
            psds_eval.add_operating_point(
                detections, info={"name": f"Op {i + 1:02d}", "threshold": threshold}
            )
        value = psds_eval.psds(alpha_ct=0, alpha_st=0, max_efpr=max_efpr).value
    return float(value), psds_eval.num_operating_points()


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TextToAudioGrounding(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Sequence(datasets.Sequence(datasets.Value("float64"))),
                    "timestamps": datasets.Sequence(datasets.Value("float64")),
                    "durations": datasets.Value("float64"),
                }
            ),
            codebase_urls=["https://github.com/DCASE-REPO/psds_eval"],
        )

    def _compute(
        self,
        predictions,
        references,
        timestamps,
        durations,
        query_ids=None,
        n_thresholds=50,
        median_filter_frames=3,
        connect_seconds=0.5,
        max_efpr=800.0,
        scenarios=tuple(SCENARIOS),
    ):
        unknown = set(scenarios) - set(SCENARIOS)
        if unknown:
            raise ValueError(f"unknown scenarios {sorted(unknown)}; choose among {tuple(SCENARIOS)}")
        ground_truth, metadata, tables = grounding_tables(
            predictions,
            references,
            timestamps,
            durations,
            query_ids=query_ids,
            n_thresholds=n_thresholds,
            median_filter_frames=median_filter_frames,
            connect_seconds=connect_seconds,
        )
        out = {}
        num_ops = 0
        for name in scenarios:
            out[name], num_ops = grounding_psds(
                ground_truth, metadata, tables, SCENARIOS[name], max_efpr=max_efpr
            )
        out["num_queries"] = int(metadata.shape[0])
        out["num_operating_points"] = int(num_ops)
        return out
