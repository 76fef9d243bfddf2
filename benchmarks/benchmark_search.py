"""Frame-level search over a collection (`transformers_mgaclap.search`): moment quality against two baselines, the
approximate indexes against exact search, and scale (CPU).

Issue requirements: moment retrieval mAP (a hit overlaps a reference event by IoU >= 0.5) against clip-level search
followed by the SED pipeline on the top clips and against random, with the same model; Recall@10 of the approximate
index against exact search >= 0.95 with the chosen defaults; indexing throughput (hours of audio per hour on 2 CPU
cores), query latency p50/p95 at 1 h, 10 h and 100 h of indexed audio (target p95 <= 50 ms at 100 h), index memory
per hour of audio (target <= 2 MB with PQ) and its projection to 10 000 h.

What is measured, in one run:

1. Quality. `--num_clips` held-out synthetic soundscapes (the generator's "test" stream, never trained on; strong
   labels) make the collection: the first `--single_clips` stay 10 s recordings, the others are joined end to end,
   `--clips_per_recording` at a time, into long files (windowed path). It is indexed with `build_index` (timed: the
   indexing throughput). Each of the 16 class labels is a query (the bare label, the official SED prompt "{}"), and
   three methods return `--top_k` moments each:
   - frame search: `search(index, label, k=top_k)` with its defaults;
   - clip + SED: the `--top_clips` recordings nearest by clip embedding (the clip index), then the SED pipeline on
     each (`compute_long_audio_frame_similarity`, the windowed cosines, then `post_process_sound_event_detection`,
     median 3 and 0.5 s gap) at the same threshold frame search used for that query; events ranked by score;
   - random: moments at uniformly random places (recording chosen in proportion to its length) with the lengths of
     random reference events, in random order (mean over `--random_seeds` seeds).
   A returned moment is a hit when it overlaps a not yet matched reference event of the query's class in the same
   recording with IoU >= 0.5 (greedy in rank order); AP@k = sum of precision@i at the hits / min(references, k);
   mAP@k is its mean over the 16 classes.
2. Scale. Frames are synthesised from the quality index's real frames (a random recording's frames from a random
   start, plus Gaussian noise of `--noise` per dimension, renormalised, float16), in recordings of 10 min, for each
   of `--hours`; each size is saved with `save_index` and the index type of the choice rule (Flat <= 100 000 frames,
   IVF <= 1 000 000, IVF-PQ beyond). Per size: Recall@10 of the frames the index returns against the exact top 10
   (torch scan over the same float16 embeddings) for the 16 label queries and `--frame_queries` perturbed frames;
   latency p50/p95 over `--latency_rounds` rounds of the 16 label queries of `search_by_embedding` (the index:
   retrieval, re-scoring, merging into moments) and of the whole `search` (with the text embedding, the model's
   cost; the machine's load average is recorded beside it); the FAISS index file size per hour of audio, and the on-disk float16 frame table per hour.

Run:  python benchmarks/benchmark_search.py --model_name_or_path outputs/mgaclap-pretrain
      python benchmarks/benchmark_search.py --quick    (smoke run: 40 clips, 0.2 h and 1 h)
Writes `results.json` and `results.md` (README-ready tables) into `--output_dir`.
"""

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

