"""One training step of a tiny MGA-CLAP on a fixed global batch of 8, in 1 process or under torchrun.

Usage: `python distributed_step.py OUT VARIANT` or `torchrun --nproc_per_node N distributed_step.py OUT VARIANT`.
Each process takes its contiguous slice of the global batch; the script runs the training code's loss
(`global_contrastive_loss`, gathered embeddings) through an Accelerate-prepared (DDP) model and saves the loss and
the averaged gradients from process 0 to OUT, with what process 0 learns from `any_process` (the agreement on
stopping or skipping a step) when only the last process raises a flag.
"""

import sys

import torch
from accelerate import Accelerator

from transformers_mgaclap.training.checkpointing import any_process
from transformers_mgaclap.training.contrastive import global_contrastive_loss

from conftest import audio_inputs, text_inputs, tiny_model


def main(out: str, variant: str) -> None:
    accelerator = Accelerator(cpu=True)
    model = tiny_model(seed=0, hard_negative_variant=variant).train()
    # Per-process BatchNorm statistics would differ from the global batch's (use --sync_batch_norm on GPUs):
    # keep the mel BatchNorm on its running statistics so one step is comparable across process counts.
    model.audio_encoder.batch_norm.eval()
    model = accelerator.prepare(model)
    batch = {**text_inputs(8, seed=1), **audio_inputs(8, seed=1)}
    per_process = 8 // accelerator.num_processes
    rows = slice(accelerator.process_index * per_process, (accelerator.process_index + 1) * per_process)
    local = {key: value[rows] for key, value in batch.items()}
    loss, _ = global_contrastive_loss(model, local)
    accelerator.backward(loss)
    flag_seen = any_process(accelerator, accelerator.process_index == accelerator.num_processes - 1)
    if accelerator.is_main_process:
        grads = {
            name: p.grad.detach().clone() for name, p in accelerator.unwrap_model(model).named_parameters()
        }
        torch.save({"loss": loss.detach(), "grads": grads, "flag_seen": flag_seen}, out)
    # No process-group teardown: exiting after the barrier avoids a shutdown race seen with gloo under torchrun.
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
