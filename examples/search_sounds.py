#!/usr/bin/env python
"""Search a sound collection by text and land on the moment (`transformers_mgaclap.search`).

    python examples/search_sounds.py index --dataset_name <hub id | save_to_disk folder | audio folder> \\
        --output_dir idx
    python examples/search_sounds.py query --index idx "a dog barks" --top_k 10
    python examples/search_sounds.py query --index idx --audio example.wav      # query by example

`index` embeds every recording (files longer than 10 s window by window, so that every frame has its absolute time)
into `--output_dir`: a frame table, a recording table and their FAISS indexes. An interrupted run continues where it
stopped when started again with the same options. Without `--dataset_name` it indexes held-out synthetic soundscapes
joined into one-minute recordings (offline), and `query` without a text searches for a siren; so

    python examples/search_sounds.py index --output_dir idx && python examples/search_sounds.py query --output_dir idx

works offline. `query` prints the best moments (recording, onset, offset, score, clip-level score).
"""

import json
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from transformers_mgaclap.utils.cli import DataclassArgumentParser, require_extra_or_exit

COMMANDS = ("index", "query")
DEFAULT_QUERY = "a siren wails"  # a phrase of the synthetic "siren" class


@dataclass
class SearchArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "index: a saved MGA-CLAP folder or Hub repository (default: outputs/mgaclap-pretrain). "
            "query: default, the model the index was built with."
        },
    )
    output_dir: str | None = field(
        default=None,
        metadata={
            "help": "index: the index folder (required; no default). query: the index folder when --index is not given."
        },
    )
    index: str | None = field(
        default=None, metadata={"help": "query: the index folder. Default: --output_dir."}
    )
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "index: Hub id, save_to_disk folder, audiofolder or folder of audio files. Default: none, "
            "held-out synthetic soundscapes (--synthetic_clips clips joined --clips_per_recording at a time)."
        },
    )
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "index: configuration of a Hub dataset. Default: its default one."}
    )
    split: str = field(default="train", metadata={"help": "index: split of the dataset."})
    audio_column: str = field(default="audio", metadata={"help": "index: audio column."})
    id_column: str | None = field(
        default=None,
        metadata={"help": "index: column naming each recording. Default: the audio file's name."},
    )
    synthetic_clips: int = field(
        default=48, metadata={"help": "index: 10 s synthetic clips, without a dataset."}
    )
    clips_per_recording: int = field(
        default=6, metadata={"help": "index: synthetic clips joined into one recording."}
    )
    index_type: str | None = field(
        default=None,
        metadata={
            "help": "index: Flat, IVF, IVF-PQ or HNSW. Default: automatic, Flat up to 100 000 frames (8.7 h), "
            "IVF up to 1 000 000 (87 h), IVF-PQ beyond.",
            "choices": ["Flat", "IVF", "IVF-PQ", "HNSW"],
        },
    )
    window_seconds: float | None = field(
        default=None, metadata={"help": "index: window length. Default: the extractor's (10 s)."}
    )
    hop_seconds: float = field(default=5.0, metadata={"help": "index: distance between window starts."})
    batch_size: int = field(default=8, metadata={"help": "index: windows per model call."})
    shard_size: int = field(
        default=64, metadata={"help": "index: recordings per shard (at most these are redone after a stop)."}
    )
    audio: str | None = field(
        default=None,
        metadata={
            "help": "query: an audio file to search by example instead of a text. Default: none, a text query."
        },
    )
    top_k: int = field(default=10, metadata={"help": "query: moments to return."})
    num_clips: int | None = field(
        default=None,
        metadata={"help": "query: keep only the N best recordings by clip embedding first. Default: all."},
    )
    num_frames: int | None = field(
        default=None, metadata={"help": "query: frames retrieved before merging. Default: 10 x --top_k."}
    )
    threshold: float | None = field(
        default=None,
        metadata={
            "help": "query: activity threshold on cosines. Default: the score of the last frame retrieved."
        },
    )
    median_filter_frames: int = field(
        default=3, metadata={"help": "query: median filter of the frame curves."}
    )
    min_gap_seconds: float = field(default=0.5, metadata={"help": "query: gaps bridged inside a moment."})
    results_file: str | None = field(
        default=None, metadata={"help": "query: also write the moments to this JSON file. Default: none."}
    )
    device: str | None = field(default=None, metadata={"help": "Default: cuda if available, else cpu."})


