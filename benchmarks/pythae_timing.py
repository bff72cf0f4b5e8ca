"""pythae 0.1.2's TrainingPipeline with a per-epoch clock: the peer side of the training benchmarks."""
from __future__ import annotations

import tempfile
import time

import torch


def train_pythae(model, epochs: int, lr: float, batch: int, x_train: torch.Tensor, x_test: torch.Tensor) -> dict:
    """Train ``model`` (a pythae model) with Adam; {"epoch_seconds": [...], "eval_loss": [...]} per epoch."""
    from pythae.pipelines import TrainingPipeline
    from pythae.trainers import BaseTrainerConfig
    from pythae.trainers.training_callbacks import TrainingCallback

    class Clock(TrainingCallback):
        def __init__(self):
            self.begin, self.seconds, self.eval_loss = 0.0, [], []

        def on_epoch_begin(self, training_config, **kwargs):
            self.begin = time.perf_counter()

        def on_epoch_end(self, training_config, **kwargs):
            self.seconds.append(time.perf_counter() - self.begin)

        def on_log(self, training_config, logs, **kwargs):
            self.eval_loss.append(float(logs["eval_epoch_loss"]))

    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        config = BaseTrainerConfig(output_dir=tmp, num_epochs=epochs, learning_rate=lr, per_device_train_batch_size=batch,
                                   per_device_eval_batch_size=batch, optimizer_cls="Adam", no_cuda=True)
        TrainingPipeline(training_config=config, model=model)(train_data=x_train, eval_data=x_test, callbacks=[clock])
    return {"epoch_seconds": clock.seconds, "eval_loss": clock.eval_loss}
