"""Data: the one dataset loader (`sources`), audio-caption sets and the training collator (`captions`), labelled-clip
helpers (`labels`), the synthetic soundscapes (`soundscapes`) and keyword-to-caption augmentation
(`keyword_to_caption`)."""
