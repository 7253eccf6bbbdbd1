"""Training: spec + data -> a trained model, its history, metrics, checkpoints and plots."""

from zoo.stages.train.trainer import train_run

__all__ = ["train_run"]
