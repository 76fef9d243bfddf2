"""Keyword-to-caption (K2C) augmentation of LAION-CLAP (Wu et al., ICASSP 2023, arXiv 2211.06687 §3.2).

Tag or label lists (AudioSet label names, freesound tags, ...) are turned into sentence captions by a sequence-to-
sequence model: the paper used the T5 "keytotext" model `gagan3012/k2t`, any `AutoModelForSeq2SeqLM` works here. As in
the paper, gendered words in generated captions are replaced by neutral ones ("man"/"woman" -> "person"; this module
also neutralises other nouns and the pronouns), and clips shorter than 2 s are not augmented (their generated
captions match single short events poorly). When no model is available, a template caption
("The sound of a, b and c.") is written instead, so the step also runs offline.

The output of [`augment_dataset`] adds two columns to a `datasets.Dataset`: `caption_aug` (a caption for every row:
generated, templated, or the row's original caption when it was not augmented) and `is_augmented`. Training then
selects captions with `--text_augment_selection none|all|augment_only`, as LAION-CLAP's `select_text`
(see `transformers_mgaclap.data.load_audio_caption_dataset`).
"""

import re
from collections.abc import Callable, Sequence

DEFAULT_TEMPLATE = "The sound of {}."
MIN_DURATION_S = 2.0
# The keytotext pipeline's input format: `str(keywords)` with "," -> "|" and quotes / brackets removed.
KEYWORD_SEPARATOR = "| "
# The keytotext pipeline's generation defaults (minus its max_length of 1024, which is not needed for captions).
GENERATION_DEFAULTS = {"num_beams": 4, "length_penalty": 1.5, "no_repeat_ngram_size": 3, "max_new_tokens": 48}

# Gendered word -> neutral replacement. "her" is handled apart: possessive ("her voice") vs object ("to her").
_NEUTRAL_WORDS = {
    "man": "person",
    "woman": "person",
    "men": "people",
    "women": "people",
    "boy": "child",
    "girl": "child",
    "boys": "children",
    "girls": "children",
    "guy": "person",
    "guys": "people",
    "lady": "person",
    "ladies": "people",
    "gentleman": "person",
    "gentlemen": "people",
    "male": "person",
    "female": "person",
    "males": "people",
    "females": "people",
    "he": "the person",
    "she": "the person",
    "him": "the person",
    "his": "their",
    "hers": "theirs",
    "himself": "themself",
    "herself": "themself",
}
# After these (or at the end of a clause) "her" is an object pronoun; before anything else, a possessive.
_HER_OBJECT_BEFORE = {
    "and", "or", "but", "to", "with", "as", "in", "on", "at", "for", "from", "by", "while", "then", "again",
    "loudly", "softly", "quietly", "back", "up", "down", "out", "off", "away", "the", "a", "an", "is", "was",
}  # fmt: skip
_WORD = re.compile(r"[A-Za-z]+")


def _match_case(replacement: str, original: str) -> str:
    return replacement[0].upper() + replacement[1:] if original[:1].isupper() else replacement


def neutralize_gender(text: str) -> str:
    """Replace gendered words by neutral ones, keeping an initial capital.

    `"A man talks to her while she laughs"` -> `"A person talks to the person while the person laughs"`.
    """
    tokens = list(_WORD.finditer(text))
    pieces, last = [], 0
    for index, match in enumerate(tokens):
        word = match.group(0)
        lower = word.lower()
        if lower == "her":
            following = text[match.end() :].lstrip()
            next_word = tokens[index + 1].group(0).lower() if index + 1 < len(tokens) else ""
            clause_ends = not following or not following[0].isalpha()
            replacement = "the person" if clause_ends or next_word in _HER_OBJECT_BEFORE else "their"
        elif lower in _NEUTRAL_WORDS:
            replacement = _NEUTRAL_WORDS[lower]
        else:
            continue
        pieces += [text[last : match.start()], _match_case(replacement, word)]
        last = match.end()
    return "".join(pieces + [text[last:]])


def _clean_keywords(keywords: Sequence[str] | str) -> list[str]:
    """A keyword cell -> its non-empty keywords; AudioSet display names' underscores become spaces."""
    if isinstance(keywords, str):
        keywords = [keywords]
    return [k.replace("_", " ").strip() for k in keywords or [] if isinstance(k, str) and k.strip()]


def template_caption(keywords: Sequence[str] | str, template: str = DEFAULT_TEMPLATE) -> str:
    """The template baseline of LAION-CLAP: `"The sound of a, b and c."` (`template` holds one `{}`)."""
    words = _clean_keywords(keywords)
    if not words:
        raise ValueError("Cannot build a caption from an empty keyword list.")
    joined = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
    return template.format(joined)


