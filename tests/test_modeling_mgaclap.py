"""MGAClapModel: every equation against an independent float64 re-computation, plus API, masks and switches."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import ClapAudioConfig
from transformers.models.clap.modeling_clap import ClapAudioEncoder

from transformers_mgaclap import MGAClapModel, sparsemax
from transformers_mgaclap.modeling_mgaclap import (
    MGAClapLocalityAwareBlock,
    audio_tokens_to_frames,
    clap_loss,
    embedding_regularization,
    hard_negative_loss,
)

from conftest import TINY_AUDIO, audio_inputs, text_inputs, tiny_model

# ---------------------------------------------------------------------------------------------------------------
# float64 references, written from the paper's equations (not from the implementation)
# ---------------------------------------------------------------------------------------------------------------


def sparsemax_reference(z: np.ndarray) -> np.ndarray:
    """Projection onto the simplex by bisection on the threshold: sum(max(z - tau, 0)) = 1."""
    low, high = z.max() - 1.0, z.max()
    for _ in range(200):
        tau = (low + high) / 2
        if np.maximum(z - tau, 0).sum() > 1:
            low = tau
        else:
            high = tau
    return np.maximum(z - (low + high) / 2, 0)


def codebook_reference(x, mask, codewords, scale, pooling="max", activation="sparsemax"):
    """Eq. 2-3 with the official multiplicative mask: x (N, D), mask (N,), codewords (M, D) -> (D,), (M,)."""
    affinity = np.array(
        [[x[n] @ codewords[k] * scale * mask[n] for k in range(len(codewords))] for n in range(len(x))]
    )
    pooled = affinity.max(0) if pooling == "max" else affinity.sum(0) / mask.sum()
    if activation == "sparsemax":
        weights = sparsemax_reference(pooled)
    else:
        weights = np.exp(pooled - pooled.max()) / np.exp(pooled - pooled.max()).sum()
    return weights @ codewords, weights


def hard_negative_reference(s: np.ndarray, gamma: float) -> float:
    """Paper Eq. 7-8 literally (sums over rows and both directions), divided by 2B."""
    batch = len(s)
    total = 0.0
    for logits in (s, s.T):
        for i in range(batch):
            normaliser = sum(math.exp(gamma * logits[i, k]) for k in range(batch))
            negatives = sum(
                batch * math.exp(gamma * logits[i, j]) / normaliser * math.exp(logits[i, j])
                for j in range(batch)
                if j != i
            )
            total -= math.log(math.exp(logits[i, i]) / (math.exp(logits[i, i]) + negatives))
    return total / (2 * batch)


def official_hard_negative_reference(s: np.ndarray, gamma: float) -> float:
    """The official code's loss (docs/official-implementation.md §8.3), including its row-j normaliser and 1e-7."""
    batch = len(s)
    total = 0.0
    for logits in (s, s.T):
        shifted = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(gamma * shifted)
        row_sums = e.sum(axis=1)
        weights = np.empty_like(e)
        for i in range(batch):
            for j in range(batch):
                weights[i, j] = 1.0 if i == j else (batch - 1) * e[i, j] / (row_sums[j] - e[i, j])
        per_row = [
            shifted[i, i] - math.log(1e-7 + (weights[i] * np.exp(shifted[i])).sum()) for i in range(batch)
        ]
        total += -np.mean(per_row)
    return total / 2


def layer_norm(x, module):
    w, b = (p.detach().double().numpy() for p in (module.weight, module.bias))
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + module.eps) * w + b


# ---------------------------------------------------------------------------------------------------------------
# Sparsemax
# ---------------------------------------------------------------------------------------------------------------


def test_sparsemax_hand_worked_example():
    # sorted [1.1, 0.2, 0.1]: support k = 2, tau = (1.3 - 1) / 2 = 0.15
    out = sparsemax(torch.tensor([0.1, 1.1, 0.2]))
    torch.testing.assert_close(out, torch.tensor([0.0, 0.95, 0.05]))


def test_sparsemax_matches_float64_projection():
    generator = torch.Generator().manual_seed(0)
    for scale in (0.1, 1.0, 10.0):
        scores = torch.randn(50, 64, generator=generator, dtype=torch.float64) * scale
        expected = np.stack([sparsemax_reference(row) for row in scores.numpy()])
        out = sparsemax(scores)
        assert out.dtype == torch.float64
        np.testing.assert_allclose(out.numpy(), expected, atol=1e-12)
        assert torch.all(out >= 0) and torch.allclose(out.sum(-1), torch.ones(50, dtype=torch.float64))