# torch and FAISS each bring an OpenMP runtime; on a shared 2-core machine their idle threads spin and take the cores
# from each other (a text embedding measured 5-20x slower right after a FAISS call). Before either is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from harness import HelpFormatter, fill_defaults  # noqa: E402  (benchmarks/harness.py: scripts run from their folder)

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = {  # (default, --quick)
    "num_clips": (200, 40),
    "single_clips": (40, 8),
    "clips_per_recording": (20, 8),
    "hours": ([1.0, 10.0, 100.0], [0.2, 1.0]),
    "latency_rounds": (3, 1),
}
RECORDING_MINUTES = 10


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument(
        "--model_name_or_path",
        default=str(ROOT / "outputs" / "mgaclap-pretrain"),
        help="The model; produce it with `accelerate launch examples/pretrain.py`.",
    )
    parser.add_argument(
        "--output_dir", default="outputs/benchmark_search", help="Where the indexes and results go."
    )
    parser.add_argument("--quick", action="store_true", help="A smoke run (default: the full benchmark).")
    parser.add_argument(
        "--num_clips", type=int, help="10 s synthetic clips of the collection (default: 200; quick 40)."
    )
    parser.add_argument(
        "--single_clips", type=int, help="Clips kept as 10 s recordings (default: 40; quick 8)."
    )
    parser.add_argument(
        "--clips_per_recording", type=int, help="Clips joined into one long recording (default: 20; quick 8)."
    )
    parser.add_argument("--top_k", type=int, default=10, help="Moments returned per query.")
    parser.add_argument(
        "--top_clips", type=int, default=10, help="Clips the clip + SED baseline runs SED on."
    )
    parser.add_argument("--random_seeds", type=int, default=10, help="Draws of the random baseline.")
    parser.add_argument(
        "--hours", type=float, nargs="+", help="Sizes of the scale test (default: 1 10 100; quick 0.2 1)."
    )
    parser.add_argument(
        "--noise", type=float, default=0.02, help="Noise per dimension of synthesised frames."
    )
    parser.add_argument(
        "--frame_queries", type=int, default=48, help="Perturbed frames as extra recall queries."
    )
    parser.add_argument(
        "--latency_rounds", type=int, help="Rounds of the 16 queries timed (default: 3; quick 1)."
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the issue's 2 CPU cores).")
    return fill_defaults(parser.parse_args(argv), DEFAULTS)


def load(folder: str):
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    return model, AutoProcessor.from_pretrained(folder, trust_remote_code=True)


# -- quality --------------------------------------------------------------------------------------------------------


def iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / (max(a[1], b[1]) - min(a[0], b[0]))


def average_precision(ranked: list[tuple[int, float, float]], references: dict[int, list], k: int) -> float:
    """AP@k of moments `(recording row, onset, offset)` in rank order against `{row: [(onset, offset), ...]}`."""
    total = sum(len(events) for events in references.values())
    if total == 0:
        return float("nan")
    used, hits, precision_sum = set(), 0, 0.0
    for rank, (row, onset, offset) in enumerate(ranked[:k], 1):
        for number, reference in enumerate(references.get(row, [])):
            if (row, number) not in used and iou((onset, offset), reference) >= 0.5:
                used.add((row, number))
                hits += 1
                precision_sum += hits / rank
                break
    return precision_sum / min(total, k)


def quality(args, model, processor, collection, index) -> dict:
    import datasets

    from transformers_mgaclap.embedding import embed_text
    from transformers_mgaclap.processing_mgaclap import post_process_sound_event_detection
    from transformers_mgaclap.search import search
    from transformers_mgaclap.sound_event_detection import compute_long_audio_frame_similarity

    labels = sorted({event["event_label"] for events in collection["events"] for event in events})
    references = {
        label: {
            row: [(e["onset"], e["offset"]) for e in events if e["event_label"] == label]
            for row, events in enumerate(collection["events"])
        }
        for label in labels
    }
    durations = np.asarray(index.recordings[:]["duration"])
    text_embeds = embed_text(model, processor, labels, return_word_embeds=False).text_embeds
    # The SED pipeline's first stage on every recording, once for all the labels (its cost is that of indexing).
    raw = collection.cast_column("audio", datasets.Audio(decode=False))
    started = time.perf_counter()
    curves = [
        compute_long_audio_frame_similarity(
            model,
            raw[row]["audio"],
            None,
            processor.feature_extractor,
            text_embeds=text_embeds,
            progress=False,
        )
        for row in range(len(raw))
    ]
    sed_seconds = time.perf_counter() - started
    methods = {"frame search": [], "clip + SED": [], "random": []}
    all_lengths = [
        offset - onset for label in labels for row in references[label].values() for onset, offset in row
    ]
    for column, label in enumerate(labels):
        moments = search(index, label, k=args.top_k)
        ranked = [(m["row"], m["onset"], m["offset"]) for m in moments]
        methods["frame search"].append(average_precision(ranked, references[label], args.top_k))
        threshold = moments[0]["threshold"] if moments else 0.0
        _, clips = index.nearest("recordings", text_embeds[column].numpy(), args.top_clips)
        events = []
        for recording in clips.tolist():
            row = int(index.recordings[recording]["row"])
            curve = curves[row]
            for event in post_process_sound_event_detection(
                curve.frame_similarity[:, column : column + 1],
                curve.frame_boundaries,
                [label],
                threshold=threshold,
                frame_mask=curve.frame_mask,
                duration=curve.duration,
            )[0]:
                events.append((event["score"], row, event["onset"], event["offset"]))
        events.sort(key=lambda item: -item[0])
        methods["clip + SED"].append(
            average_precision([item[1:] for item in events], references[label], args.top_k)
        )
        draws = []
        for seed in range(args.random_seeds):
            rng = np.random.default_rng(seed * 100 + column)
            rows = rng.choice(len(durations), args.top_k, p=durations / durations.sum())
            lengths = rng.choice(all_lengths, args.top_k)
            onsets = rng.uniform(0, np.maximum(durations[rows] - lengths, 0))
            draws.append(
                average_precision(
                    list(zip(rows.tolist(), onsets.tolist(), (onsets + lengths).tolist(), strict=True)),
                    references[label],
                    args.top_k,
                )
            )
        methods["random"].append(float(np.mean(draws)))
    scores = {name: float(np.nanmean(values)) for name, values in methods.items()}
    return {
        "mAP": scores,
        "per_class": {name: dict(zip(labels, values, strict=True)) for name, values in methods.items()},
        "ratio frame search / clip + SED": scores["frame search"] / max(scores["clip + SED"], 1e-12),
        "ratio frame search / random": scores["frame search"] / max(scores["random"], 1e-12),
        "sed_pass_seconds": sed_seconds,
        "references": sum(len(v) for label in labels for v in references[label].values()),
    }


# -- scale ----------------------------------------------------------------------------------------------------------


def synthesise_frames(real, hours: float, noise: float, seed: int = 0):
    """Frames for `hours` of audio in 10-minute recordings, from the real frames (see the module docstring)."""
    per_recording = RECORDING_MINUTES * 60 * 32 // 10
    recordings = max(1, int(round(hours * 60 / RECORDING_MINUTES)))
    rng = np.random.default_rng(seed)
    out = np.empty((recordings * per_recording, real.shape[1]), dtype=np.float16)
    for number in range(recordings):
        start = rng.integers(0, len(real))
        rows = (start + np.arange(per_recording)) % len(real)
        block = real[rows].astype(np.float32) + noise * rng.standard_normal(
            (per_recording, real.shape[1]), np.float32
        )
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[number * per_recording : (number + 1) * per_recording] = block
    return out, recordings, per_recording


def scale(args, model, processor, quality_index, folder: Path) -> list[dict]:
    from transformers_mgaclap.embedding import embed_text
    from transformers_mgaclap.search import (
        choose_index_type,
        embed_query,
        frame_table,
        load_index,
        model_fingerprint,
        recording_table,
        save_index,
        search,
        search_by_embedding,
    )

    real = quality_index.rows("frames").range(0, quality_index.num_frames)
    queries_text = [
        "beep", "whistle", "rising sweep", "falling sweep", "siren", "white noise", "rumble", "knocking",
        "clicking", "buzzing", "hum", "bell", "bird trill", "dripping", "engine", "wind",
    ]  # fmt: skip
    text_queries = embed_text(model, processor, queries_text, return_word_embeds=False).text_embeds.numpy()
    fingerprint = model_fingerprint(model, processor)
    results = []
    for hours in args.hours:
        frames, recordings, per_recording = synthesise_frames(real, hours, args.noise)
        rng = np.random.default_rng(1)
        picked = frames[rng.integers(0, len(frames), args.frame_queries)].astype(np.float32)
        picked += 0.05 * rng.standard_normal(picked.shape, np.float32)
        queries = np.concatenate([text_queries, picked / np.linalg.norm(picked, axis=1, keepdims=True)])
        onsets = np.tile(np.arange(per_recording) * 10 / 32, recordings)
        index_type = choose_index_type(len(frames))
        path = folder / f"scale_{hours:g}h"
        shutil.rmtree(path, ignore_errors=True)
        started = time.perf_counter()
        save_index(
            path,
            frame_table(np.repeat(np.arange(recordings), per_recording), onsets, onsets + 10 / 32, frames),
            recording_table(
                [f"synthetic_{i:05d}" for i in range(recordings)],
                np.arange(recordings),
                np.full(recordings, per_recording * 10 / 32),
                np.full(recordings, per_recording),
                frames[::per_recording],
            ),
            {"format_version": 1, "model": fingerprint, "window_seconds": 10.0, "hop_seconds": 5.0},
            index_type,
        )
        build_seconds = time.perf_counter() - started
        del frames
        approximate = load_index(path, model, processor)
        exact = load_index(path, model, processor, use_faiss=False)
        recall = []
        for query in queries:
            found = approximate.nearest("frames", query, 10)[1]
            truth = exact.nearest("frames", query, 10)[1]
            recall.append(len(set(found.tolist()) & set(truth.tolist())) / 10)
        search(approximate, queries_text[0], k=10)  # warm-up: first-touch of the memory maps
        latencies, text_only, total = [], [], []
        for _ in range(args.latency_rounds):
            for text in queries_text:
                started = time.perf_counter()
                vector = embed_query(approximate, text)
                embedded = time.perf_counter()
                search_by_embedding(approximate, vector, k=10)
                done = time.perf_counter()
                text_only.append(embedded - started)
                latencies.append(done - embedded)
                total.append(done - started)
        audio_hours = recordings * per_recording * 10 / 32 / 3600
        faiss_bytes = (path / "frames.faiss").stat().st_size + (path / "clips.faiss").stat().st_size
        table_bytes = sum(f.stat().st_size for f in (path / "frames").glob("*.arrow"))
        result = {
            "hours": audio_hours,
            "frames": recordings * per_recording,
            "index_type": index_type,
            "faiss": approximate.settings["faiss_parameters"],
            "build_seconds": build_seconds,
            "recall@10": float(np.mean(recall)),
            "recall@10 text queries": float(np.mean(recall[: len(queries_text)])),
            "latency_p50_ms": 1000 * float(np.percentile(latencies, 50)),
            "latency_p95_ms": 1000 * float(np.percentile(latencies, 95)),
            "text_embedding_p50_ms": 1000 * float(np.percentile(text_only, 50)),
            "end_to_end_p50_ms": 1000 * float(np.percentile(total, 50)),
            "end_to_end_p95_ms": 1000 * float(np.percentile(total, 95)),
            "load_average": os.getloadavg()[0],
            "faiss_mb_per_hour": faiss_bytes / 1e6 / audio_hours,
            "table_mb_per_hour": table_bytes / 1e6 / audio_hours,
        }
        print(json.dumps(result), flush=True)
        results.append(result)
        shutil.rmtree(path, ignore_errors=True)
    return results


def tables(results: dict) -> str:
    q = results["quality"]
    lines = [
        f"Moment retrieval, {q['collection']}; {q['references']} reference events, 16 class-name queries, "
        f"top {results['settings']['top_k']} moments, hit = IoU >= 0.5:",
        "",
        "| method | mAP@10 | frame search / method |",
        "|---|---|---|",
    ]
    for name, value in q["mAP"].items():
        ratio = q["mAP"]["frame search"] / max(value, 1e-12)
        lines.append(f"| {name} | {value:.3f} | {ratio:.2f}x |")
    lines += [
        "",
        f"Indexing throughput: {results['indexing']['hours_per_hour']:.1f} hours of audio per hour "
        f"({results['indexing']['audio_hours']:.3f} h in {results['indexing']['seconds']:.0f} s, "
        f"{results['settings']['threads']} torch threads).",
        "",
        "| indexed audio | frames | index (auto) | Recall@10 vs exact | search p50 / p95 (ms) | with the text "
        "embedding p50 / p95 (ms) | FAISS MB / h | float16 table MB / h |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["scale"]:
        factory = ", ".join(f"{k}={v}" for k, v in r["faiss"].items())
        lines.append(
            f"| {r['hours']:.1f} h | {r['frames']:,} | {r['index_type']}{f' ({factory})' if factory else ''} | "
            f"{r['recall@10']:.3f} | {r['latency_p50_ms']:.1f} / {r['latency_p95_ms']:.1f} | "
            f"{r['end_to_end_p50_ms']:.1f} / {r['end_to_end_p95_ms']:.1f} | {r['faiss_mb_per_hour']:.2f} | "
            f"{r['table_mb_per_hour']:.2f} |"
        )
    projection = results.get("projection_10000h")
    if projection:
        lines += [
            "",
            f"Projection to 10 000 h with IVF-PQ: {projection['frames']:,} frames, FAISS index "
            f"{projection['faiss_gb']:.1f} GB in memory, float16 table {projection['table_gb']:.0f} GB on disk "
            "(memory-mapped; only re-scored candidates are read).",
        ]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    from transformers_mgaclap.utils.cli import require_extra_or_exit

    require_extra_or_exit("search", ("datasets", "faiss"), "benchmarks/benchmark_search.py")
    if not os.path.isdir(args.model_name_or_path):
        print(f"No model at {args.model_name_or_path}: run `accelerate launch examples/pretrain.py` first.")
        return 1
    import torch

    from transformers_mgaclap.search import build_index, synthetic_collection

    torch.set_num_threads(args.threads)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model, processor = load(args.model_name_or_path)
    collection = synthetic_collection(
        args.num_clips, args.clips_per_recording, args.single_clips, progress=True
    )
    index_dir = output_dir / "quality_index"
    shutil.rmtree(index_dir, ignore_errors=True)
    started = time.perf_counter()
    index = build_index(model, processor, collection, index_dir, id_column="recording_id", progress=True)
    seconds = time.perf_counter() - started
    indexing = {
        "audio_hours": index.hours,
        "seconds": seconds,
        "hours_per_hour": index.hours * 3600 / seconds,
    }
    print(json.dumps(indexing), flush=True)
    long_files = len(collection) - args.single_clips
    results = {
        "settings": {
            **vars(args),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "OMP_WAIT_POLICY": os.environ["OMP_WAIT_POLICY"],
        },
        "indexing": indexing,
        "quality": {
            **quality(args, model, processor, collection, index),
            "collection": f"{args.num_clips} held-out synthetic soundscapes: {args.single_clips} clips of 10 s and "
            f"{long_files} files of {args.clips_per_recording * 10} s",
        },
    }
    print(json.dumps(results["quality"]["mAP"]), flush=True)
    results["scale"] = scale(args, model, processor, index, output_dir)
    pq = [r for r in results["scale"] if r["index_type"] == "IVF-PQ"]
    if pq:
        frames = 10_000 * 11_520  # 32 frames per 10 s
        results["projection_10000h"] = {
            "frames": frames,
            "faiss_gb": pq[-1]["faiss_mb_per_hour"] * 10_000 / 1000,
            "table_gb": pq[-1]["table_mb_per_hour"] * 10_000 / 1000,
        }
    (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    report = tables(results)
    (output_dir / "results.md").write_text(report + "\n")
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