def parse(argv: list[str] | None) -> tuple[str, str | None, SearchArguments]:
    parser = DataclassArgumentParser(SearchArguments, description=__doc__)
    parser.add_argument(
        "command", choices=COMMANDS, help="index: build or continue an index; query: search it."
    )
    parser.add_argument(
        "query", nargs="?", default=None, help=f"query: the text (default: {DEFAULT_QUERY!r})."
    )
    # Intermixed: the query text may come after options (`query --index idx "a dog barks" --top_k 10`).
    positional, unknown = parser.parse_known_intermixed_args(argv)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args = SearchArguments(**{name.name: getattr(positional, name.name) for name in fields(SearchArguments)})
    if positional.command == "index" and args.output_dir is None:
        parser.error("index needs --output_dir.")
    if positional.command == "query" and (args.index or args.output_dir) is None:
        parser.error("query needs --index (or --output_dir).")
    if positional.query is not None and args.audio is not None:
        parser.error("give a text or --audio, not both.")
    return positional.command, positional.query, args


def load_model(name: str, device: str):
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(name, trust_remote_code=True).to(device).eval()
    return model, AutoProcessor.from_pretrained(name, trust_remote_code=True)


def run_index(args: SearchArguments, device: str) -> dict:
    from transformers_mgaclap.search import build_index, synthetic_collection

    model, processor = load_model(args.model_name_or_path or "outputs/mgaclap-pretrain", device)
    if args.dataset_name is None:
        source = synthetic_collection(args.synthetic_clips, args.clips_per_recording, progress=True)
        id_column = "recording_id"
    else:
        source, id_column = args.dataset_name, args.id_column
    index = build_index(
        model,
        processor,
        source,
        args.output_dir,
        split=args.split,
        config_name=args.dataset_config_name,
        audio_column=args.audio_column,
        id_column=id_column,
        index_type=args.index_type,
        window_seconds=args.window_seconds,
        hop_seconds=args.hop_seconds,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
        progress=True,
    )
    summary = {
        "index": str(index.path),
        "recordings": len(index.recordings),
        "frames": index.num_frames,
        "hours": round(index.hours, 4),
        "index type": index.settings["index_type"],
    }
    print(" | ".join(f"{key}: {value}" for key, value in summary.items()))
    return summary


def run_query(args: SearchArguments, text: str | None, device: str) -> list[dict]:
    from transformers_mgaclap.search import load_index, search

    model = processor = None
    if args.model_name_or_path is not None:
        model, processor = load_model(args.model_name_or_path, device)
    index = load_index(args.index or args.output_dir, model, processor)
    query = Path(args.audio) if args.audio is not None else text or DEFAULT_QUERY
    moments = search(
        index,
        query,
        k=args.top_k,
        num_clips=args.num_clips,
        num_frames=args.num_frames,
        threshold=args.threshold,
        median_filter_frames=args.median_filter_frames,
        min_gap_seconds=args.min_gap_seconds,
    )
    print(f"Query: {query} ({len(moments)} moments, {index.hours:.2f} h indexed)\n")
    print("| rank | recording | onset (s) | offset (s) | score | clip score |\n|---|---|---|---|---|---|")
    for rank, m in enumerate(moments, 1):
        print(
            f"| {rank} | {m['recording']} | {m['onset']:.2f} | {m['offset']:.2f} | {m['score']:.3f} | "
            f"{m['clip_score']:.3f} |"
        )
    if args.results_file:
        Path(args.results_file).write_text(json.dumps({"query": str(query), "moments": moments}, indent=2))
    return moments


def main(argv: list[str] | None = None):
    command, text, args = parse(sys.argv[1:] if argv is None else argv)
    # Before any model or data: datasets is needed for every command; FAISS is optional (exact torch otherwise).
    require_extra_or_exit("search", ("datasets",), f"examples/search_sounds.py {command}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return run_index(args, device) if command == "index" else run_query(args, text, device)


if __name__ == "__main__":
    main()