def test_sparsemax_gradcheck_and_is_sparse():
    scores = torch.randn(4, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(sparsemax, (scores,))
    assert (sparsemax(torch.randn(8, 1000) * 5) == 0).any(dim=-1).all()


def test_sparsemax_upcasts_under_autocast():
    scores = torch.randn(3, 40)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sparsemax(scores.bfloat16())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, sparsemax(scores.bfloat16().float()))


# ---------------------------------------------------------------------------------------------------------------
# Codebook
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pooling", "activation"),
    [("max", "sparsemax"), ("mean", "sparsemax"), ("max", "softmax"), ("mean", "softmax")],
)
def test_codebook_matches_float64_equations(pooling, activation):
    model = tiny_model(codebook_pooling=pooling, codebook_activation=activation).double()
    local = torch.randn(2, 7, 16, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1, 0]])
    aggregated, weights = model.codebook(local, mask)
    codewords = model.codebook.codewords.detach().numpy()
    for row in range(2):
        expected, expected_weights = codebook_reference(
            local[row].numpy(), mask[row].numpy(), codewords, 0.5, pooling, activation
        )
        np.testing.assert_allclose(weights[row].detach().numpy(), expected_weights, atol=1e-10)
        np.testing.assert_allclose(aggregated[row].detach().numpy(), expected, atol=1e-9)


def test_codebook_official_text_mask_rule():
    """Masked positions score exactly 0: a codeword all real tokens score negatively gets affinity 0, not < 0."""
    model = tiny_model(codebook_size=8).double()
    with torch.no_grad():
        model.codebook.codewords.copy_(torch.eye(8, 16, dtype=torch.float64))
    z = model.codebook.codewords.detach()
    # Two real tokens scoring codeword 0 negatively, then a masked [SEP] position with arbitrary content.
    local = torch.stack([-z[0] + 0.3 * z[2], -2 * z[0] + 0.1 * z[2], torch.randn(16, dtype=torch.float64)])[
        None
    ]
    _, weights = model.codebook(local, torch.tensor([[1, 1, 0]]))
    official = torch.tensor([0.0, 0, 0.15, 0, 0, 0, 0, 0], dtype=torch.float64)  # max(0, best real score)
    excluded = torch.tensor([-0.5, 0, 0.15, 0, 0, 0, 0, 0], dtype=torch.float64)  # a -inf mask's max
    torch.testing.assert_close(weights[0], sparsemax(official))
    assert weights[0, 0] > 0 and sparsemax(excluded)[0] == 0


def test_codebook_ignores_content_of_masked_positions():
    model = tiny_model()
    local = torch.randn(2, 9, 16)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[:, 6:] = 0
    changed = local.clone()
    changed[:, 6:] = torch.randn(2, 3, 16) * 100
    torch.testing.assert_close(model.codebook(local, mask), model.codebook(changed, mask))


# ---------------------------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------------------------


def test_hard_negative_loss_matches_paper_equations():
    logits = torch.randn(6, 6, dtype=torch.float64) * 3
    for gamma in (0.15, 0.5, 1.0):
        expected = hard_negative_reference(logits.numpy(), gamma)
        assert hard_negative_loss(logits, gamma, "paper").item() == pytest.approx(expected, rel=1e-10)


def test_hard_negative_loss_official_variant_matches_official_formula():
    logits = torch.randn(5, 5, dtype=torch.float64) * 3
    expected = official_hard_negative_reference(logits.numpy(), 0.15)
    assert hard_negative_loss(logits, 0.15, "official").item() == pytest.approx(expected, abs=1e-6)
    assert hard_negative_loss(logits, 0.15, "official").item() != pytest.approx(
        hard_negative_loss(logits, 0.15, "paper").item(), abs=1e-6
    )


def test_gamma_zero_is_clap_loss_and_clap_loss_is_eq1():
    logits = torch.randn(7, 7, dtype=torch.float64) * 2
    eq1 = 0.0
    for s in (logits.numpy(), logits.numpy().T):
        eq1 -= sum(math.log(math.exp(s[i, i]) / np.exp(s[i]).sum()) for i in range(7))
    assert clap_loss(logits).item() == pytest.approx(eq1 / 14, rel=1e-12)
    for variant in ("paper", "official"):
        assert hard_negative_loss(logits, 0.0, variant).item() == pytest.approx(
            clap_loss(logits).item(), rel=1e-12
        )