def generate_captions(
    keyword_lists: Sequence[Sequence[str]],
    model=None,
    tokenizer=None,
    batch_size: int = 32,
    template: str = DEFAULT_TEMPLATE,
    generation_kwargs: dict | None = None,
    progress: bool = True,
) -> list[str]:
    """Captions for lists of keywords, one per list, gender-neutralised.

    Args:
        keyword_lists (`Sequence[Sequence[str]]`): one keyword list per clip.
        model (`AutoModelForSeq2SeqLM`, *optional*): the keyword-to-text model; `None` uses `template_caption`.
        tokenizer (*optional*): the model's tokenizer (required with `model`).
        batch_size (`int`, *optional*, defaults to 32): keyword lists per `generate` call.
        template (`str`, *optional*): the fallback template, also used for a generated caption that comes out empty.
        generation_kwargs (`dict`, *optional*): overrides of `GENERATION_DEFAULTS` (keytotext's settings).
        progress (`bool`, *optional*, defaults to `True`): a progress bar over the batches.

    Returns:
        `list[str]` of `len(keyword_lists)` captions.
    """
    if model is None:
        return [neutralize_gender(template_caption(keywords, template)) for keywords in keyword_lists]
    if tokenizer is None:
        raise ValueError("Pass the model's `tokenizer` together with `model`.")
    import torch
    from transformers.utils.logging import tqdm

    settings = {**GENERATION_DEFAULTS, **(generation_kwargs or {})}
    device = next(model.parameters()).device
    captions = []
    starts = range(0, len(keyword_lists), batch_size)
    for start in tqdm(starts, desc="keyword-to-caption", unit="batch", disable=not progress):
        batch = [_clean_keywords(keywords) for keywords in keyword_lists[start : start + batch_size]]
        prompts = [KEYWORD_SEPARATOR.join(words) for words in batch]
        inputs = tokenizer(prompts, return_tensors="pt", padding=True, truncation=True).to(device)
        inputs.pop("token_type_ids", None)  # BERT-style tokenizers emit it, seq2seq models do not take it
        with torch.no_grad():
            outputs = model.generate(**inputs, **settings)
        for words, text in zip(batch, tokenizer.batch_decode(outputs, skip_special_tokens=True), strict=True):
            text = " ".join(text.split())
            # An empty generation would lose the row's caption: fall back to the template.
            captions.append(neutralize_gender(text if text else template_caption(words, template)))
    return captions


def augment_dataset(
    dataset,
    keyword_column: str,
    caption_column: str | None = None,
    duration_column: str | None = None,
    model=None,
    tokenizer=None,
    min_duration_s: float = MIN_DURATION_S,
    output_column: str = "caption_aug",
    flag_column: str = "is_augmented",
    batch_size: int = 32,
    template: str = DEFAULT_TEMPLATE,
    generation_kwargs: dict | None = None,
    duration_fn: Callable[[dict], float] | None = None,
):
    """Add keyword-to-caption captions to a `datasets.Dataset` (a batched `map`, with its progress bar).

    Args:
        dataset (`datasets.Dataset`): rows with a keyword list (or a single keyword string) per clip.
        keyword_column (`str`): the tag / label list column.
        caption_column (`str`, *optional*): the original caption; copied to `output_column` for rows that are not
            augmented. Without it, such rows get the template caption.
        duration_column (`str`, *optional*): clip duration in seconds; rows shorter than `min_duration_s` are not
            augmented. `duration_fn(row)` is an alternative (e.g. reading a file header).
        model, tokenizer: the seq2seq model and its tokenizer; `None` writes template captions.
        min_duration_s (`float`, *optional*, defaults to 2.0): the paper's threshold.
        output_column, flag_column (`str`): names of the new columns (`str` and `bool`).
        batch_size (`int`, *optional*, defaults to 32): rows per generation batch.
        template, generation_kwargs: see [`generate_captions`].

    Returns:
        `datasets.Dataset` with every original row and column, plus `output_column` and `flag_column`.
    """
    for column in [keyword_column, caption_column, duration_column]:
        if column is not None and column not in dataset.column_names:
            raise ValueError(f"The dataset has no column {column!r}; its columns are {dataset.column_names}.")
    if min_duration_s > 0 and duration_column is None and duration_fn is None:
        raise ValueError(
            "Pass `duration_column` or `duration_fn` so that clips shorter than `min_duration_s` can be skipped, "
            "or set `min_duration_s=0`."
        )

    def augment(rows: dict) -> dict:
        count = len(rows[keyword_column])
        row_dicts = [{key: values[index] for key, values in rows.items()} for index in range(count)]
        if duration_column is not None:
            durations = rows[duration_column]
        elif duration_fn is not None:
            durations = [duration_fn(row) for row in row_dicts]
        else:
            durations = [float("inf")] * count
        eligible = [
            index
            for index in range(count)
            if durations[index] >= min_duration_s and _clean_keywords(rows[keyword_column][index])
        ]
        generated = generate_captions(
            [rows[keyword_column][index] for index in eligible],
            model=model,
            tokenizer=tokenizer,
            batch_size=batch_size,
            template=template,
            generation_kwargs=generation_kwargs,
            progress=False,  # the map's own progress bar counts the rows
        )
        captions = [
            _original_caption(rows, caption_column, index, template, keyword_column) for index in range(count)
        ]
        flags = [False] * count
        for index, caption in zip(eligible, generated, strict=True):
            captions[index], flags[index] = caption, True
        return {output_column: captions, flag_column: flags}

    return dataset.map(augment, batched=True, batch_size=batch_size, desc="keyword-to-caption")


def _original_caption(
    rows: dict, caption_column: str | None, index: int, template: str, keyword_column: str
) -> str:
    if caption_column is not None:
        value = rows[caption_column][index]
        captions = [value] if isinstance(value, str) else list(value or [])
        captions = [c for c in captions if isinstance(c, str) and c.strip()]
        if captions:
            return captions[0]
    keywords = _clean_keywords(rows[keyword_column][index])
    return template_caption(keywords, template) if keywords else ""


__all__ = [
    "augment_dataset",
    "generate_captions",
    "neutralize_gender",
    "template_caption",
]
