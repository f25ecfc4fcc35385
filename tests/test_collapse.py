"""Collapse to uniform output (loss ln V, gradient norm 0): one warning naming the step and the
last checkpoint before it, an optional stop, and checkpoints saved after it warn on resume."""
import json
import logging
import math
import os

import pytest

from melodi_jax.train import collapse, optim, trainer
import test_train_support as support

LN_256 = math.log(256)


class _Checkpointer:
  directory = '/run/checkpoints'

  def __init__(self, steps):
    self.steps, self.kept = steps, []

  def keep(self, step):
    self.kept.append(step)


def test_watch_needs_both_ln_v_and_zero_gradient_for_k_consecutive_steps(caplog):
  # At ln V with a live gradient (a fresh model), or a zero gradient off ln V: not a collapse.
  for loss, grad_norm in ((LN_256, 1.07), (3.2, 0.0), (LN_256 + 0.01, 0.0), (LN_256, 1e-4)):
    live = collapse.CollapseWatch(vocab_size=256, patience=3)
    assert not any(live.observe(s, loss, grad_norm, _Checkpointer([])) for s in range(1, 9))
  watch = collapse.CollapseWatch(vocab_size=256, patience=3)
  checkpointer = _Checkpointer([2, 4, 5, 6])
  assert not watch.observe(1, LN_256, 1.07, checkpointer)
  assert not watch.observe(2, 3.2, 0.0, checkpointer)
  assert not watch.observe(3, LN_256, 0.0, checkpointer)
  assert not watch.observe(4, LN_256, 0.0, checkpointer)
  assert not watch.observe(5, 4.0, 0.5, checkpointer)  # the streak breaks: count again
  with caplog.at_level(logging.WARNING):
    assert not watch.observe(6, LN_256 + 1e-6, 0.0, checkpointer)
    assert not watch.observe(7, LN_256, 0.0, checkpointer)
    assert watch.observe(8, LN_256, 0.0, checkpointer)
    assert not watch.observe(9, LN_256, 0.0, checkpointer)  # warned once
  # Step 6's loss used the parameters after 5 updates (checkpoint 5): 4 is the last one before.
  assert watch.record == {'step': 6, 'last_checkpoint_before': 4}
  assert checkpointer.kept == [4]
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert len(warnings) == 1, warnings
  assert 'collapsed to uniform output at step 6' in warnings[0]
  assert 'last checkpoint before it is step 4 in /run/checkpoints' in warnings[0]


def test_watch_off_and_without_an_earlier_checkpoint():
  assert not any(collapse.CollapseWatch(256, patience=0).observe(s, LN_256, 0.0,
                                                                 _Checkpointer([]))
                 for s in range(1, 20))
  watch = collapse.CollapseWatch(256, patience=1)
  assert watch.observe(3, LN_256, 0.0, _Checkpointer([2]))  # checkpoint 2 is already collapsed
  assert watch.record == {'step': 3, 'last_checkpoint_before': None}
  assert 'no checkpoint was saved before it' in str(watch.stopped(3, '/run/checkpoints'))


def test_huge_learning_rate_collapse_stops_marks_and_warns_on_resume(tmp_path, caplog):
  """Adafactor at learning rate 1e4 drives the tiny model to uniform output within a few steps.

  Whether a rate this large collapses or diverges (TrainingDiverged) depends on float rounding
  from step 2 on: at 1e3 and 3e3 it flips with the attention's summation order (checked with the
  autodiff and the hand-written attention backward); at 1e4 both collapse at step 4."""
  huge = optim.OptimizerConfig(warmup_steps=1, decay_steps=100, peak_learning_rate=1e4,
                               final_learning_rate=1e4)
  run = dict(checkpoint_every=2, keep_checkpoints=2, collapse_steps=2, stop_on_collapse=True)
  with caplog.at_level(logging.WARNING), pytest.raises(collapse.TrainingCollapsed) as stopped:
    trainer.train(support.train_config(num_steps=20, **run), str(tmp_path),
                  model=support.tiny_model(), stream_factory=support.synthetic_factory,
                  optimizer_config=huge)
  with open(tmp_path / 'train_metrics.jsonl') as f:
    rows = [json.loads(line) for line in f]
  flat = [r['step'] for r in rows if abs(r['loss'] - LN_256) < 1e-3 and r['grad_norm'] == 0.0]
  first, last = flat[0], rows[-1]['step']
  assert flat == list(range(first, first + 2)) and last == first + 1, rows
  good = (first - 2) // 2 * 2  # the last even step (a checkpoint) below first - 1
  assert good > 0, 'the collapse should come after the first checkpoints'
  warnings = [r.getMessage() for r in caplog.records if 'collapsed' in r.getMessage()]
  assert len(warnings) == 1, warnings
  assert f'at step {first}:' in warnings[0] and f'before it is step {good} in' in warnings[0]
  assert f'stopped after step {last}' in str(stopped.value)
  # keep_checkpoints=2 keeps the two newest, and the last checkpoint before the collapse stays.
  saved = sorted(set(range(2, last + 1, 2)) | {last})
  assert sorted(os.listdir(tmp_path / 'checkpoints'), key=int) == [
      str(s) for s in sorted({good} | set(saved[-2:]))]

  caplog.clear()
  with caplog.at_level(logging.WARNING):  # resuming at the end: restores, trains no step
    trainer.train(support.train_config(num_steps=last, **run), str(tmp_path),
                  model=support.tiny_model(), stream_factory=support.synthetic_factory,
                  optimizer_config=huge)
  resumed = [r.getMessage() for r in caplog.records if 'collapsed' in r.getMessage()]
  assert len(resumed) == 1 and f'resuming from step {last}, saved after' in resumed[0], resumed
  assert f'at step {first};' in resumed[0] and f'step {good} in' in resumed[0]
