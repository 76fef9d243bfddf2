"""Search a sound collection by text (or by an example clip) and land on the moment: which recording, and when.

Indexing ([`build_index`]) embeds every recording of a `datasets` source (a Hub id, a `save_to_disk` folder, an
audiofolder or any folder of audio files, through [`~data.sources.load_dataset_source`]) on the one windowed path of
event detection ([`~sound_event_detection.embed_windows`]: 10 s windows every `hop_seconds`, stitched onto an
absolute grid of 10/32 s frames by [`~sound_event_detection.FrameGrid`]), so that a frame of an hour-long file has
its absolute time. It stores two `datasets` tables:

- `frames`: one row per frame: `recording` (row of the `recordings` table), `onset`, `offset` (seconds) and
  `embedding` (the L2-normalised frame embedding, float16);
- `recordings`: one row per recording: `recording_id`, `row` (of the source), `duration`, `first_frame`,
  `num_frames` and `clip_embedding` (the normalised global embedding, the mean over windows for long files, float16);

and one FAISS index over each embedding column, built through `Dataset.add_faiss_index` and saved with
`save_faiss_index`. Indexing writes shards of `shard_size` recordings; a run that stops is continued by calling
[`build_index`] again with the same arguments: finished shards are kept, so nothing is lost or embedded twice.

Searching ([`search`]) retrieves the best frames (optionally only within the recordings a clip-level first stage
keeps), then turns the score curve of each recording that holds one into moments with the one event decoder of the
package, [`~processing_mgaclap.post_process_sound_event_detection`] (its median filter and gap rule); the activity
threshold is the score of the last frame retrieved, unless given.

Which index ([`choose_index_type`]): exact `Flat` up to 100 000 frames (about 8.7 h of audio: a brute-force scan
takes milliseconds); `IVF` (exact vectors in inverted lists) up to 1 000 000 frames (about 87 h); `IVF-PQ` beyond
(72 bytes per frame: about 0.8 MB per hour of audio). `HNSW` is the lowest-latency choice where memory is plentiful
(about 1.3 kB per frame); it is never chosen automatically. Approximate candidates are re-scored exactly against the
stored float16 embeddings.

Without FAISS (`pip install "transformers-mgaclap[search]"`), the index holds the tables only and search is an exact
torch scan, with a warning saying so.
"""

from .index import (
    INDEX_TYPES,
    EmbeddingRows,
    SearchIndexError,
    SoundIndex,
    build_index,
    check_same_model,
    choose_index_type,
    cosines,
    embed_recording,
    faiss_available,
    faiss_factory,
    frame_table,
    load_index,
    model_fingerprint,
    recording_table,
    save_index,
    synthetic_collection,
)
from .query import embed_query, recording_curve, search, search_by_embedding

__all__ = [
    "INDEX_TYPES",
    "EmbeddingRows",
    "SearchIndexError",
    "SoundIndex",
    "build_index",
    "check_same_model",
    "choose_index_type",
    "cosines",
    "embed_query",
    "embed_recording",
    "faiss_available",
    "faiss_factory",
    "frame_table",
    "load_index",
    "model_fingerprint",
    "recording_curve",
    "recording_table",
    "save_index",
    "search",
    "search_by_embedding",
    "synthetic_collection",
]
