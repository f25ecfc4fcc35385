"""Checkpoints: a latest checkpoint that cannot be read is reported and the one before is used."""
import glob
import json
import logging
import os

import pytest

from melodi_jax.train import trainer
import test_train_support as support


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # orbax read errors
def test_corrupted_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
  first = support.run_training(tmp_path, num_steps=4, checkpoint_every=2)
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['2', '4']
  data_files = glob.glob(str(tmp_path / 'checkpoints' / '4' / 'params' / 'd' / '*'))
  assert data_files
  for path in data_files:
    os.truncate(path, os.path.getsize(path) // 2)

  with caplog.at_level(logging.WARNING):
    support.run_training(tmp_path, num_steps=5, checkpoint_every=2)
  assert any('checkpoint at step 4' in r.getMessage() and 'falling back' in r.getMessage()
             for r in caplog.records), [r.getMessage() for r in caplog.records]
  assert os.path.isdir(tmp_path / 'checkpoints' / '4.corrupt')
  with open(tmp_path / 'train_metrics.jsonl') as f:
    rerun = [json.loads(line) for line in f][4:]
  # The second run restarted after step 2 and replays steps 3 and 4 exactly.
  assert [row['step'] for row in rerun] == [3, 4, 5]
  assert [row['loss'] for row in rerun[:2]] == [first[3], first[4]]
  assert sorted(os.listdir(tmp_path / 'checkpoints'))[:3] == ['2', '4', '4.corrupt']


class _NanAtThirdBatch(support.SyntheticLanes):
  batches = 0

  def __next__(self):
    batch = super().__next__()
    self.batches += 1
    if self.batches == 3:
      batch['loss_weights'][0, 0] = float('nan')
    return batch


def test_nan_loss_stops_with_the_step_after_saving_the_last_good_state(tmp_path):
  with pytest.raises(trainer.TrainingDiverged, match='at step 3; the last good state is saved'):
    support.run_training(tmp_path, num_steps=5,
                         stream_factory=lambda task, split, **kw: _NanAtThirdBatch(**kw))
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['2']
  assert sorted(support.read_losses(tmp_path)) == [1, 2]


def test_a_checkpoint_of_another_model_is_a_user_error_not_a_corruption(tmp_path):
  from melodi_jax import models
  support.run_training(tmp_path, num_steps=1)
  wider = models.build(support.MODEL_GIN, support.MODEL_BINDINGS + ['ModelConfig.mlp_dim = 48'])
  with pytest.raises(support.UserError, match='does not fit this run'):
    support.run_training(tmp_path, wider, num_steps=2)
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['1']  # left as it was
