"""The evaluation metrics shipped as local `evaluate` modules under metrics/ (loaded offline by absolute path).

Hand-worked cases for every metric; for SED and grounding, equality with sed_scores_eval / psds_eval called
directly on the same inputs (with the official MGA-CLAP parameters and decoding written out here), plus
perfect-versus-random sanity checks.

Loading the SED and grounding modules installs their compatibility shims for sed_scores_eval 0.0.4 and
psds_eval 0.5.3 (pandas 3 / numpy 2, and psds_eval's single-class eFPR) process-wide, so the direct calls
below run with the same shims.
"""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

evaluate = pytest.importorskip("evaluate")

METRICS_DIR = Path(__file__).resolve().parents[1] / "metrics"
HOP = 10 / 32
TIMESTAMPS = [k * HOP for k in range(33)]


def requires(*packages):
    """Skip when a metric's package is not installed (find_spec: importing sed_scores_eval may need a shim)."""
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    return pytest.mark.skipif(bool(missing), reason=f"not installed: {missing}")


NEEDS_SKLEARN = requires("sklearn")
NEEDS_SED = requires("sed_scores_eval", "scipy")
NEEDS_PSDS = requires("psds_eval", "scipy", "sklearn")


@pytest.fixture(scope="module")
def load(tmp_path_factory):
    """evaluate.load by absolute path, offline, with the module copies in a temporary HF_HOME."""
    home = tmp_path_factory.mktemp("hf_home")
    loaded = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_HOME", str(home))
        mp.setattr(evaluate.config, "HF_MODULES_CACHE", home / "modules")
        mp.setattr(evaluate.config, "HF_METRICS_CACHE", home / "metrics")

        def _load(name):
            if name not in loaded:
                loaded[name] = evaluate.load(str(METRICS_DIR / name))
            return loaded[name]

        yield _load


# --------------------------------------------------------------------------- retrieval

# 3 clips, 2 captions each (rows: captions, columns: clips); no ties anywhere.
RETRIEVAL_SIMS = [
    [0.9, 0.1, 0.2],  # caption 0, clip 0: t2a rank 0
    [0.3, 0.8, 0.1],  # caption 1, clip 0: rank 1
    [0.2, 0.7, 0.6],  # caption 2, clip 1: rank 0
    [0.5, 0.4, 0.35],  # caption 3, clip 1: rank 1
    [0.1, 0.2, 0.3],  # caption 4, clip 2: rank 0
    [0.6, 0.5, 0.4],  # caption 5, clip 2: rank 2
]
RETRIEVAL_CLIPS = [0, 0, 1, 1, 2, 2]


def test_retrieval_hand_worked(load):
    out = load("audio_text_retrieval").compute(predictions=RETRIEVAL_SIMS, references=RETRIEVAL_CLIPS)
    # t2a ranks (0-based) [0, 1, 0, 1, 0, 2]
    assert out["t2a_R@1"] == pytest.approx(50.0)
    assert out["t2a_R@5"] == out["t2a_R@10"] == out["t2a_R@50"] == pytest.approx(100.0)
    assert out["t2a_medR"] == 1.0  # floor(median 0.5) + 1
    assert out["t2a_meanR"] == pytest.approx(4 / 6 + 1)
    assert out["t2a_mAP@10"] == pytest.approx(100 * (1 + 1 / 2 + 1 + 1 / 2 + 1 + 1 / 3) / 6)
    assert out["t2a_num_queries"] == 6
    # a2t: clip 0 column ranks captions 0, 5, 3, 1, 2, 4 -> its captions at 1-based ranks 1 and 4;
    # clip 1: 1, 2, 5, 3, 4, 0 -> ranks 2 and 4; clip 2: 2, 5, 3, 4, 0, 1 -> ranks 2 and 4.
    assert out["a2t_R@1"] == pytest.approx(100 / 3)
    assert out["a2t_R@5"] == pytest.approx(100.0)
    assert out["a2t_medR"] == 2.0
    assert out["a2t_meanR"] == pytest.approx(2 / 3 + 1)
    ap = [(1 / 1 + 2 / 4) / 2, (1 / 2 + 2 / 4) / 2, (1 / 2 + 2 / 4) / 2]
    assert out["a2t_mAP@10"] == pytest.approx(100 * np.mean(ap))
    assert out["a2t_num_queries"] == 3
    fractions = load("audio_text_retrieval").compute(
        predictions=RETRIEVAL_SIMS, references=RETRIEVAL_CLIPS, ks=(1,), percentage=False
    )
    assert fractions["t2a_R@1"] == pytest.approx(0.5) and "t2a_R@5" not in fractions


