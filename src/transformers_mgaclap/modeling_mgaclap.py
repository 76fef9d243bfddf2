"""PyTorch MGA-CLAP: multi-grained contrastive language-audio pre-training (arXiv 2408.07919).

Reading order: helpers (Sparsemax, frame regrouping, SpecAugment, losses) -> output dataclasses -> audio pieces
(locality-aware block, LAION feature fusion, HTS-AT frame encoder) -> projection head and codebook -> pre-trained
base -> the model.
What the official code computes, where it differs from the paper and which option reproduces which, is
documented next to each piece.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertModel, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPooling
from transformers.models.bert.modeling_bert import BertEmbeddings
from transformers.models.clap.modeling_clap import (
    ClapAudioAttention,
    ClapAudioEncoder,
    ClapAudioLayer,
    ClapAudioPatchEmbed,
    ClapAudioSelfAttention,
)
from transformers.utils import ModelOutput, can_return_tuple

from .configuration_mgaclap import MGAClapConfig

# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------


class _SparsemaxFunction(torch.autograd.Function):
    """Sort-based Sparsemax (Martins & Astudillo, 2016) along the last axis, with its exact Jacobian-vector product."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor) -> torch.Tensor:
        # Shifting by the maximum changes nothing mathematically and keeps the cumulative sums small.
        scores = scores - scores.amax(dim=-1, keepdim=True)
        sorted_scores = scores.sort(dim=-1, descending=True).values
        cumulative = sorted_scores.cumsum(dim=-1) - 1.0
        rank = torch.arange(1, scores.shape[-1] + 1, device=scores.device, dtype=scores.dtype)
        support_size = (rank * sorted_scores > cumulative).sum(dim=-1, keepdim=True)
        threshold = cumulative.gather(-1, support_size - 1) / support_size.to(scores.dtype)
        probabilities = (scores - threshold).clamp(min=0.0)
        ctx.save_for_backward(probabilities)
        return probabilities

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        (probabilities,) = ctx.saved_tensors
        support = (probabilities > 0).to(grad_output.dtype)
        # J = diag(s) - s s^T / |S| on the support S.
        support_mean = (grad_output * support).sum(-1, keepdim=True) / support.sum(-1, keepdim=True)
        return support * (grad_output - support_mean)


def sparsemax(scores: torch.Tensor) -> torch.Tensor:
    """Sparsemax over the last axis: the Euclidean projection of `scores` onto the probability simplex.

    Runs in float32 (or float64 for float64 input) even under fp16/bf16 autocast: the threshold is a difference
    of cumulative sums, which half precision gets wrong. Works on any device.

    Args:
        scores (`torch.Tensor` of shape `(..., M)`): unnormalised scores.

    Returns:
        `torch.Tensor` of shape `(..., M)`: non-negative, summing to 1 along the last axis, usually sparse.
    """
    compute_dtype = torch.promote_types(scores.dtype, torch.float32)
    with torch.autocast(device_type=scores.device.type, enabled=False):
        return _SparsemaxFunction.apply(scores.to(compute_dtype))


def audio_tokens_to_frames(tokens: torch.Tensor, freq_ratio: int) -> torch.Tensor:
    """Regroup the final HTS-AT token grid into time-ordered frames, averaging the frequency groups.

    HTS-AT folds the (stretched) log-mel into a square image: `freq_ratio` chunks of time stacked along the
    frequency axis. A final token at row `r`, column `c` of the `R x R` grid therefore covers time chunk
    `r // groups`, frequency group `r % groups` (with `groups = R // freq_ratio`) and, inside that chunk, column
    `c`. Frame `k = chunk * R + c` comes out in temporal order; the official code averages the frequency groups
    (docs/official-implementation.md §3.3).

    Args:
        tokens (`torch.Tensor` of shape `(batch, R * R, channels)`): final tokens, row-major.
        freq_ratio (`int`): spec_size // num_mel_bins (4 for the paper's HTS-AT).

    Returns:
        `torch.Tensor` of shape `(batch, freq_ratio * R, channels)`: frame features, 32 frames for the paper's
        geometry.
    """
    batch_size, num_tokens, channels = tokens.shape
    grid = int(round(num_tokens**0.5))
    groups = grid // freq_ratio
    tokens = tokens.view(batch_size, freq_ratio, groups, grid, channels)  # (B, chunk, group, column, C)
    tokens = tokens.transpose(1, 2).reshape(batch_size, groups, freq_ratio * grid, channels)
    return tokens.mean(dim=1)


def spec_augment(
    features: torch.Tensor, time_width: int = 64, freq_width: int = 8, stripes: int = 2
) -> torch.Tensor:
    """Zero random time and frequency stripes of normalised log-mels, as the official HTS-AT's `DropStripes`.

    Each of `stripes` stripes per axis has a width drawn uniformly in `[0, width)` and a uniform start.

    Args:
        features (`torch.Tensor` of shape `(batch, 1, time, mel)`).
    """
    batch_size, _, num_times, num_mels = features.shape

    def stripe_mask(size: int, max_width: int) -> torch.Tensor:  # (batch, size), True = dropped
        widths = torch.randint(0, max(max_width, 1), (batch_size, stripes, 1), device=features.device)
        starts = (torch.rand(batch_size, stripes, 1, device=features.device) * (size - widths)).long()
        positions = torch.arange(size, device=features.device)
        return ((positions >= starts) & (positions < starts + widths)).any(dim=1)

    time_mask = stripe_mask(num_times, min(time_width, num_times))
    freq_mask = stripe_mask(num_mels, min(freq_width, num_mels))
    dropped = time_mask[:, None, :, None] | freq_mask[:, None, None, :]
    return features.masked_fill(dropped, 0.0)


