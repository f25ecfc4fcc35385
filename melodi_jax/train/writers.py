"""clu metric writers of a run: TensorBoard event files and `train_metrics.jsonl` (one JSON
object per logged step, for scripts). Imported lazily: clu pulls in TensorFlow."""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from clu import metric_writers


def tensorboard_writer(logdir: str) -> metric_writers.MetricWriter:
  return metric_writers.SummaryWriter(logdir)


class JsonlMetricWriter(metric_writers.MetricWriter):
  """One JSON object per written step: {"step": N, "loss": ..., ...}; appends across restarts."""

  def __init__(self, path: str):
    self._file = open(path, 'a', encoding='utf-8')  # pylint: disable=consider-using-with

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    row = {'step': int(step)}
    row.update({k: float(v) for k, v in scalars.items()})
    self._file.write(json.dumps(row) + '\n')
    self._file.flush()

  def write_summaries(self, step, values, metadata=None):
    del step, values, metadata

  def write_images(self, step, images):
    del step, images

  def write_videos(self, step, videos):
    del step, videos

  def write_audios(self, step, audios, *, sample_rate):
    del step, audios, sample_rate

  def write_texts(self, step, texts):
    del step, texts

  def write_histograms(self, step, arrays, num_buckets=None):
    del step, arrays, num_buckets

  def write_hparams(self, hparams):
    del hparams

  def flush(self):
    self._file.flush()

  def close(self):
    self._file.close()