def _official_t2a_a2t(sims):
    """Transcription of the official tools/utils.py t2a / a2t on a (5N captions, N clips) similarity matrix."""
    n = sims.shape[1]
    t2a_ranks = np.zeros(5 * n)
    for q in range(5 * n):
        inds = np.argsort(sims[q])[::-1]
        t2a_ranks[q] = np.where(inds == q // 5)[0][0]
    a2t_ranks, ap10 = np.zeros(n), np.zeros(n)
    for index in range(n):
        inds = np.argsort(sims[:, index])[::-1]
        rank, inds_map = 1e20, []
        for i in range(5 * index, 5 * index + 5):
            tmp = np.where(inds == i)[0][0]
            rank = min(rank, tmp)
            if tmp < 10:
                inds_map.append(tmp + 1)
        inds_map = np.sort(np.array(inds_map))
        ap10[index] = np.sum(np.arange(1, len(inds_map) + 1) / inds_map) / 5 if len(inds_map) else 0.0
        a2t_ranks[index] = rank

    def summary(ranks):
        return [100.0 * np.mean(ranks < k) for k in (1, 5, 10, 50)] + [
            np.floor(np.median(ranks)) + 1,
            ranks.mean() + 1,
        ]

    t2a_map = 100.0 * np.sum(1 / (t2a_ranks[t2a_ranks < 10] + 1)) / len(t2a_ranks)
    return summary(t2a_ranks) + [t2a_map], summary(a2t_ranks) + [100.0 * ap10.mean()]


def test_retrieval_matches_official_code(load):
    rng = np.random.default_rng(0)
    n = 12
    sims = rng.normal(size=(5 * n, n)) + 1.5 * np.repeat(np.eye(n), 5, axis=0)  # 5 captions per clip
    out = load("audio_text_retrieval").compute(
        predictions=sims.tolist(), references=np.repeat(np.arange(n), 5)
    )
    t2a, a2t = _official_t2a_a2t(sims)
    keys = ["R@1", "R@5", "R@10", "R@50", "medR", "meanR", "mAP@10"]
    assert [out[f"t2a_{k}"] for k in keys] == pytest.approx(t2a)
    assert [out[f"a2t_{k}"] for k in keys] == pytest.approx(a2t)


def test_retrieval_add_batch(load):
    metric = load("audio_text_retrieval")
    metric.add_batch(predictions=RETRIEVAL_SIMS[:4], references=RETRIEVAL_CLIPS[:4])
    metric.add_batch(predictions=RETRIEVAL_SIMS[4:], references=RETRIEVAL_CLIPS[4:])
    assert metric.compute()["t2a_R@1"] == pytest.approx(50.0)


# --------------------------------------------------------------------------- classification


def test_classification_accuracy_with_folds(load):
    scores = [
        [0.9, 0.05, 0.05],  # label 0, top-1 right
        [0.2, 0.7, 0.1],  # label 1, right
        [0.5, 0.4, 0.1],  # label 1, wrong (second)
        [0.1, 0.2, 0.7],  # label 2, right
        [0.6, 0.1, 0.3],  # label 2, wrong (second)
        [0.3, 0.3, 0.4],  # label 2, right
    ]
    labels = [0, 1, 1, 2, 2, 2]
    metric = load("audio_classification_accuracy")
    plain = metric.compute(predictions=scores, references=labels, top_k=(2, 3))
    assert plain["accuracy"] == pytest.approx(4 / 6)
    assert plain["top2_accuracy"] == pytest.approx(1.0) and plain["top3_accuracy"] == pytest.approx(1.0)
    folded = metric.compute(predictions=scores, references=labels, folds=[1, 1, 1, 2, 2, 3])
    # per fold: 2/3, 1/2, 1/1 -> unweighted mean (ESC-50 / US8K protocol), not the clip-weighted 4/6
    assert folded["fold_accuracy"] == pytest.approx({"1": 2 / 3, "2": 1 / 2, "3": 1.0})
    assert folded["accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert folded["num_folds"] == 3 and folded["num_examples"] == 6


# --------------------------------------------------------------------------- tagging


@NEEDS_SKLEARN
def test_tagging_map_hand_worked(load):
    scores = [[0.9, 0.2, 0.5], [0.8, 0.7, 0.1], [0.3, 0.4, 0.3], [0.1, 0.6, 0.2]]
    targets = [[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]]
    out = load("audio_tagging_map").compute(
        predictions=scores, references=targets, class_names=["dog", "cat", "bird"]
    )
    # dog: ranking +, -, +, - -> AP = (1/1 + 2/3) / 2; cat: its only positive ranked first -> AP = 1;
    # bird has no positive -> excluded.
    assert out["per_class_ap"] == pytest.approx({"dog": (1 + 2 / 3) / 2, "cat": 1.0})
    assert out["mAP"] == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)
    assert out["excluded_classes"] == ["bird"] and out["num_classes_evaluated"] == 2


@NEEDS_SKLEARN
def test_tagging_map_against_plain_ap(load):
    rng = np.random.default_rng(1)
    scores = rng.uniform(size=(40, 5))
    targets = (rng.uniform(size=(40, 5)) < 0.3).astype(int)
    targets[0] = 1  # every class has a positive

    def ap(y, s):  # textbook non-interpolated AP (no ties in continuous random scores)
        order = np.argsort(-s)
        hits = y[order]
        precision = np.cumsum(hits) / np.arange(1, len(y) + 1)
        return np.sum(precision * hits) / hits.sum()

    out = load("audio_tagging_map").compute(predictions=scores.tolist(), references=targets.tolist())
    assert out["mAP"] == pytest.approx(np.mean([ap(targets[:, c], scores[:, c]) for c in range(5)]))


# --------------------------------------------------------------------------- sound event detection

SED_CLASSES = ["dog", "cat"]
# events on frame boundaries (multiples of 10/32 s) so that perfect frame scores reproduce them exactly
SED_EVENTS = [
    [
        {"event_label": "dog", "onset": 4 * HOP, "offset": 12 * HOP},
        {"event_label": "cat", "onset": 16 * HOP, "offset": 26 * HOP},
    ],
    [{"event_label": "cat", "onset": 2 * HOP, "offset": 8 * HOP}],
    [
        {"event_label": "dog", "onset": 20 * HOP, "offset": 30 * HOP},
        {"event_label": "cat", "onset": 0.0, "offset": 5 * HOP},
    ],
    [],  # no event: dropped, as in the official script
]


def _perfect_sed_scores(events_per_clip=SED_EVENTS):
    scores = np.zeros((len(events_per_clip), 32, len(SED_CLASSES)))
    for i, events in enumerate(events_per_clip):
        for e in events:
            on, off = round(e["onset"] / HOP), round(e["offset"] / HOP)
            scores[i, on:off, SED_CLASSES.index(e["event_label"])] = 1.0
    return scores


def _sed(load, scores, events_per_clip=SED_EVENTS, **kwargs):
    n = len(scores)
    return load("sound_event_detection").compute(
        predictions=np.asarray(scores).tolist(),
        references=events_per_clip,
        timestamps=[TIMESTAMPS] * n,
        durations=[10.0] * n,
        event_classes=SED_CLASSES,
        **kwargs,
    )


@NEEDS_SED
def test_sed_matches_sed_scores_eval(load):
    from scipy.ndimage import uniform_filter1d

    events_per_clip = SED_EVENTS * 4  # 16 clips, 12 with events: enough audio for non-trivial eFPRs
    rng = np.random.default_rng(0)
    noise = uniform_filter1d(rng.uniform(size=(len(events_per_clip), 32, 2)), 5, axis=1)
    scores = 0.3 * _perfect_sed_scores(events_per_clip) + noise
    scores[2, 20:30, 0] -= 0.3  # one dog event never stands out
    out = _sed(load, scores, events_per_clip)

    import sed_scores_eval  # imported (and shimmed) by the metric module
    from scipy.ndimage import median_filter
    from sed_scores_eval.base_modules.scores import create_score_dataframe

    # the official zero_shot_sed.py pipeline, written out
    kept = [i for i, events in enumerate(events_per_clip) if events]
    score_dfs = {
        f"clip_{i}": create_score_dataframe(median_filter(scores[i], (3, 1)), TIMESTAMPS, SED_CLASSES)
        for i in kept
    }
    gt = {
        f"clip_{i}": [(e["onset"], e["offset"], e["event_label"]) for e in events_per_clip[i]] for i in kept
    }
    durations = {f"clip_{i}": 10.0 for i in kept}
    psds1 = sed_scores_eval.intersection_based.psds(
        scores=score_dfs, ground_truth=gt, audio_durations=durations, dtc_threshold=0.7, gtc_threshold=0.7,
        cttc_threshold=None, alpha_ct=0, alpha_st=1, max_efpr=100,
    )[0]  # fmt: skip
    psds2 = sed_scores_eval.intersection_based.psds(
        scores=score_dfs, ground_truth=gt, audio_durations=durations, dtc_threshold=0.1, gtc_threshold=0.1,
        cttc_threshold=0.3, alpha_ct=0.5, alpha_st=1, max_efpr=100,
    )[0]  # fmt: skip
    collar = sed_scores_eval.collar_based.best_fscore(
        scores=score_dfs, ground_truth=gt, onset_collar=0.2, offset_collar=0.2, offset_collar_rate=0.2,
        time_decimals=30,
    )[0]  # fmt: skip
    segment = sed_scores_eval.segment_based.best_fscore(
        scores=score_dfs, ground_truth=gt, audio_durations=durations
    )[0]

    assert out["num_clips"] == 12
    assert out["psds1"] == psds1 and out["psds2"] == psds2
    assert out["collar_f1"] == collar["macro_average"] and out["segment_f1"] == segment["macro_average"]
    assert out["collar_f1_per_class"] == {c: collar[c] for c in SED_CLASSES}
    assert out["segment_f1_micro"] == segment["micro_average"]
    assert all(0.0 < out[k] < 1.0 for k in ("psds1", "psds2", "collar_f1", "segment_f1"))  # non-trivial
    assert not {"psds1_alpha_st0", "psds2_alpha_st0"} & set(out)  # diagnostics only on request

    diagnostic = _sed(load, scores, events_per_clip, metrics=("psds1", "psds1_alpha_st0", "psds2_alpha_st0"))
    for name, (threshold, cttc, alpha_ct) in {"psds1": (0.7, None, 0), "psds2": (0.1, 0.3, 0.5)}.items():
        expected = sed_scores_eval.intersection_based.psds(
            scores=score_dfs, ground_truth=gt, audio_durations=durations, dtc_threshold=threshold,
            gtc_threshold=threshold, cttc_threshold=cttc, alpha_ct=alpha_ct, alpha_st=0, max_efpr=100,
        )[0]  # fmt: skip
        assert diagnostic[f"{name}_alpha_st0"] == expected
    # Without the penalty on the spread of the per-class TPRs the value can only rise (the dog event that never
    # stands out makes the two classes' TPRs differ).
    assert diagnostic["psds1_alpha_st0"] > diagnostic["psds1"] == psds1


@NEEDS_SED
def test_sed_perfect_and_random_scores(load):
    perfect = _sed(load, _perfect_sed_scores())
    assert perfect["psds1"] > 0.99 and perfect["psds2"] > 0.99
    assert perfect["collar_f1"] == pytest.approx(1.0) and perfect["segment_f1"] == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    random = _sed(load, rng.uniform(size=(len(SED_EVENTS), 32, 2)), metrics=("psds1", "collar_f1"))
    assert random["psds1"] < 0.2 and random["collar_f1"] < 0.6
    assert "psds2" not in random


# --------------------------------------------------------------------------- text-to-audio grounding

# (audio, phrase) queries: ground-truth segments; the last one has only a [0, 0] segment and is skipped
TAG_SEGMENTS = [[[1.0, 3.0]], [[0.0, 2.2], [6.0, 8.5]], [[4.4, 9.9]], [[2.5, 3.4]], [[0.0, 0.0]]]


def _official_grounding_psds(scores, segments, durations, query_ids):
    """The official zero_shot_grounding.py decoding and compute_psds, transcribed, fed to psds_eval directly."""
    from psds_eval import PSDSEval
    from scipy.ndimage import median_filter
    from sklearn.preprocessing import binarize

    def find_contiguous_regions(activity_array):
        change_indices = np.logical_xor(activity_array[1:], activity_array[:-1]).nonzero()[0]
        change_indices += 1
        if activity_array[0]:
            change_indices = np.r_[0, change_indices]
        if activity_array[-1]:
            change_indices = np.r_[change_indices, activity_array.size]
        return change_indices.reshape((-1, 2))

    def connect_(pairs, n=1):
        if len(pairs) == 0:
            return []
        start_, end_ = pairs[0]
        new_pairs = []
        for next_item, cur_item in zip(pairs[1:], pairs[0:], strict=False):
            end_ = next_item[1]
            if next_item[0] - cur_item[1] > n:
                new_pairs.append((start_, cur_item[1]))
                start_ = next_item[0]
        new_pairs.append((start_, end_))
        return new_pairs

    def connect_clusters_(x, n=1):
        zero_one_arr = np.zeros_like(x, dtype=int)
        for sl in connect_(find_contiguous_regions(x), n=n):
            zero_one_arr[sl[0] : sl[1]] = 1
        return zero_one_arr

    ground_truth = pd.DataFrame(
        [
            {"filename": q, "event_label": "fake_event", "onset": on, "offset": off}
            for q, segs in zip(query_ids, segments, strict=True)
            for on, off in segs
            if not (on == 0 and off == 0)
        ]
    )
    metadata = pd.DataFrame(
        [{"filename": q, "duration": d} for q, d in zip(query_ids, durations, strict=True)]
    )
    n_connect = math.ceil(0.5 / HOP)
    buffer = {}
    for th in np.arange(1 / 100, 1, 1 / 50):
        rows = []
        for q, s in zip(query_ids, scores, strict=True):
            if q not in ground_truth["filename"].unique():
                continue
            filtered = binarize(np.asarray(s)[None, :], threshold=th)
            filtered = median_filter(filtered, size=(1, 3))[0]
            for on, off in find_contiguous_regions(connect_clusters_(filtered, n_connect)):
                rows.append(
                    {"filename": q, "event_label": "fake_event", "onset": on * HOP, "offset": off * HOP}
                )
        buffer[th] = pd.DataFrame(rows, columns=["filename", "event_label", "onset", "offset"])
    metadata = metadata[metadata.filename.isin(ground_truth.filename)]
    out = {}
    for name, dtc in (("psds1", 0.7), ("psds2", 0.1), ("psdsm", 0.5)):
        psds_eval = PSDSEval(
            ground_truth=ground_truth,
            metadata=metadata,
            dtc_threshold=dtc,
            gtc_threshold=dtc,
            cttc_threshold=0.0,
        )
        for i, (th, det) in enumerate(buffer.items()):
            psds_eval.add_operating_point(det, info={"name": f"Op {i + 1:02d}", "threshold": th})
        out[name] = psds_eval.psds(alpha_ct=0, alpha_st=0, max_efpr=800).value
    return out


def _tag_scores(noise_seed):
    """Sigmoid-of-cosine-like scores in [0.25, 0.75]: high inside the segments, plus noise."""
    rng = np.random.default_rng(noise_seed)
    centres = (np.arange(32) + 0.5) * HOP
    scores = []
    for segs in TAG_SEGMENTS:
        inside = np.zeros(32)
        for on, off in segs:
            inside[(centres > on) & (centres < off)] = 1.0
        scores.append(np.clip(0.4 + 0.2 * inside + rng.normal(scale=0.08, size=32), 0.27, 0.73))
    # on a 0.05 grid: fewer distinct operating points among the 50 thresholds, so psds_eval runs faster
    return [np.round(s * 20) / 20 for s in scores]


def _tag(load, scores, **kwargs):
    n = len(scores)
    return load("text_to_audio_grounding").compute(
        predictions=[np.asarray(s).tolist() for s in scores],
        references=TAG_SEGMENTS,
        timestamps=[TIMESTAMPS] * n,
        durations=[10.0] * n,
        **kwargs,
    )


@NEEDS_PSDS
@pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore:A similar operating point")
def test_grounding_matches_official_decoding_and_psds_eval(load):
    scores = _tag_scores(0)
    query_ids = [f"{100 + i}_{i}" for i in range(len(scores))]
    out = _tag(load, scores, query_ids=query_ids)
    assert out["num_queries"] == 4  # the [0, 0] query is skipped
    reference = _official_grounding_psds(scores, TAG_SEGMENTS, [10.0] * len(scores), query_ids)
    assert {k: out[k] for k in reference} == reference
    assert all(0.0 < out[k] < 1.0 for k in reference), out


@NEEDS_PSDS
def test_grounding_perfect_and_random_scores(load):
    perfect = []
    for segs in TAG_SEGMENTS:
        s = np.zeros(32)
        for on, off in segs:
            s[round(on / HOP) : round(off / HOP)] = 1.0
        perfect.append(s)
    # segments not on frame boundaries: the perfect frame mask still covers >= 0.7 of each, and vice versa
    out = _tag(load, perfect)
    assert out["psds1"] > 0.99 and out["psds2"] > 0.99 and out["psdsm"] > 0.99
    rng = np.random.default_rng(2)
    random = _tag(load, [rng.uniform(0.27, 0.73, size=32) for _ in TAG_SEGMENTS], scenarios=("psds1",))
    assert random["psds1"] < 0.3 and "psds2" not in random


@NEEDS_SKLEARN
@NEEDS_SED
@NEEDS_PSDS
def test_every_module_loads_from_the_repo_root(load, monkeypatch):
    """`evaluate.load("metrics/<name>")` from the repository root (the folder / basename rule) and by file path."""
    monkeypatch.chdir(METRICS_DIR.parent)
    for name in sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file()):
        metric = evaluate.load(f"metrics/{name}")
        assert isinstance(metric, evaluate.Metric) and metric.description and metric.citation
        assert "predictions" in metric.features and "references" in metric.features
    assert (
        evaluate.load(str(METRICS_DIR / "audio_tagging_map" / "audio_tagging_map.py")).name
        == "audio_tagging_map"
    )


@NEEDS_SED
def test_sed_add_batch(load):
    metric = load("sound_event_detection")
    scores = _perfect_sed_scores().tolist()
    for i in range(len(SED_EVENTS)):
        metric.add_batch(
            predictions=scores[i : i + 1],
            references=SED_EVENTS[i : i + 1],
            timestamps=[TIMESTAMPS],
            durations=[10.0],
        )
    out = metric.compute(event_classes=SED_CLASSES, metrics=("collar_f1",))
    assert out["collar_f1"] == pytest.approx(1.0) and out["num_clips"] == 3