def test_hard_negative_weights_are_not_detached():
    logits = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: hard_negative_loss(s, 0.15, "paper"), (logits,))


def test_embedding_regularization_formula():
    a, t = F.normalize(torch.randn(4, 16), dim=-1), F.normalize(torch.randn(4, 16), dim=-1)
    expected = a.abs().mean() / math.sqrt(4) + t.abs().mean() / math.sqrt(4)
    torch.testing.assert_close(embedding_regularization(a, t), expected)


# ---------------------------------------------------------------------------------------------------------------
# Audio tower: frame order and the locality-aware block
# ---------------------------------------------------------------------------------------------------------------


def test_frame_regrouping_is_time_ordered():
    """A synthetic 8 x 8 grid whose tokens hold their (chunk, column) time position comes out in time order."""
    grid, freq_ratio, groups = 8, 4, 2
    tokens = torch.empty(1, grid * grid, 2)
    for row in range(grid):
        for column in range(grid):
            chunk = row // groups  # image rows: 4 time chunks of 2 frequency groups each
            tokens[0, row * grid + column, 0] = 256 * chunk + 32 * column  # first stretched mel frame covered
            tokens[0, row * grid + column, 1] = row % groups
    frames = audio_tokens_to_frames(tokens, freq_ratio)
    assert frames.shape == (1, 32, 2)
    assert frames[0, :, 0].tolist() == [32.0 * k for k in range(32)]
    assert torch.all(frames[0, :, 1] == 0.5)  # mean of the two frequency groups


def test_frames_without_locality_aware_block_equal_transformers_encoder():
    """With 0 locality-aware blocks the frames are transformers' ClapAudioEncoder map averaged over frequency."""
    model = tiny_model(num_locality_aware_blocks=0)
    reference = ClapAudioEncoder(ClapAudioConfig(**TINY_AUDIO)).eval()
    reference.load_state_dict(model.audio_encoder.state_dict(), strict=False)
    features = audio_inputs(2)["input_features"]
    expected = reference(features.unsqueeze(1)).last_hidden_state.mean(2).transpose(1, 2)  # (B, 32, C)
    torch.testing.assert_close(
        model.audio_encoder(features).last_hidden_state, expected, atol=1e-5, rtol=1e-5
    )


