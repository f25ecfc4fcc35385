"""The experiment reports on fake run folders, and the memory-usage diagnostic's pieces."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from melodi_jax.experiments import evaluate_run, memory_usage, report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_events(workdir, tag, points):
  """TensorBoard events the way the trainer's clu writer stores scalars (tensor summaries)."""
  from tensorboard.compat.proto import event_pb2, summary_pb2
  from tensorboard.summary.writer.event_file_writer import EventFileWriter
  from tensorboard.util import tensor_util
  writer = EventFileWriter(workdir)
  for step, value in points:
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(
        tag=tag, tensor=tensor_util.make_tensor_proto(np.float32(value)))])
    writer.add_event(event_pb2.Event(step=step, wall_time=0.0, summary=summary))
  writer.close()


def _fake_run(root, name, bpb, floats, capped=False, curve=True):
  workdir = os.path.join(root, name)
  os.makedirs(os.path.join(workdir, 'eval'))
  with open(os.path.join(workdir, 'config.gin'), 'w') as f:
    f.write('ModelConfig.num_layers = 4\nTrainConfig.num_steps = 10\n')
  with open(os.path.join(workdir, 'model_stats.json'), 'w') as f:
    json.dump({'parameters': 812345, 'memory_floats_per_lane': {'floats': floats,
                                                                'parts': {'xl_cache': floats}}}, f)
  with open(os.path.join(workdir, 'train_wall.jsonl'), 'w') as f:
    f.write('{"from_step": 0, "to_step": 6, "seconds": 60.0}\n'
            '{"from_step": 6, "to_step": 10, "seconds": 30.5}\n')
  with open(os.path.join(workdir, 'train_metrics.jsonl'), 'w') as f:
    for step, rate in ((5, 100.0), (10, 2000.0), (10, 4000.0)):
      f.write(json.dumps({'step': step, 'loss': 1.0, 'bits_per_byte': 2.0,
                          'tokens_per_second': rate}) + '\n')
  for (task, split), value in zip(report.COMPARE_SPLITS, (bpb, bpb + 0.1, bpb + 0.2, bpb + 0.3)):
    for step, shift in ((5, 1.0), (10, 0.0)):     # only the latest step counts
      result = {'step': step, 'bits_per_byte': value + shift, 'complete': not capped,
                'batches': 2, 'tokens': 4096.0}
      with open(os.path.join(workdir, 'eval', f'{task}_{split}_{step}.json'), 'w') as f:
        json.dump(result, f)
  if curve:
    _write_events(workdir, report.CURVE_TAG, [(5, bpb + 1.0), (10, bpb + 0.5)])
  return workdir


def test_compare_small_report_from_fake_runs(tmp_path):
  runs, out = str(tmp_path / 'runs'), str(tmp_path / 'out')
  _fake_run(runs, 'transformer_xl', 1.5, 65536)
  _fake_run(runs, 'memorizing_dense', 1.4, 589824, capped=True)
  _fake_run(runs, 'melodi', 1.3, 73728, curve=False)
  with open(os.path.join(runs, 'melodi', 'memory_usage.json'), 'w') as f:
    json.dump({'gates': {'stack/layer_2': {'memory_weight': 0.25}},
               'attention_mass_on_memory': {'stack/layer_0/attention': 0.125}}, f)
  summary = report.summarize('transformer_xl', os.path.join(runs, 'transformer_xl'))
  assert summary.curve == [(5, 2.5), (10, 2.0)]
  assert summary.train_seconds == 90.5 and summary.tokens_per_second == 3000.0
  assert summary.evals[('books_bytes', 'test')]['bits_per_byte'] == 1.6

  path = report.compare_small(runs, out, ['transformer_xl', 'memorizing_dense', 'melodi',
                                          'block_recurrent'], 'bash launch/x.sh')
  text = open(path).read()
  assert '| Transformer-XL | 812.3k | 65,536 | 10 | 1:30 | 3,000 | 1.500 | 1.600 | 1.700 | 1.800 |' \
      in text
  assert '1.400*' in text and 'capped evaluation' in text
  assert 'Not run yet: block_recurrent' in text
  assert '**holds**' in text and '8.0x' in text
  assert 'Command: `bash launch/x.sh`' in text
  assert '| MELODI S+L | layer_2 0.250 | layer_0 0.125 |' in text
  for png in ('compare_small_validation.png', 'compare_small_tradeoff.png'):
    assert os.path.getsize(os.path.join(out, png)) > 1000