def clap_loss(logits_per_audio: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of paper Eq. 1, as a mean over rows and over the two directions (Eq. 1 / 2B).

    Args:
        logits_per_audio (`torch.Tensor` of shape `(batch, batch)`): `<audio_i, text_j> / tau`; pairs on the diagonal.
    """
    labels = torch.arange(logits_per_audio.shape[0], device=logits_per_audio.device)
    return (F.cross_entropy(logits_per_audio, labels) + F.cross_entropy(logits_per_audio.t(), labels)) / 2


def hard_negative_weights(logits: torch.Tensor, gamma: float, variant: str = "paper") -> torch.Tensor:
    """Difficulty weights of the negatives (paper Eq. 8); the positives get weight 1.

    `"paper"`: `alpha_ij = B exp(gamma s_ij) / sum_k exp(gamma s_ik)`, the sum over all k (positive included).
    `"official"`: the official code's `(B - 1) E_ij / (sum_k E_jk - E_ij)` with `E = exp(gamma (s - max_row s))`;
    its normaliser is row **j**'s sum (a broadcasting quirk, docs/official-implementation.md §8.3).
    Weights are not detached, in both variants, as in the official code.

    Args:
        logits (`torch.Tensor` of shape `(batch, batch)`): one direction's logits `s_ij`, positives on the diagonal.
    """
    batch_size = logits.shape[0]
    if variant == "paper":
        weights = batch_size * torch.softmax(gamma * logits, dim=1)
    elif variant == "official":
        exp_logits = torch.exp(gamma * (logits - logits.amax(dim=1, keepdim=True).detach()))
        weights = (batch_size - 1) * exp_logits / (exp_logits.sum(dim=1)[None, :] - exp_logits)
    else:
        raise ValueError(f"Unknown hard-negative variant {variant!r}: use 'paper' or 'official'.")
    return weights.masked_fill(torch.eye(batch_size, dtype=torch.bool, device=logits.device), 1.0)


def hard_negative_loss(logits_per_audio: torch.Tensor, gamma: float, variant: str = "paper") -> torch.Tensor:
    """Hard-negative guided contrastive loss of paper Eq. 7, as a mean over rows and directions (Eq. 7 / 2B).

    Each direction is `-log(e^{s_ii} / (e^{s_ii} + sum_{j != i} w_ij e^{s_ij}))`; with `gamma = 0` every weight is
    1 and this is [`clap_loss`].

    Args:
        logits_per_audio (`torch.Tensor` of shape `(batch, batch)`): `<audio_i, text_j> / tau`.
    """

    def one_direction(logits: torch.Tensor) -> torch.Tensor:
        weights = hard_negative_weights(logits, gamma, variant)
        return (torch.logsumexp(logits + weights.log(), dim=1) - logits.diagonal()).mean()

    return (one_direction(logits_per_audio) + one_direction(logits_per_audio.t())) / 2


def embedding_regularization(audio_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """The official code's (WavCaps') regulariser `mean(|A|) / ||A||_F + mean(|T|) / ||T||_F` (not in the paper)."""
    return audio_embeds.abs().mean() / audio_embeds.norm() + text_embeds.abs().mean() / text_embeds.norm()


# ---------------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class MGAClapModalityOutput(BaseModelOutputWithPooling):
    r"""
    Output of [`MGAClapModel.get_audio_features`] and [`MGAClapModel.get_text_features`]. The first four fields mean
    what they mean in transformers' `ClapModel`; the last three are MGA-CLAP's.

    Args:
        last_hidden_state (`torch.FloatTensor`):
            The tower's last hidden state. Text: BERT's, `(batch, length, text hidden size)`. Audio: HTS-AT's final
            tokens after its LayerNorm, regrouped into time-ordered frames, `(batch, T, audio hidden size)` (T = 32
            frames of 10/32 s for the paper's geometry; the locality-aware block's value path).
        pooler_output (`torch.FloatTensor` of shape `(batch, projection_dim)`):
            L2-normalised global embedding (codebook aggregate, or masked mean for `aggregator="mean"`).
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned with `output_hidden_states=True`):
            The tower's hidden states, laid out as in `ClapModel`. Text: BERT's embeddings and every layer,
            `(batch, length, hidden)`. Audio: the patch embeddings and the output of every stage, `(batch, channels,
            height, width)` on HTS-AT's token grid (not time-ordered).
        attentions (`tuple(torch.FloatTensor)`, *optional*, returned with `output_attentions=True`):
            Attention probabilities. Text: every BERT layer's `(batch, heads, length, length)` (needs the eager
            attention implementation). Audio, as `ClapModel`: each Swin stage's last block, per window `(batch *
            windows, heads, window_tokens, window_tokens)`; a stage that ends with a locality-aware block has none.
        local_embeds (`torch.FloatTensor` of shape `(batch, length, projection_dim)`):
            Projected local embeddings, not normalised: frames `(batch, T, D)` for audio, word pieces without [CLS]
            `(batch, L - 1, D)` for text. The primitive of frame-level detection and grounding.
        local_mask (`torch.LongTensor` of shape `(batch, length)`):
            1 on frames that hold real audio / on real word pieces, 0 on padding, [SEP] and [PAD].
        codeword_weights (`torch.FloatTensor` of shape `(batch, codebook_size)`, *optional*):
            Aggregation weights over the codewords (Sparsemax or Softmax output); `None` without a codebook.
    """

    local_embeds: torch.FloatTensor | None = None
    local_mask: torch.LongTensor | None = None
    codeword_weights: torch.FloatTensor | None = None


@dataclass
class MGAClapOutput(ModelOutput):
    r"""
    Output of [`MGAClapModel.forward`], with the fields of transformers' `ClapOutput`.

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `return_loss=True`):
            The configured contrastive loss (+ the embedding regulariser when enabled).
        logits_per_audio (`torch.FloatTensor` of shape `(audio_batch, text_batch)`):
            Cosine similarities divided by the learned temperature.
        logits_per_text (`torch.FloatTensor` of shape `(text_batch, audio_batch)`):
            The transpose of `logits_per_audio`.
        text_embeds (`torch.FloatTensor` of shape `(text_batch, projection_dim)`): normalised global text embeddings.
        audio_embeds (`torch.FloatTensor` of shape `(audio_batch, projection_dim)`): normalised global audio embeddings.
        text_model_output ([`MGAClapModalityOutput`]): what [`MGAClapModel.get_text_features`] returns (word pieces
            in `local_embeds`).
        audio_model_output ([`MGAClapModalityOutput`]): what [`MGAClapModel.get_audio_features`] returns (frames in
            `local_embeds`).
    """

    loss: torch.FloatTensor | None = None
    logits_per_audio: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    audio_embeds: torch.FloatTensor | None = None
    text_model_output: MGAClapModalityOutput | None = None
    audio_model_output: MGAClapModalityOutput | None = None

    def to_tuple(self) -> tuple:
        return tuple(value.to_tuple() if isinstance(value, ModelOutput) else value for value in self.values())


@dataclass
class MGAClapFrameSimilarityOutput(ModelOutput):
    r"""
    Output of [`MGAClapModel.get_frame_text_similarity`]: the primitive of zero-shot sound event detection and
    text-to-audio grounding. Raw cosines, no temperature, as the official zero-shot scripts use.

    Args:
        frame_similarity (`torch.FloatTensor` of shape `(audio_batch, num_frames, text_batch)`):
            Cosine between each normalised frame embedding and each normalised global text embedding.
        clip_similarity (`torch.FloatTensor` of shape `(audio_batch, text_batch)`):
            Cosine between the global audio and text embeddings.
        frame_boundaries (`torch.FloatTensor` of shape `(num_frames + 1,)`):
            Frame `k` spans `[frame_boundaries[k], frame_boundaries[k + 1])` seconds of the fed input.
        frame_mask (`torch.LongTensor` of shape `(audio_batch, num_frames)`): 1 on frames holding real audio.
    """

    frame_similarity: torch.FloatTensor | None = None
    clip_similarity: torch.FloatTensor | None = None
    frame_boundaries: torch.FloatTensor | None = None
    frame_mask: torch.LongTensor | None = None


# ---------------------------------------------------------------------------------------------------------------
# Audio tower
# ---------------------------------------------------------------------------------------------------------------


class MGAClapValueProjection(nn.Module):
    """Holds the value slice of a Swin attention under its original name (`attention.self.value`)."""

    def __init__(self, value: nn.Linear):
        super().__init__()
        self.value = value


class MGAClapValuePath(nn.Module):
    """A Swin attention reduced to its value and output projections: each token is mapped on its own, no token mixing.

    (Not named `...Attention`: transformers decides from class names whether a model can switch its attention
    implementation, and this module computes no attention.)"""

    def __init__(self, attention: ClapAudioAttention):
        super().__init__()
        self.self = MGAClapValueProjection(attention.self.value)
        self.output = attention.output

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.output(self.self.value(hidden_states), hidden_states)


class MGAClapLocalityAwareBlock(nn.Module):
    """The locality-aware block (paper §3.3, arXiv 2408.07919) as the official code computes it.

    The paper drops the query-key attention and keeps the values. The official code also drops the MLP and keeps
    `layernorm_after` as a residual term (docs/official-implementation.md §4.1)::

        v = x + DropPath(W_o (W_v LN_1(x) + b_v) + b_o)
        y = v + DropPath(LN_2(v))

    No token mixing: the window partition and cyclic shift of the Swin block are no-ops and are skipped. The
    query, key, relative position bias and MLP of the replaced block are removed, so they are neither saved nor
    left without gradients under DDP.
    """

    def __init__(self, block: ClapAudioLayer):
        super().__init__()
        self.layernorm_before = block.layernorm_before
        self.attention = MGAClapValuePath(block.attention)
        self.drop_path = block.drop_path
        self.layernorm_after = block.layernorm_after

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor]:
        # (batch, tokens, channels); the extra arguments of ClapAudioLayer (grid size, ...) are irrelevant here.
        hidden_states = hidden_states + self.drop_path(self.attention(self.layernorm_before(hidden_states)))
        hidden_states = hidden_states + self.drop_path(self.layernorm_after(hidden_states))
        return (hidden_states,)


class MGAClapFusionPatchEmbed(ClapAudioPatchEmbed):
    """transformers' fused HTS-AT patch embedding (LAION-CLAP `aff_2d`, arXiv 2211.06687 §2.3) with two traps fixed.

    Same submodules and state-dict keys as `ClapAudioPatchEmbed(enable_fusion=True)` (`proj`, `mel_conv2d`,
    `fusion_model`), and the same computation, which matches LAION's `htsat.py::PatchEmbed`: the global channel goes
    through the patch convolution; for the clips being fused, each of the three local channels goes through
    `mel_conv2d` (a 3x wider stride in time), the three maps are concatenated along time, zero-padded to the global
    width and merged with the global map by attentional feature fusion. Differences:

    - a single fused clip in training mode: the fusion block's BatchNorm after global pooling sees one value per
      channel, which crashes in transformers (`Expected more than 1 value per channel`). LAION duplicates the clip,
      which makes that BatchNorm output a constant and drags its running variance towards 0; here the fusion block
      normalises that step with its running statistics instead (gradients still flow, running statistics untouched);
    - the fused rows are written out of place (`index_copy`), not into the convolution's output.
    """

    def forward(self, hidden_states: torch.Tensor, is_longer_idx: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            hidden_states (`torch.FloatTensor` of shape `(batch, 1 or 4, spec_size, spec_size)`): folded log-mel
                images, channel 0 the global view, channels 1-3 the local views.
            is_longer_idx (`torch.LongTensor` of shape `(num_fused,)`, *optional*): clips to fuse.

        Returns:
            `torch.FloatTensor` of shape `(batch, grid * grid, patch_embeds_hidden_size)`.
        """
        _, _, height, width = hidden_states.shape
        if (height, width) != tuple(self.img_size):
            raise ValueError(
                f"Input audio size ({height}*{width}) doesn't match model ({self.img_size[0]}*{self.img_size[1]})."
            )
        global_states = self.proj(hidden_states[:, :1])  # (B, C, H', W')
        if is_longer_idx is not None and len(is_longer_idx) > 0:
            local_states = hidden_states[is_longer_idx, 1:]  # (B_l, 3, S, S)
            num_fused, num_views = local_states.shape[:2]
            local_states = self.mel_conv2d(local_states.reshape(num_fused * num_views, 1, height, width))
            local_states = local_states.view(
                num_fused, num_views, *local_states.shape[1:]
            )  # (B_l, 3, C, H', W'/3)
            local_states = local_states.permute(0, 2, 3, 1, 4).flatten(3)  # views side by side in time
            local_states = F.pad(local_states, (0, global_states.shape[-1] - local_states.shape[-1]))
            fused = self._fuse(global_states[is_longer_idx], local_states)
            global_states = global_states.index_copy(0, is_longer_idx, fused)
        if self.flatten:
            global_states = global_states.flatten(2).transpose(1, 2)
        return self.norm(global_states)

    def _fuse(self, global_states: torch.Tensor, local_states: torch.Tensor) -> torch.Tensor:
        if not (self.training and global_states.shape[0] == 1):
            return self.fusion_model(global_states, local_states)
        self.fusion_model.eval()  # one clip: no batch variance to normalise with, use the running statistics
        try:
            return self.fusion_model(global_states, local_states)
        finally:
            self.fusion_model.train()


class MGAClapAudioEncoder(ClapAudioEncoder):
    """transformers' HTS-AT encoder returning time-ordered frame features instead of a pooled clip embedding.

    Same submodules and state-dict keys as `ClapAudioEncoder` (so `ClapAudioModel` and HTS-AT weights load into
    it), with the last `num_locality_aware_blocks` Swin blocks replaced by [`MGAClapLocalityAwareBlock`]s and the
    official SpecAugment after the mel BatchNorm in training mode. The unused clip path (`avgpool`) is skipped.
    With `config.enable_fusion`, the patch embedding is [`MGAClapFusionPatchEmbed`] (LAION feature fusion).
    """

    def __init__(self, config, num_locality_aware_blocks: int = 1, spec_augment: bool = True):
        super().__init__(config)
        self.spec_augment = spec_augment
        if config.enable_fusion:
            self.patch_embed = MGAClapFusionPatchEmbed(config)
        blocks = [(stage, index) for stage in self.layers for index in range(len(stage.blocks))]
        for stage, index in blocks[len(blocks) - num_locality_aware_blocks :]:
            # The value path of block i feeds block i + 1 (the natural generalisation of the official single block).
            stage.blocks[index] = MGAClapLocalityAwareBlock(stage.blocks[index])

    def forward(
        self,
        input_features: torch.Tensor,
        is_longer: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> BaseModelOutput:
        """
        Args:
            input_features (`torch.FloatTensor` of shape `(batch, mel_frames, num_mel_bins)`): log-mel spectrograms;
                with fusion also `(batch, 4, mel_frames, num_mel_bins)`: [global, front, middle, back] views.
            is_longer (`torch.BoolTensor` of shape `(batch,)`, *optional*): with fusion, the clips whose local views
                are fused into the global one; the others use channel 0 only.
            output_attentions, output_hidden_states (`bool`): also return, as `ClapAudioModel` does, the attention
                probabilities of each stage's last block / the patch embeddings and every stage's output.

        Returns:
            `BaseModelOutput`: `last_hidden_state` of shape `(batch, num_frames, hidden_size)`, the frame features
            in temporal order (32 x 768 for the paper's HTS-AT) after the final LayerNorm; `hidden_states` and
            `attentions` on request.
        """
        if self.enable_fusion:
            features, longer_idx = self._fusion_inputs(input_features, is_longer)
        else:
            features, longer_idx = input_features.unsqueeze(1), None  # (B, 1, T_mel, F)
        # BatchNorm over mel bins: move them to the channel axis and back.
        features = self.batch_norm(features.transpose(1, 3)).transpose(1, 3)
        if self.training and self.spec_augment:
            features = spec_augment(features)
        image = self.reshape_mel2img(
            features
        )  # (B, C, spec_size, spec_size): bicubic stretch to 1024 frames, fold
        hidden_states = self.patch_embed(image, longer_idx)  # (B, H * W, C0)
        all_hidden_states = (
            (self._token_grid(hidden_states, self.input_resolutions[0]),) if output_hidden_states else None
        )
        all_attentions = () if output_attentions else None
        for index, stage in enumerate(self.layers):
            # Whole stages, as ClapAudioEncoder: a stage is the unit of gradient checkpointing.
            outputs = stage(hidden_states, self.input_resolutions[index], output_attentions)
            hidden_states, grid = outputs[0], outputs[2][-2:]
            if output_hidden_states:
                all_hidden_states += (self._token_grid(hidden_states, grid),)
            if output_attentions:
                all_attentions += outputs[3:]  # the stage's last block; a locality-aware block computes none
        frames = audio_tokens_to_frames(self.norm(hidden_states), self.freq_ratio)  # (B, T, C)
        return BaseModelOutput(
            last_hidden_state=frames, hidden_states=all_hidden_states, attentions=all_attentions
        )

    @staticmethod
    def _token_grid(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Row-major tokens `(B, H * W, C)` -> `(B, C, H, W)`, the layout of `ClapAudioModel`'s hidden states."""
        return tokens.unflatten(1, tuple(grid)).permute(0, 3, 1, 2)

    def _fusion_inputs(
        self, input_features: torch.Tensor, is_longer: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`(B, T, F)` or `(B, 1 | 4, T, F)` features and flags -> `(B, 1 | 4, T, F)` and the indices to fuse."""
        if input_features.dim() == 3:
            input_features = input_features.unsqueeze(1)
        batch_size = input_features.shape[0]
        if is_longer is None:
            is_longer = torch.zeros(batch_size, dtype=torch.bool, device=input_features.device)
        is_longer = is_longer.reshape(batch_size).to(input_features.device, torch.bool)
        if self.training and not bool(is_longer.any()):
            # LAION's htsat.py: in training, flag one random clip when none is longer, so that the fusion branch
            # is trained at every step (and DDP never meets unused parameters). Its local views repeat the global
            # one. Never done in eval mode, where it would make embeddings depend on the batch.
            is_longer = is_longer.clone()
            is_longer[torch.randint(batch_size, (1,), device=is_longer.device)] = True
            input_features = input_features.expand(-1, 4, -1, -1)
        if not bool(is_longer.any()):
            # Nothing to fuse: only the global channel is read, so skip normalising and folding the other three.
            return input_features[:, :1], is_longer.nonzero().flatten()
        if input_features.shape[1] != 4:
            raise ValueError(
                "`is_longer` flags clips for fusion but `input_features` has no local views: expected shape "
                f"(batch, 4, mel_frames, mel_bins), got {tuple(input_features.shape)}."
            )
        return input_features, is_longer.nonzero().flatten()


# ---------------------------------------------------------------------------------------------------------------
# Projection head and codebook
# ---------------------------------------------------------------------------------------------------------------


class MGAClapProjectionHead(nn.Sequential):
    """Two-layer MLP `LN -> Linear -> GELU -> LN -> Linear` (official `frame_proj` / `word_proj`, same indices)."""

    def __init__(self, input_dim: int, output_dim: int):
        super().__init__(
            nn.LayerNorm(input_dim),
            nn.Linear(input_dim, output_dim),
            nn.GELU(),
            nn.LayerNorm(output_dim),
            nn.Linear(output_dim, output_dim),
        )


def at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` in float32, or float64 if it is: the precision of the codebook, the pooling and the loss."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


