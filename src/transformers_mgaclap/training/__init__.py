"""Training: building a model from pre-trained towers (`model`), the global-batch contrastive loss (`contrastive`),
checkpoints and SIGTERM (`checkpointing`), and the two training loops, pre-training (`pretraining`) and TeminAL-style
temporal post-training (`teminal`)."""