def test_ordering_note_says_when_the_paper_order_breaks():
  rows = [report.RunSummary('melodi', '', evals={('books_bytes', 'test'): {'bits_per_byte': 1.5}}),
          report.RunSummary('transformer_xl', '',
                            evals={('books_bytes', 'test'): {'bits_per_byte': 1.2}})]
  note = report.ordering_note(rows)
  assert 'does not hold' in note and 'MELODI S+L > Transformer-XL' in note


def test_recall_falls_to_chance_where_it_stays_at_chance():
  def scores(*accuracies):
    return {str(k): {'digit_accuracy': a, 'examples': 64}
            for k, a in zip((1, 2, 4, 8), accuracies)}
  assert 0.14 < report.chance_band(64) < 0.16
  assert report.chance_from(scores(0.9, 0.8, 0.1, 0.12)) == 4
  assert report.chance_from(scores(0.9, 0.1, 0.5, 0.1)) == 8      # a dip does not count
  assert report.chance_from(scores(0.9, 0.8, 0.7, 0.6)) is None
  assert report.chance_from(scores(0.1, 0.1, 0.1, 0.1)) == 1


def test_recall_report_from_fake_runs(tmp_path):
  runs, out = str(tmp_path / 'runs'), str(tmp_path / 'out')
  for name, accuracy in (('transformer_xl', 0.1), ('melodi', 0.9)):
    workdir = _fake_run(runs, name, 1.0, 1000, curve=False)
    result = {'step': 10, 'examples_per_distance': 4, 'reach_note': f'{name} reach',
              'by_distance': {str(k): {'digit_accuracy': accuracy, 'key_accuracy': 0.0,
                                       'examples': 4} for k in (1, 32)}}
    with open(os.path.join(workdir, 'eval', 'recall_test_10.json'), 'w') as f:
      json.dump(result, f)
  path = report.recall(runs, out, ['transformer_xl', 'melodi'], 'cmd')
  text = open(path).read()
  assert '| MELODI S+L | 1,000 | 10 | 0.90 (0.00) | 0.90 (0.00) | never (up to the largest k) |' \
      in text
  assert '| Transformer-XL | 1,000 | 10 | 0.10 (0.00) | 0.10 (0.00) | k = 1 |' in text
  assert '- Transformer-XL: transformer_xl reach' in text
  assert os.path.getsize(os.path.join(out, 'recall.png')) > 1000


def test_gate_values_and_done_check(tmp_path):
  params = {'stack': {'layer_2': {'attention': {'gate_logit': np.zeros((2, 4))}},
                      'layer_0': {'attention': {'query': {'kernel': np.ones(3)}}}}}
  gates = memory_usage.gate_values(params)
  assert gates == {'stack/layer_2': {'memory_weight': 0.5, 'min': 0.5, 'max': 0.5}}
  path = str(tmp_path / 'r.json')
  assert not evaluate_run._done(path, None)
  with open(path, 'w') as f:
    json.dump({'complete': False, 'batches': 2}, f)
  assert not evaluate_run._done(path, None) and evaluate_run._done(path, 2)