class MGAClapCodebook(nn.Module):
    """The modality-shared codebook (paper §3.2.2): local embeddings -> a sparse mixture of shared codewords.

    For local embeddings `x_n` (frames or word pieces) and codewords `z_k`, as in the official code:

        a_nk = <x_n, z_k> * scale * mask_n        (raw dot products; masked positions score exactly 0)
        s_k = max_n a_nk                          (or the masked mean, `codebook_pooling="mean"`)
        w = Sparsemax(s)                          (or Softmax, `codebook_activation="softmax"`)
        e = sum_k w_k z_k

    The multiplicative mask is the official rule: text always has a masked [SEP], so a codeword that every real
    word piece scores negatively gets affinity 0, not its best negative score.
    """

    def __init__(self, config: MGAClapConfig):
        super().__init__()
        self.codewords = nn.Parameter(torch.empty(config.codebook_size, config.projection_dim))
        self.scale = config.codebook_affinity_scale
        self.pooling = config.codebook_pooling
        self.activation = config.codebook_activation

    def forward(self, local_embeds: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            local_embeds (`torch.FloatTensor` of shape `(batch, length, projection_dim)`).
            mask (`torch.Tensor` of shape `(batch, length)`): 1 on valid positions.

        Returns:
            `(aggregated, weights)`: `(batch, projection_dim)` (not normalised) and `(batch, codebook_size)`, in
            float32 (float64 for float64 inputs).
        """
        # Always float32, autocast off: the affinities are scaled by 1/32000 and codewords compete on differences in
        # their fourth digit, below bf16/fp16 resolution.
        with torch.autocast(local_embeds.device.type, enabled=False):
            local_embeds = at_least_float32(local_embeds)
            codewords = self.codewords.to(local_embeds.dtype)
            mask = mask.to(local_embeds.dtype).unsqueeze(-1)  # (B, N, 1)
            affinity = (local_embeds @ codewords.t()) * self.scale * mask  # (B, N, M)
            if self.pooling == "max":
                pooled = affinity.amax(dim=1)
            else:
                pooled = affinity.sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
            weights = sparsemax(pooled) if self.activation == "sparsemax" else torch.softmax(pooled, dim=-1)
            return weights @ codewords, weights


def masked_mean(local_embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `(batch, length, dim)` embeddings over the positions where `mask` is 1 -> `(batch, dim)`."""
    mask = mask.to(local_embeds.dtype).unsqueeze(-1)
    return (local_embeds * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------


class MGAClapPreTrainedModel(PreTrainedModel):
    config: MGAClapConfig
    config_class = MGAClapConfig
    base_model_prefix = "mgaclap"
    input_modalities = ("audio", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["ClapAudioLayer", "MGAClapLocalityAwareBlock", "BertLayer"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        super()._init_weights(module)
        if isinstance(module, MGAClapCodebook):
            init.normal_(module.codewords, mean=0.0, std=1.0)  # official: torch.randn
        elif isinstance(module, MGAClapModel):
            init.constant_(module.temperature, self.config.temperature_init)
        elif isinstance(module, ClapAudioSelfAttention):
            init.zeros_(module.relative_position_bias_table)
            init.copy_(module.relative_position_index, module.create_relative_position_index())
        elif isinstance(module, BertEmbeddings):
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1]).expand((1, -1)))
            init.zeros_(module.token_type_ids)


class MGAClapModel(MGAClapPreTrainedModel):
    """MGA-CLAP: HTS-AT + BERT towers, projection heads, modality-shared codebook and contrastive loss.

    Example:

    ```python
    >>> import numpy as np
    >>> from transformers import AutoModel, AutoProcessor

    >>> model = AutoModel.from_pretrained("path/to/mgaclap", trust_remote_code=True)
    >>> processor = AutoProcessor.from_pretrained("path/to/mgaclap", trust_remote_code=True)
    >>> audio = np.random.randn(32000 * 4).astype(np.float32)  # 4 s at 32 kHz
    >>> inputs = processor(text=["a dog barks", "rain falls"], audio=audio, sampling_rate=32000, return_tensors="pt")
    >>> outputs = model(**inputs)
    >>> outputs.logits_per_audio.softmax(dim=-1)  # (1, 2)
    ```
    """

    main_input_name = "input_ids"

    def __init__(self, config: MGAClapConfig):
        super().__init__(config)
        self.audio_encoder = MGAClapAudioEncoder(
            config.audio_config,
            num_locality_aware_blocks=config.num_locality_aware_blocks,
            spec_augment=config.spec_augment,
        )
        self.text_model = BertModel(config.text_config, add_pooling_layer=False)
        self.audio_projection = MGAClapProjectionHead(config.audio_config.hidden_size, config.projection_dim)
        self.text_projection = MGAClapProjectionHead(config.text_config.hidden_size, config.projection_dim)
        self.codebook = MGAClapCodebook(config) if config.aggregator == "codebook" else None
        # A raw temperature (logits = cosine / tau), as the official code; not log-parameterised.
        self.temperature = nn.Parameter(torch.tensor(config.temperature_init))
        self.post_init()

    # -- towers -------------------------------------------------------------------------------------------------

    def _audio_tower(
        self,
        input_features: torch.Tensor,
        is_longer: torch.Tensor | None,
        output_attentions: bool,
        output_hidden_states: bool,
    ) -> BaseModelOutput:
        """Log-mels `(B, T_mel, F)` (or fused `(B, 4, T_mel, F)`) -> HTS-AT frames `(B, T, C)` and, on request,
        hidden states and attentions."""
        if self.config.enable_fusion:
            input_features, is_longer = self._check_fused_inputs(input_features, is_longer)
        else:
            input_features = self._check_unfused_inputs(input_features)
            is_longer = None
        return self.audio_encoder(input_features, is_longer, output_attentions, output_hidden_states)

    def _check_unfused_inputs(self, input_features: torch.Tensor) -> torch.Tensor:
        """`(B, T_mel, F)` features (transformers' `(B, 1, T_mel, F)` layout accepted), or a clear error."""
        if input_features.dim() == 4 and input_features.shape[1] == 1:  # ClapFeatureExtractor layout
            input_features = input_features.squeeze(1)
        num_mel_bins = self.config.audio_config.num_mel_bins
        if input_features.dim() == 4 and input_features.shape[1] == 4:
            raise ValueError(
                "`input_features` holds fused views (batch, 4, mel_frames, mel_bins) but the model has "
                "enable_fusion=False: use a feature extractor with enable_fusion=False."
            )
        if input_features.dim() != 3 or input_features.shape[-1] != num_mel_bins:
            raise ValueError(
                f"`input_features` must have shape (batch, mel_frames, {num_mel_bins}), got "
                f"{tuple(input_features.shape)}."
            )
        return input_features

    def _check_fused_inputs(
        self, input_features: torch.Tensor, is_longer: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Validate fused inputs; recover `is_longer` from the views when a collator or caller dropped it."""
        num_mel_bins = self.config.audio_config.num_mel_bins
        if input_features.dim() == 3:
            input_features = input_features.unsqueeze(1)  # unfused features: nothing to fuse
        if (
            input_features.dim() != 4
            or input_features.shape[1] not in (1, 4)
            or input_features.shape[-1] != num_mel_bins
        ):
            raise ValueError(
                f"`input_features` must have shape (batch, 4, mel_frames, {num_mel_bins}) with enable_fusion=True, "
                f"got {tuple(input_features.shape)}."
            )
        if is_longer is None and input_features.shape[1] == 4:
            # The extractor stacks four identical copies for clips it does not fuse, so differing views mean a
            # fused clip: the flag is a function of the features and cannot be lost on the way.
            is_longer = (input_features[:, 1:] != input_features[:, :1]).flatten(1).any(dim=1)
        return input_features, is_longer

    @staticmethod
    def _frame_mask(input_features_mask: torch.Tensor | None, frames: torch.Tensor) -> torch.Tensor:
        """`(B, T)` mask of the frames that hold real audio (all ones without a mel mask)."""
        if input_features_mask is None:
            return frames.new_ones(frames.shape[:2], dtype=torch.long)
        # Frame k covers about mel frames [k T_mel / T, (k + 1) T_mel / T): it is real if any of them is.
        mel_mask = input_features_mask.to(frames.device, torch.float32).unsqueeze(1)
        return F.adaptive_max_pool1d(mel_mask, frames.shape[1]).squeeze(1).long()

    def _fit_text(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Validate the token ids and cut them to `config.max_text_length` tokens, whoever tokenised them.

        A longer row keeps its first `max_text_length - 1` tokens and ends with its own last token ([SEP]): exactly
        what tokenizer truncation gives, so every door (processor, pipeline, raw tokenizer) embeds the same text.
        """
        if input_ids.dim() != 2:
            raise ValueError(f"`input_ids` must have shape (batch, length), got {tuple(input_ids.shape)}.")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        lengths = attention_mask.sum(dim=1)
        if not torch.compiler.is_compiling():  # data-dependent checks, kept out of export and compile graphs
            if bool((lengths < 3).any()):
                empty = (lengths < 3).nonzero().flatten().tolist()
                raise ValueError(
                    f"Captions {empty} have no tokens between [CLS] and [SEP]: empty text cannot be embedded."
                )
            if bool((attention_mask[:, 1:] > attention_mask[:, :-1]).any()):
                raise ValueError(
                    "`attention_mask` must be right-padded ([CLS] ... [SEP] [PAD] ...), as BERT tokenizers do."
                )
        limit = self.config.max_text_length or self.config.text_config.max_position_embeddings
        if input_ids.shape[1] <= limit:
            return input_ids, attention_mask, token_type_ids
        last = (lengths - 1).clamp(min=0)[:, None]  # position of each row's [SEP]
        cut = (lengths > limit)[:, None] & (torch.arange(limit, device=input_ids.device) == limit - 1)
        input_ids = torch.where(cut, input_ids.gather(1, last), input_ids[:, :limit])
        if token_type_ids is not None:
            token_type_ids = torch.where(cut, token_type_ids.gather(1, last), token_type_ids[:, :limit])
        return input_ids, attention_mask[:, :limit], token_type_ids

    @staticmethod
    def _word_mask(attention_mask: torch.Tensor) -> torch.Tensor:
        """The official mask of the word pieces after [CLS]: 1 on word pieces, 0 on [SEP] and [PAD] `(B, L - 1)`."""
        lengths = attention_mask.sum(dim=1)
        last = F.one_hot(lengths - 1, attention_mask.shape[1]).to(
            attention_mask.dtype
        )  # [SEP], the last attended
        return (attention_mask - last)[:, 1:]

    def _aggregate(
        self, local_embeds: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Local embeddings -> normalised global embedding `(B, D)` (in their dtype) and codeword weights `(B, M)`
        (float32, or None). Pooled and normalised in float32 with autocast off (see [`MGAClapCodebook`])."""
        with torch.autocast(local_embeds.device.type, enabled=False):
            if self.codebook is None:
                aggregated, weights = masked_mean(at_least_float32(local_embeds), mask), None
            else:
                aggregated, weights = self.codebook(local_embeds, mask)
            return F.normalize(aggregated, dim=-1).to(local_embeds.dtype), weights

    @staticmethod
    def _project(head: MGAClapProjectionHead, hidden_states: torch.Tensor) -> torch.Tensor:
        """A projection head with autocast off, in the head's dtype (float32 unless the whole model was cast): under
        mixed precision the towers run in half precision, the MGA-CLAP head after them does not."""
        with torch.autocast(hidden_states.device.type, enabled=False):
            return head(hidden_states.to(head[-1].weight.dtype))

    # -- public API -------------------------------------------------------------------------------------------

    @can_return_tuple
    def get_audio_features(
        self,
        input_features: torch.Tensor,
        input_features_mask: torch.Tensor | None = None,
        is_longer: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> MGAClapModalityOutput:
        """Embed audio.

        Args:
            input_features (`torch.FloatTensor` of shape `(batch, mel_frames, num_mel_bins)`):
                Log-mels from [`MGAClapFeatureExtractor`] (1001 x 64 for 10 s). With `config.enable_fusion`, shape
                `(batch, 4, mel_frames, num_mel_bins)` from an extractor with `enable_fusion=True`.
            input_features_mask (`torch.LongTensor` of shape `(batch, mel_frames)`, *optional*):
                1 on mel frames of real audio, 0 on padding. Padded frames are excluded from the codebook pooling.
            is_longer (`torch.BoolTensor` of shape `(batch,)` or `(batch, 1)`, *optional*):
                Fusion only: which clips are longer than 10 s and get their local views fused. When omitted it is
                recovered from the features (a clip is fused iff its four views are not identical).
            output_attentions, output_hidden_states (`bool`, *optional*): also return the audio tower's attentions /
                hidden states (default: the configuration's).
            return_dict (`bool`, *optional*): a tuple instead of the output object when `False` (default: the
                configuration's).

        Returns:
            [`MGAClapModalityOutput`]: `pooler_output` (batch, D) normalised clip embeddings, `local_embeds`
            (batch, T, D) projected frames, `local_mask` (batch, T), `codeword_weights` (batch, M), `last_hidden_state`
            (batch, T, C) the tower's frames. For a fused (longer) clip the frames follow the global view, which
            squeezes the whole clip into T frames, with un-aligned local evidence added: they are not a time axis
            (see [`get_frame_text_similarity`]).
        """
        tower = self._audio_tower(
            input_features,
            is_longer,
            self._flag(output_attentions, "output_attentions"),
            self._flag(output_hidden_states, "output_hidden_states"),
        )
        frame_embeds = self._project(self.audio_projection, tower.last_hidden_state)  # (B, T, D)
        frame_mask = self._frame_mask(input_features_mask, frame_embeds)
        audio_embeds, weights = self._aggregate(frame_embeds, frame_mask)
        return MGAClapModalityOutput(
            last_hidden_state=tower.last_hidden_state,
            pooler_output=audio_embeds,
            hidden_states=tower.hidden_states,
            attentions=tower.attentions,
            local_embeds=frame_embeds,
            local_mask=frame_mask,
            codeword_weights=weights,
        )

    @can_return_tuple
    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> MGAClapModalityOutput:
        """Embed captions or class names.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch, length)`): BERT token ids, `[CLS] ... [SEP] [PAD]...`;
                rows longer than `config.max_text_length` (30, the official limit) are cut as tokenizer truncation
                does, whoever tokenised them.
            attention_mask (`torch.LongTensor` of shape `(batch, length)`, *optional*).
            token_type_ids (`torch.LongTensor` of shape `(batch, length)`, *optional*).
            output_attentions, output_hidden_states (`bool`, *optional*): also return the text tower's attentions /
                hidden states (default: the configuration's).
            return_dict (`bool`, *optional*): a tuple instead of the output object when `False` (default: the
                configuration's).

        Returns:
            [`MGAClapModalityOutput`]: `pooler_output` (batch, D) normalised text embeddings, `local_embeds`
            (batch, length - 1, D) projected word pieces, `local_mask`, `codeword_weights` (batch, M),
            `last_hidden_state` (batch, length, H) BERT's.
        """
        input_ids, attention_mask, token_type_ids = self._fit_text(input_ids, attention_mask, token_type_ids)
        tower = self.text_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            output_attentions=self._flag(output_attentions, "output_attentions"),
            output_hidden_states=self._flag(output_hidden_states, "output_hidden_states"),
            return_dict=True,
        )
        word_embeds = self._project(
            self.text_projection, tower.last_hidden_state[:, 1:]
        )  # (B, L - 1, D): no [CLS]
        word_mask = self._word_mask(attention_mask)
        text_embeds, weights = self._aggregate(word_embeds, word_mask)
        return MGAClapModalityOutput(
            last_hidden_state=tower.last_hidden_state,
            pooler_output=text_embeds,
            hidden_states=tower.hidden_states,
            attentions=tower.attentions,
            local_embeds=word_embeds,
            local_mask=word_mask,
            codeword_weights=weights,
        )

    def _flag(self, value: bool | None, name: str) -> bool:
        return bool(getattr(self.config, name)) if value is None else bool(value)

    def contrastive_loss(self, audio_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """The configured loss of normalised, paired global embeddings `(B, D)` (row i of each is a pair).

        Training scripts call this on embeddings gathered from all processes to get the global-batch loss. Computed
        in float32 with autocast off, whatever the embeddings' dtype.
        """
        with torch.autocast(audio_embeds.device.type, enabled=False):
            audio_embeds, text_embeds = at_least_float32(audio_embeds), at_least_float32(text_embeds)
            logits_per_audio = (
                audio_embeds @ text_embeds.t() / self.clamped_temperature().to(audio_embeds.dtype)
            )
            if self.config.loss == "clap":
                loss = clap_loss(logits_per_audio)
            else:
                loss = hard_negative_loss(
                    logits_per_audio, self.config.hard_negative_gamma, self.config.hard_negative_variant
                )
            if self.config.embedding_regularization:
                loss = loss + embedding_regularization(audio_embeds, text_embeds)
            return loss

    def clamped_temperature(self) -> torch.Tensor:
        """The learned temperature tau floored at 0.01: logits are cosines / tau.

        The official code never clamps; the floor only guards against a diverged run (CLIP caps 1/tau at 100).
        """
        return self.temperature.clamp(min=0.01)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor,
        input_features: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        input_features_mask: torch.Tensor | None = None,
        return_loss: bool | None = None,
        is_longer: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> MGAClapOutput:
        """Embed both modalities and score every audio against every text.

        Args:
            input_ids, attention_mask, token_type_ids: as [`get_text_features`] (the tokenizer's output).
            input_features, input_features_mask, is_longer: as [`get_audio_features`] (the feature extractor's
                output).
            return_loss (`bool`, *optional*): compute the contrastive loss; audio i and text i must be a pair.
            output_attentions, output_hidden_states (`bool`, *optional*): also return both towers' attentions /
                hidden states, in `text_model_output` and `audio_model_output`.
            return_dict (`bool`, *optional*): a tuple instead of the output object when `False`.

        Returns:
            [`MGAClapOutput`].
        """
        flags = {"output_attentions": output_attentions, "output_hidden_states": output_hidden_states}
        audio = self.get_audio_features(
            input_features, input_features_mask, is_longer, **flags, return_dict=True
        )
        text = self.get_text_features(input_ids, attention_mask, token_type_ids, **flags, return_dict=True)
        with torch.autocast(audio.pooler_output.device.type, enabled=False):  # cosines near 1 need the bits
            temperature = self.clamped_temperature().to(audio.pooler_output.dtype)
            logits_per_audio = audio.pooler_output @ text.pooler_output.t() / temperature
        loss = None
        if return_loss:
            if audio.pooler_output.shape[0] != text.pooler_output.shape[0]:
                raise ValueError(
                    "`return_loss=True` needs as many captions as clips (pair i = clip i, caption i)."
                )
            loss = self.contrastive_loss(audio.pooler_output, text.pooler_output)
        return MGAClapOutput(
            loss=loss,
            logits_per_audio=logits_per_audio,
            logits_per_text=logits_per_audio.t(),
            text_embeds=text.pooler_output,
            audio_embeds=audio.pooler_output,
            text_model_output=text,
            audio_model_output=audio,
        )

    @torch.no_grad()
    def get_frame_text_similarity(
        self,
        input_features: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        input_features_mask: torch.Tensor | None = None,
        is_longer: torch.Tensor | None = None,
    ) -> MGAClapFrameSimilarityOutput:
        """Cosine between every audio frame and every text query, with frame times in seconds.

        As the official zero-shot SED and grounding scripts: normalised frame embeddings (no codebook) against
        normalised global text embeddings (codebook), raw cosines.

        With fusion, clips up to 10 s are handled exactly as without it. Fused clips (longer than 10 s) are
        refused: their frames are not a time axis. For sound event detection on long audio use the windowed path,
        [`~sound_event_detection.compute_long_audio_frame_similarity`] or the `zero-shot-audio-event-detection`
        pipeline, which give frames of 10/32 s on the recording's own clock.

        Returns:
            [`MGAClapFrameSimilarityOutput`]: `frame_similarity` (audio_batch, T, text_batch), `clip_similarity`
            (audio_batch, text_batch), `frame_boundaries` (T + 1,) seconds, `frame_mask` (audio_batch, T).
        """
        if self.config.enable_fusion:
            input_features, is_longer = self._check_fused_inputs(input_features, is_longer)
            if is_longer is not None and bool(is_longer.any()):
                raise ValueError(
                    "Frame-level similarities of fused clips (longer than 10 s) have no valid timestamps: the fused "
                    "frames mix a compressed global view with local crops. Use the windowed path for long audio, "
                    "`compute_long_audio_frame_similarity` or the 'zero-shot-audio-event-detection' pipeline."
                )
        audio = self.get_audio_features(input_features, input_features_mask, is_longer, return_dict=True)
        text = self.get_text_features(
            input_ids, attention_mask, token_type_ids, return_dict=True
        ).pooler_output
        frames = F.normalize(audio.local_embeds, dim=-1)  # (B, T, D)
        # The fed input lasts (T_mel - 1) hops: 1001 frames at 100 frames/s are 10 s.
        duration = (input_features.shape[-2] - 1) / self.config.mel_frames_per_second
        num_frames = frames.shape[1]
        return MGAClapFrameSimilarityOutput(
            frame_similarity=frames @ text.t(),
            clip_similarity=audio.pooler_output @ text.t(),
            frame_boundaries=torch.linspace(0.0, duration, num_frames + 1, device=frames.device),
            frame_mask=audio.local_mask,
        )


__all__ = ["MGAClapModel", "MGAClapPreTrainedModel", "sparsemax"]
