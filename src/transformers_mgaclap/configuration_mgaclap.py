"""MGA-CLAP model configuration."""

import math

from huggingface_hub.dataclasses import strict
from transformers import BertConfig, ClapAudioConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

# HTS-AT as in the paper and the official release: transformers' ClapAudioConfig already has this geometry
# (spec 256, patch 4, window 8, depths [2, 2, 6, 2], heads [4, 8, 16, 32], 96 -> 768, no fusion); only the
# regularisation differs: official stochastic depth 0.1 (transformers 0.0) and no dropout after the Swin MLP
# (transformers 0.1).
HTSAT_DEFAULTS = {"drop_path_rate": 0.1, "hidden_dropout_prob": 0.0, "enable_fusion": False}

AGGREGATORS = ("codebook", "mean")
CODEBOOK_POOLINGS = ("max", "mean")
CODEBOOK_ACTIVATIONS = ("sparsemax", "softmax")
LOSSES = ("hard_negative", "clap")
HARD_NEGATIVE_VARIANTS = ("paper", "official")


@strict(accept_kwargs=True)
class MGAClapConfig(PreTrainedConfig):
    r"""
    Configuration of an [`MGAClapModel`]: an HTS-AT audio tower, a BERT text tower, two projection heads, the
    modality-shared codebook, the locality-aware block and the contrastive loss of MGA-CLAP ("Advancing
    Multi-grained Alignment for Contrastive Language-Audio Pre-training", arXiv 2408.07919). Vanilla CLAP and
    the paper's ablations are switches of this one class.

    Args:
        text_config (`dict` or `BertConfig`, *optional*):
            The text tower. Defaults to the `bert-base-uncased` geometry.
        audio_config (`dict` or `ClapAudioConfig`, *optional*):
            The HTS-AT audio tower. Defaults to the paper's HTS-AT (spec 256, patch 4, window 8, depths
            [2, 2, 6, 2], heads [4, 8, 16, 32], width 96 -> 768, no fusion) with drop-path rate 0.1 and no
            dropout, as the official HTS-AT.
        projection_dim (`int`, *optional*, defaults to 1024):
            Size D of the joint embedding space (frame, word, codeword and global embeddings).
        codebook_size (`int`, *optional*, defaults to 4096):
            Number M of codewords in the modality-shared codebook.
        codebook_affinity_scale (`float`, *optional*):
            Factor 1/eta applied to frame/word-codeword dot products (paper Eq. 2). Defaults to the official
            1 / (sqrt(projection_dim) * 1000), i.e. 1/32000 for D = 1024.
        aggregator (`str`, *optional*, defaults to `"codebook"`):
            How local features become global ones: `"codebook"` (MGA-CLAP) or `"mean"` (masked mean pooling of
            frames and words: vanilla CLAP).
        codebook_pooling (`str`, *optional*, defaults to `"max"`):
            Pooling of affinities over frames/words: `"max"` (paper) or `"mean"` (Table 6 ablation (1)).
        codebook_activation (`str`, *optional*, defaults to `"sparsemax"`):
            Normalisation of pooled affinities over codewords: `"sparsemax"` (paper) or `"softmax"` (Table 6
            ablation (2)).
        num_locality_aware_blocks (`int`, *optional*, defaults to 1):
            How many of the last audio blocks are replaced by locality-aware blocks (value path only). 0 gives the
            vanilla HTS-AT.
        loss (`str`, *optional*, defaults to `"hard_negative"`):
            `"hard_negative"` (paper Eq. 7-8) or `"clap"` (symmetric InfoNCE, Eq. 1).
        hard_negative_gamma (`float`, *optional*, defaults to 0.15):
            Sharpness gamma of the hard-negative weights (Eq. 8). With 0 the loss equals the CLAP loss.
        hard_negative_variant (`str`, *optional*, defaults to `"paper"`):
            `"paper"` computes Eq. 8 as published; `"official"` reproduces the official code, whose weight
            normaliser takes row j's sum for entry (i, j) (a broadcasting quirk) on row-max-shifted logits.
        temperature_init (`float`, *optional*, defaults to 0.07):
            Initial value of the learnable temperature tau (logits are cosine / tau).
        embedding_regularization (`bool`, *optional*, defaults to `False`):
            Add the official code's embedding regulariser mean(|A|)/||A|| + mean(|T|)/||T|| to the loss (not in
            the paper; the official training enables it).
        spec_augment (`bool`, *optional*, defaults to `True`):
            In training mode, mask 2 time stripes (<= 64 frames) and 2 frequency stripes (<= 8 bins) of the
            normalised log-mel, as the official HTS-AT does.
        mel_frames_per_second (`float`, *optional*, defaults to 100.0):
            Rate of the input log-mel frames (sampling rate / hop length of the feature extractor), used to
            give frame timestamps in seconds.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialisation of the projection heads.
        enable_fusion (`bool`, *optional*, defaults to `False`):
            LAION-CLAP feature fusion for audio longer than 10 s (Wu et al., ICASSP 2023, arXiv 2211.06687): the
            audio tower takes `(batch, 4, mel_frames, num_mel_bins)` inputs (a global view of the whole clip and
            three local 10 s crops, from [`MGAClapFeatureExtractor`] with `enable_fusion=True`) and fuses the local
            crops into the patch embedding with attentional feature fusion (`aff_2d`). Not part of MGA-CLAP; the
            paper's model has it off. This switch also sets `audio_config.enable_fusion`.
        max_text_length (`int`, *optional*, defaults to 30):
            Most tokens, [CLS] and [SEP] included, that the text tower reads: the official tokenizer limit. The
            model cuts longer inputs itself (keeping their [SEP]), whichever component tokenised them. `None`
            reads up to BERT's position limit.

    Example:

    ```python
    >>> from transformers_mgaclap import MGAClapConfig, MGAClapModel

    >>> config = MGAClapConfig()  # the paper's MGA-CLAP
    >>> clap_config = MGAClapConfig(aggregator="mean", num_locality_aware_blocks=0, loss="clap")  # vanilla CLAP
    ```"""

    model_type = "mgaclap"
    sub_configs_defaults = {
        "text_config": BertConfig,
        "audio_config": SubConfigSpec(ClapAudioConfig, init_kwargs=HTSAT_DEFAULTS),
    }

    text_config: dict | PreTrainedConfig | None = None
    audio_config: dict | PreTrainedConfig | None = None
    projection_dim: int = 1024
    codebook_size: int = 4096
    codebook_affinity_scale: float | None = None
    aggregator: str = "codebook"
    codebook_pooling: str = "max"
    codebook_activation: str = "sparsemax"
    num_locality_aware_blocks: int = 1
    loss: str = "hard_negative"
    hard_negative_gamma: float = 0.15
    hard_negative_variant: str = "paper"
    temperature_init: float = 0.07
    embedding_regularization: bool = False
    spec_augment: bool = True
    mel_frames_per_second: float = 100.0
    initializer_range: float = 0.02
    enable_fusion: bool = False
    max_text_length: int | None = 30

    def __post_init__(self, **kwargs):
        if isinstance(
            self.audio_config, dict
        ):  # a partial dict keeps the paper's HTS-AT settings it does not name
            self.audio_config = {**HTSAT_DEFAULTS, **self.audio_config}
        super().__post_init__(**kwargs)
        if self.enable_fusion:
            self.audio_config.enable_fusion = True
            if self.audio_config.fusion_type is None:
                self.audio_config.fusion_type = "aff_2d"
        if self.codebook_affinity_scale is None:
            self.codebook_affinity_scale = 1.0 / (math.sqrt(self.projection_dim) * 1000.0)
        self._check_choices()
        self._check_geometry()

    def _check_choices(self) -> None:
        for name, allowed in (
            ("aggregator", AGGREGATORS),
            ("codebook_pooling", CODEBOOK_POOLINGS),
            ("codebook_activation", CODEBOOK_ACTIVATIONS),
            ("loss", LOSSES),
            ("hard_negative_variant", HARD_NEGATIVE_VARIANTS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"`{name}` must be one of {allowed}, got {getattr(self, name)!r}.")
        if self.temperature_init <= 0:
            raise ValueError(f"`temperature_init` must be positive, got {self.temperature_init}.")
        if self.hard_negative_gamma < 0:
            raise ValueError(f"`hard_negative_gamma` must be >= 0, got {self.hard_negative_gamma}.")
        positions = self.text_config.max_position_embeddings
        if self.max_text_length is not None and not 3 <= self.max_text_length <= positions:
            # [CLS], one word piece and [SEP] at least; at most what BERT's position table holds.
            raise ValueError(
                f"`max_text_length` must be between 3 and text_config.max_position_embeddings ({positions}), "
                f"got {self.max_text_length}."
            )

    def _check_geometry(self) -> None:
        audio = self.audio_config
        if audio.enable_fusion and not self.enable_fusion:
            # One switch decides, so that a fused audio_config copied from a CLAP checkpoint cannot turn fusion on
            # without the model-level flag the feature extractor and the docs refer to.
            raise ValueError(
                "MGA-CLAP's audio tower does not use LAION feature fusion by default: set enable_fusion=False in "
                "audio_config, or enable_fusion=True on MGAClapConfig to opt in."
            )
        if self.enable_fusion and audio.fusion_type != "aff_2d":
            # transformers' patch embedding only implements the 2-D attentional fusion (LAION's default).
            raise ValueError(f"Only fusion_type='aff_2d' is supported, got {audio.fusion_type!r}.")
        num_blocks = sum(audio.depths)
        if not 0 <= self.num_locality_aware_blocks <= num_blocks:
            raise ValueError(
                f"`num_locality_aware_blocks` must be between 0 and the {num_blocks} audio blocks, "
                f"got {self.num_locality_aware_blocks}."
            )
        width = audio.patch_embeds_hidden_size * 2 ** (len(audio.depths) - 1)
        if audio.hidden_size != width:
            # ClapAudioModel reads hidden_size for its heads while the encoder's real width is derived.
            raise ValueError(
                f"audio_config.hidden_size ({audio.hidden_size}) must equal patch_embeds_hidden_size * "
                f"2**(len(depths) - 1) = {width}."
            )
        if audio.spec_size % audio.num_mel_bins:
            raise ValueError(
                f"audio_config.spec_size ({audio.spec_size}) must be a multiple of num_mel_bins ({audio.num_mel_bins})."
            )

    @property
    def num_audio_frames(self) -> int:
        """Number T of time-ordered frames the audio tower outputs (32 for the paper's HTS-AT)."""
        audio = self.audio_config
        freq_ratio = audio.spec_size // audio.num_mel_bins
        grid = audio.spec_size // audio.patch_stride[0] // 2 ** (len(audio.depths) - 1)
        return freq_ratio * grid


__all__ = ["MGAClapConfig"]