def test_memory_mass_on_a_tiny_transformer_xl():
  import jax
  import zoo
  from melodi_jax.layers.attention import INTERMEDIATES
  model = zoo.build('transformer_xl')
  params = zoo.params('transformer_xl')['params']
  tokens = zoo.random_tokens(2, 2 * model.window_length)
  doc_start = np.array([[True, False], [True, False]])
  _, state = jax.jit(lambda *a: model.apply({'params': params}, *a, mutable=[INTERMEDIATES]))(
      tokens, model.init_memory(2), doc_start)
  sums = memory_usage.memory_mass(state[INTERMEDIATES])
  assert len(sums) == model.config.num_layers
  window = model.window_length
  # Window 0 has an empty cache (mass 0); window 1 puts some of its mass on the cache.
  # Uniform reference: in window 1 the query at slot i may see W - i cache keys of W + 1 keys
  # (itself and the W tokens before it); window 0 has none.
  expected_uniform = np.mean([(window - i) / (window + 1) for i in range(window)]) / 2
  for mass, uniform, rows in sums.values():
    assert rows == 2 * 2 * model.config.num_heads * window   # windows x lanes x heads x queries
    assert 0.0 < mass / rows < 0.5
    assert uniform / rows == pytest.approx(expected_uniform, rel=1e-5)


def test_eval_items_take_an_optional_per_split_cap():
  from melodi_jax.train import cli
  assert evaluate_run._parse_eval('books_bytes:test', None) == ('books_bytes', 'test', None)
  assert evaluate_run._parse_eval('math_bytes:test:96', None) == ('math_bytes', 'test', 96)
  assert evaluate_run._parse_eval('math_bytes:test:96', 2) == ('math_bytes', 'test', 2)
  assert evaluate_run._parse_eval('books_bytes:test', 5) == ('books_bytes', 'test', 5)
  for bad in ('books_bytes', 'books_bytes:', ':test', 'math_bytes:test:0', 'a:b:c', 'a:b:3:4'):
    with pytest.raises(cli.UserError, match='not task:split'):
      evaluate_run._parse_eval(bad, None)


def test_copy_probe_batches_are_periodic_and_a_tiny_run_reports_its_curve(tmp_path):
  from melodi_jax.experiments import copy_probe
  inputs, targets, copyable = copy_probe.copy_batch(np.random.default_rng(0), 3, 200)
  assert inputs.shape == targets.shape == copyable.shape == (3, 200)
  np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])
  for row, target_row, copy_row in zip(inputs, targets, copyable):
    period = next(p for p in range(8, 65) if np.array_equal(row[p:], row[:-p]))
    assert 8 <= period <= 64 and row.min() >= ord('a') and row.max() <= ord('z')
    # copyable: exactly the targets that are the input one period back (t + 1 - period >= 0)
    expected = np.arange(200) + 1 >= period
    np.testing.assert_array_equal(copy_row, expected)
    at = np.nonzero(expected)[0]
    np.testing.assert_array_equal(target_row[at], row[at + 1 - period])
  weights = {loss_on: copy_probe.loss_weights(copyable, 64, loss_on)
             for loss_on in copy_probe.LOSS_ON}
  assert weights['all'].min() == 1 and np.array_equal(weights['copyable'], copyable)
  assert weights['after_window'][:, :64].max() == 0 and weights['after_window'][:, 64:].min() == 1
  with pytest.raises(ValueError, match='loss_on'):
    copy_probe.loss_weights(copyable, 64, 'everything')
  out = tmp_path / 'probe.json'
  command = [sys.executable, '-m', 'melodi_jax.experiments.copy_probe',
             '--gin_file=models/transformer_xl.gin', '--gin_file=sizes/tiny.gin',
             '--gin_bindings=ModelConfig.num_layers = 1',  # (the run compiles a train step)
             '--gin_bindings=TrainConfig.batch_size = 2',
             '--gin_bindings=TrainConfig.segment_length = 32', '--log_every=1']
  for wrong in ('--steps=0', '--log_every=0'):
    result = subprocess.run(command + [wrong], cwd=REPO, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        'error: --steps and --log_every must be >= 1'], result.stderr
  subprocess.run(command + ['--steps=2', f'--json={out}'], cwd=REPO, check=True)
  result = json.load(open(out))
  assert [row['step'] for row in result['curve']] == [1, 2]
  assert result['segment_length'] == 32 and result['formed_at_step'] is None