def test_locality_aware_block_matches_float64_formula():
    model = tiny_model(num_locality_aware_blocks=1)
    encoder = model.audio_encoder
    block = encoder.layers[-1].blocks[-1]
    assert isinstance(block, MGAClapLocalityAwareBlock)
    captured = {}
    block.register_forward_pre_hook(lambda module, args: captured.setdefault("x", args[0].detach()))
    frames = encoder(audio_inputs(2)["input_features"]).last_hidden_state

    x = captured["x"].double().numpy()  # (B, 64, C): the input of the last block
    value = block.attention.self.value
    dense = block.attention.output.dense
    w_v, b_v = value.weight.detach().double().numpy(), value.bias.detach().double().numpy()
    w_o, b_o = dense.weight.detach().double().numpy(), dense.bias.detach().double().numpy()
    v = x + (layer_norm(x, block.layernorm_before) @ w_v.T + b_v) @ w_o.T + b_o
    v = v + layer_norm(v, block.layernorm_after)
    y = layer_norm(v, encoder.norm)
    # docs/official-implementation.md §3.3: map[g, k] = token(8 (2 floor(k / 8) + g) + k mod 8), then mean over g.
    expected = np.stack(
        [np.mean([y[:, 8 * (2 * (k // 8) + g) + k % 8] for g in (0, 1)], axis=0) for k in range(32)], axis=1
    )
    np.testing.assert_allclose(frames.detach().double().numpy(), expected, atol=1e-5)


def test_locality_aware_blocks_replace_the_last_blocks_and_drop_unused_weights():
    counts = {}
    for n in (0, 1, 2, 3):
        model = tiny_model(num_locality_aware_blocks=n)
        blocks = [b for stage in model.audio_encoder.layers for b in stage.blocks]
        assert [isinstance(b, MGAClapLocalityAwareBlock) for b in blocks] == [False] * (5 - n) + [True] * n
        counts[n] = sum(p.numel() for p in model.parameters())
        keys = [k for k in model.state_dict() if k.startswith(f"audio_encoder.layers.3.blocks.{1}.")]
        assert any("attention.self.value" in k for k in keys)
        assert any("query" in k for k in keys) == (n == 0)
    assert counts[0] > counts[1] > counts[2] > counts[3]


# ---------------------------------------------------------------------------------------------------------------
# The model API
# ---------------------------------------------------------------------------------------------------------------


def test_forward_outputs_and_shapes(model):
    text, audio = text_inputs(3), audio_inputs(3)
    out = model(**text, **audio, return_loss=True)
    assert out.logits_per_audio.shape == (3, 3)
    torch.testing.assert_close(out.logits_per_text, out.logits_per_audio.t())
    assert out.audio_embeds.shape == out.text_embeds.shape == (3, 16)
    torch.testing.assert_close(out.audio_embeds.norm(dim=-1), torch.ones(3))
    audio_out, text_out = out.audio_model_output, out.text_model_output
    assert audio_out.local_embeds.shape == (3, 32, 16)
    assert text_out.local_embeds.shape == (3, text["input_ids"].shape[1] - 1, 16)
    assert audio_out.codeword_weights.shape == text_out.codeword_weights.shape == (3, 24)
    torch.testing.assert_close(out.logits_per_audio, out.audio_embeds @ out.text_embeds.t() / 0.07)
    assert out.loss.item() == pytest.approx(model.contrastive_loss(out.audio_embeds, out.text_embeds).item())
    assert audio_out.local_mask.shape == (3, 32) and text_out.local_mask.tolist()[0][:4] == [1, 1, 0, 0]
    assert isinstance(model(**text, **audio, return_dict=False), tuple)


def test_get_features_return_base_model_output_with_pooling(model):
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    text = model.get_text_features(**text_inputs(2))
    audio = model.get_audio_features(**audio_inputs(2))
    assert isinstance(text, BaseModelOutputWithPooling) and isinstance(audio, BaseModelOutputWithPooling)
    out = model(**text_inputs(2), **audio_inputs(2))
    torch.testing.assert_close(text.pooler_output, out.text_embeds)
    torch.testing.assert_close(audio.local_embeds, out.audio_model_output.local_embeds)


def test_word_mask_drops_cls_sep_and_pad(model):
    text = text_inputs(3)
    out = model.get_text_features(**text)
    lengths = text["attention_mask"].sum(1)
    for row, length in enumerate(lengths.tolist()):
        expected = [1] * (length - 2) + [0] * (text["input_ids"].shape[1] - 1 - (length - 2))
        assert out.local_mask[row].tolist() == expected


def test_padding_tokens_do_not_change_text_embeddings(model):
    text = text_inputs(3)
    alone = model.get_text_features(
        input_ids=text["input_ids"][:1, :4], attention_mask=text["attention_mask"][:1, :4]
    )  # row 0 has 4 tokens: no padding at all
    batched = model.get_text_features(**text)
    torch.testing.assert_close(batched.pooler_output[0], alone.pooler_output[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched.local_embeds[0, :3], alone.local_embeds[0], atol=1e-5, rtol=1e-5)


def test_audio_embeddings_do_not_depend_on_the_batch(model):
    audio = audio_inputs(3)
    alone = model.get_audio_features(audio["input_features"][1:2]).pooler_output
    batched = model.get_audio_features(audio["input_features"]).pooler_output
    torch.testing.assert_close(batched[1:2], alone, atol=1e-5, rtol=1e-5)


def test_input_features_mask_excludes_padded_frames_from_pooling(model):
    features = audio_inputs(1)["input_features"]
    mel_mask = torch.zeros(1, 1001, dtype=torch.long)
    mel_mask[:, :500] = 1  # the first 5 s are real audio
    out = model.get_audio_features(features, mel_mask)
    assert out.local_mask.sum().item() == 16  # frames 0..15 cover the first 5 s of 10 s
    expected, _ = model.codebook(out.local_embeds, out.local_mask)
    torch.testing.assert_close(out.pooler_output, F.normalize(expected, dim=-1))
    unmasked = model.get_audio_features(features).pooler_output
    assert not torch.allclose(out.pooler_output, unmasked)


def test_frame_text_similarity(model):
    text, audio = text_inputs(2), audio_inputs(3)
    sim = model.get_frame_text_similarity(**audio, **text)
    assert sim.frame_similarity.shape == (3, 32, 2) and sim.clip_similarity.shape == (3, 2)
    torch.testing.assert_close(sim.frame_boundaries, torch.linspace(0, 10, 33))
    frames = F.normalize(model.get_audio_features(**audio).local_embeds, dim=-1)
    texts = model.get_text_features(**text).pooler_output
    torch.testing.assert_close(sim.frame_similarity, torch.einsum("btd,nd->btn", frames, texts))
    assert sim.frame_similarity.abs().max() <= 1 + 1e-5
    # A 5 s input (501 mel frames) is stretched over the same 32 frames: they span 5 s.
    half = model.get_frame_text_similarity(audio["input_features"][:, :501], **text)
    assert half.frame_boundaries[-1].item() == pytest.approx(5.0)


def test_bad_inputs_raise_clear_errors(model):
    text, audio = text_inputs(2), audio_inputs(2)
    with pytest.raises(ValueError, match="input_features"):
        model(**text, input_features=torch.randn(2, 1001, 32))
    with pytest.raises(ValueError, match="empty text"):
        model.get_text_features(input_ids=torch.tensor([[101, 102]]), attention_mask=torch.tensor([[1, 1]]))
    with pytest.raises(ValueError, match="right-padded"):
        model.get_text_features(
            input_ids=torch.tensor([[0, 101, 7, 102]]), attention_mask=torch.tensor([[0, 1, 1, 1]])
        )
    with pytest.raises(ValueError, match="as many captions"):
        model(**text_inputs(3), **audio, return_loss=True)
    with pytest.raises(ValueError, match="swin input size"):  # longer than the 1024 frames HTS-AT takes
        model.get_audio_features(torch.randn(1, 1100, 64))


# ---------------------------------------------------------------------------------------------------------------
# Ablation switches
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"aggregator": "mean"},
        {"codebook_pooling": "mean"},
        {"codebook_activation": "softmax"},
        {"num_locality_aware_blocks": 0},
        {"num_locality_aware_blocks": 2},
        {"loss": "clap"},
        {"hard_negative_variant": "official"},
        {"embedding_regularization": True},
        {"spec_augment": True},
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "mgaclap",
)
def test_every_switch_runs_forward_and_backward(overrides):
    model = tiny_model(**overrides).train()
    out = model(**text_inputs(4), **audio_inputs(4), return_loss=True)
    out.loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert missing == [], f"parameters without gradient: {missing}"
    assert torch.isfinite(out.loss)


def test_mean_aggregator_is_vanilla_clap_pooling():
    model = tiny_model(aggregator="mean")
    assert model.codebook is None
    out = model(**text_inputs(2), **audio_inputs(2))
    audio_out, text_out = out.audio_model_output, out.text_model_output
    assert audio_out.codeword_weights is None
    torch.testing.assert_close(out.audio_embeds, F.normalize(audio_out.local_embeds.mean(1), dim=-1))
    word_mask = text_out.local_mask.unsqueeze(-1).float()
    expected = F.normalize((text_out.local_embeds * word_mask).sum(1) / word_mask.sum(1), dim=-1)
    torch.testing.assert_close(out.text_embeds, expected)


def test_activation_switch_changes_sparsity():
    sparse = tiny_model(codebook_activation="sparsemax")(**text_inputs(2), **audio_inputs(2))
    dense = tiny_model(codebook_activation="softmax")(**text_inputs(2), **audio_inputs(2))
    sparse_weights, dense_weights = (
        sparse.audio_model_output.codeword_weights,
        dense.audio_model_output.codeword_weights,
    )
    assert (sparse_weights == 0).any() and (dense_weights > 0).all()


def test_loss_switches_change_the_loss():
    inputs = {**text_inputs(4), **audio_inputs(4)}
    losses = {}
    for name, overrides in {
        "hn": {},
        "clap": {"loss": "clap"},
        "hn_gamma0": {"hard_negative_gamma": 0.0},
        "official": {"hard_negative_variant": "official"},
        "reg": {"embedding_regularization": True},
    }.items():
        losses[name] = tiny_model(**overrides)(**inputs, return_loss=True)
    assert losses["hn"].loss.item() != pytest.approx(losses["clap"].loss.item())
    assert losses["hn_gamma0"].loss.item() == pytest.approx(losses["clap"].loss.item(), rel=1e-6)
    assert losses["official"].loss.item() != pytest.approx(losses["hn"].loss.item())
    out = losses["reg"]
    regulariser = embedding_regularization(out.audio_embeds, out.text_embeds)
    assert out.loss.item() == pytest.approx(losses["hn"].loss.item() + regulariser.item(), rel=1e-6)


def test_spec_augment_only_in_training():
    model = tiny_model(spec_augment=True)
    features = audio_inputs(2)["input_features"]
    torch.testing.assert_close(
        model.audio_encoder(features).last_hidden_state, model.audio_encoder(features).last_hidden_state
    )  # eval: deterministic
    model.train()
    assert not torch.allclose(
        model.audio_encoder(features).last_hidden_state, model.audio_encoder(features).last_hidden_state
    )


def test_gradient_checkpointing_gives_the_same_gradients():
    inputs = {**text_inputs(3), **audio_inputs(3)}
    grads = []
    for checkpointing in (False, True):
        model = tiny_model().train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        model(**inputs, return_loss=True).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-5, msg=name)


# ---------------------------------------------------------------------------------------------------------------
# Initialisation and serialisation
# ---------------------------------------------------------------------------------------------------------------


def test_init_weights_of_custom_parameters():
    model = tiny_model(codebook_size=4000, projection_dim=64, temperature_init=0.05)
    codewords = model.codebook.codewords
    assert abs(codewords.mean().item()) < 0.02 and codewords.std().item() == pytest.approx(1.0, abs=0.02)
    assert model.temperature.item() == pytest.approx(0.05)
    table = model.audio_encoder.layers[0].blocks[0].attention.self.relative_position_bias_table
    assert torch.all(table == 0)


def test_save_and_reload_reproduces_outputs(tmp_path):
    model = tiny_model()
    inputs = {**text_inputs(2), **audio_inputs(2)}
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    reloaded = MGAClapModel.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(
        reloaded(**inputs).logits_per_audio, model(**inputs).logits_per_audio, atol=0, rtol=0
    )
    assert reloaded.temperature.item() == model.temperature.item()


def test_paper_geometry_by_default():
    model_config = MGAClapModel.config_class()
    assert model_config.num_audio_frames == 32
    assert model_config.audio_config.hidden_size == 768
    assert model_config.text_config.hidden_size == 768


# ---------------------------------------------------------------------------------------------------------------
# Mixed precision: the towers in half precision, the MGA-CLAP head in float32
# ---------------------------------------------------------------------------------------------------------------

SWITCHES = [
    {},
    {"aggregator": "mean"},
    {"codebook_pooling": "mean"},
    {"codebook_activation": "softmax"},
    {"num_locality_aware_blocks": 0},
    {"loss": "clap"},
    {"hard_negative_variant": "official"},
    {"embedding_regularization": True},
]


def flat_gradient(model: MGAClapModel, dtype: torch.dtype | None) -> torch.Tensor:
    """All parameter gradients of one loss, under CPU autocast to `dtype` (None: float32)."""
    model.zero_grad()
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        loss = model(**text_inputs(8), **audio_inputs(8), return_loss=True).loss
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize(
    "overrides", SWITCHES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "mgaclap"
)
def test_bfloat16_autocast_gradients_follow_float32(overrides):
    model = tiny_model(**overrides).train()
    reference, mixed = flat_gradient(model, None), flat_gradient(model, torch.bfloat16)
    assert F.cosine_similarity(reference, mixed, dim=0) >= 0.99


def test_bfloat16_autocast_gradients_at_the_official_affinity_scale():
    """At the official 1/(sqrt(D) * 1000) scale the codewords differ in the fourth digit of their affinities: a bf16
    codebook made the gradient noise (cosine ~0.1 against float32)."""
    model = tiny_model(codebook_affinity_scale=1 / (math.sqrt(16) * 1000)).train()
    reference, mixed = flat_gradient(model, None), flat_gradient(model, torch.bfloat16)
    assert F.cosine_similarity(reference, mixed, dim=0) >= 0.99


def test_head_runs_in_float32_under_autocast(model):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**text_inputs(2), **audio_inputs(2), return_loss=True)
        tower = model.get_audio_features(**audio_inputs(2)).last_hidden_state
    assert tower.dtype == torch.bfloat16  # the towers do run in half precision
    assert out.audio_model_output.local_embeds.dtype == out.audio_embeds.dtype == torch.float32
    assert out.logits_per_audio.dtype == out.loss.dtype == torch.float32
