"""Training curves as TensorBoard event files, under each stage's folder.

A train stage's rank 0 writes `<stage>/tensorboard/`: train/loss (the step's
mean over its micro batches), train/lr, train/samples_per_s (since the last
point) and train/images_seen, every `[train] log_every` steps, as the
manifest's loss curve. A requeued training opens the folder again with
`purge_step` just past the step it resumed from, so the points a killed
attempt wrote past its checkpoint are hidden and the curve continues. An evaluate
stage writes its scores (eval/<set>/loss, top1, top5) in its own folder at
the training's last step. The run directory's `tensorboard/` links them
under each training's axes (plan/tensorboard.py):
`tensorboard --logdir runs/<study>/tensorboard`.

Sizes: a point is 4 scalars of about 50 bytes; a ViT-L training of 500k
steps logging every 50 writes 10k points, 2 MB.
"""
from __future__ import annotations

import time
from pathlib import Path

FOLDER = "tensorboard"


class TrainingCurves:
    """Rank 0's writer; every other rank's calls do nothing."""

    def __init__(self, stage_dir: Path, rank: int, start_step: int, batch_size: int):
        self.writer = None
        self.batch_size = batch_size
        self.last = (time.time(), start_step)
        if rank == 0:
            from torch.utils.tensorboard import SummaryWriter
            # purge_step: events at or past it, from an attempt killed after its
            # last checkpoint (at start_step, whose point is kept), are hidden;
            # None on a first start (nothing to purge)
            self.writer = SummaryWriter(str(Path(stage_dir) / FOLDER),
                                        purge_step=start_step + 1 if start_step else None)

    def point(self, step: int, loss: float, lr: float) -> None:
        if self.writer is None:
            return
        now = time.time()
        began, first = self.last
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/lr", lr, step)
        self.writer.add_scalar("train/images_seen", step * self.batch_size, step)
        if now > began and step > first:
            self.writer.add_scalar("train/samples_per_s",
                                   (step - first) * self.batch_size / (now - began), step)
        self.last = (now, step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def evaluation(stage_dir: Path, eval_set: str, metrics: dict, step: int) -> None:
    """An evaluate stage's scores, at the step of the training it scored."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(Path(stage_dir) / FOLDER)) as writer:
        for key in ("loss", "top1", "top5"):
            if metrics.get(key) is not None:
                writer.add_scalar(f"eval/{eval_set}/{key}", float(metrics[key]), step)
