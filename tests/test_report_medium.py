"""compare_medium's report (melodi_jax/experiments/report_medium.py) on fake rows: a run folder
saved to its small outputs, then the table, the sanity note and the per-position table."""
import json
import os

import pytest

from melodi_jax.experiments import report, report_medium

from test_experiments import _write_events

EDGES = [(0, 256, '[0, 256)'), (256, 1024, '[256, 1k)'), (1024, 4096, '[1k, 4k)'),
         (4096, None, '>= 4k')]   # the last one empty: no document reaches it


def _fake_run(root, name, bpb, by_position, floats=65536):
  """A run folder as the trainer, evaluate_run and memory_usage leave it."""
  workdir = os.path.join(root, name)
  os.makedirs(os.path.join(workdir, 'eval'))
  with open(os.path.join(workdir, 'config.gin'), 'w') as f:
    f.write('ModelConfig.num_layers = 4\nTrainConfig.num_steps = 10\n')
  with open(os.path.join(workdir, 'model_stats.json'), 'w') as f:
    json.dump({'parameters': 812345, 'memory_floats_per_lane': {'floats': floats,
                                                                'parts': {'xl_cache': floats}}}, f)
  with open(os.path.join(workdir, 'train_wall.jsonl'), 'w') as f:
    f.write('{"from_step": 0, "to_step": 10, "seconds": 3725.0}\n')
  with open(os.path.join(workdir, 'train_metrics.jsonl'), 'w') as f:
    for step, rate in ((5, 100.0), (10, 3000.0)):
      f.write(json.dumps({'step': step, 'loss': 1.0, 'bits_per_byte': bpb + 1,
                          'tokens_per_second': rate}) + '\n')
  with open(os.path.join(workdir, 'memory_usage.json'), 'w') as f:
    json.dump({'step': 10, 'gates': {}, 'attention_mass_on_memory': {'stack/layer_0/attn': 0.25}},
              f)
  for (task, split), value in zip(report.COMPARE_SPLITS, (bpb, bpb + 0.1, bpb + 0.2, bpb + 0.3)):
    buckets = [{'start': s, 'end': e, 'label': label, 'tokens': 100.0 * (v is not None),
                'bytes': 100.0 * (v is not None), 'nats': 0.0, 'bits_per_byte': v}
               for (s, e, label), v in zip(EDGES, by_position + [None])]
    for step in (5, 10):   # an earlier eval is not saved
      with open(os.path.join(workdir, 'eval', f'{task}_{split}_{step}.json'), 'w') as f:
        json.dump({'step': step, 'bits_per_byte': value, 'complete': True, 'batches': 2,
                   'tokens': 300.0, 'by_position': buckets}, f)
  _write_events(workdir, report.CURVE_TAG, [(5, bpb + 0.5), (10, bpb + 0.25)])
  return workdir


def test_saved_rows_rebuild_the_report(tmp_path):
  runs, saved, out = tmp_path / 'runs', tmp_path / 'saved', str(tmp_path / 'out')
  rows = {'vanilla': (2.0, [2.5, 2.0, 1.9]), 'transformer_xl': (1.9, [2.3, 1.9, 1.85]),
          'melodi': (1.8, [2.2, 1.8, 1.7])}
  for name, (bpb, by_position) in rows.items():
    written = report_medium.save_row(_fake_run(str(runs), name, bpb, by_position),
                                     str(saved / name))
    assert 'eval/books_bytes_test_10.json' in written and 'memory_usage.json' in written
  # The saved folder alone is enough: no TensorBoard events, no checkpoints, no earlier evals.
  assert sorted(os.listdir(saved / 'melodi' / 'eval')) == sorted(
      f'{t}_{s}_10.json' for t, s in report.COMPARE_SPLITS)
  assert not [p for p in os.listdir(saved / 'melodi') if p.startswith('events')]
  melodi = report_medium.load('melodi', str(saved / 'melodi'))
  assert [step for step, _ in melodi.curve] == [5, 10] and melodi.train_seconds == 3725.0
  assert [value for _, value in melodi.curve] == pytest.approx([2.3, 2.05])  # float32 events

  path = report_medium.write_report(str(saved), out, ['vanilla', 'transformer_xl', 'melodi',
                                                      'block_recurrent'], 'bash x.sh')
  text = open(path).read()
  assert '| Transformer-XL | 0.81M | 65,536 | 10 | 1:02:05 | 3,000 | 1.900 | 2.000 | 2.100 | 2.200 |' \
      in text
  assert 'Not run yet: block_recurrent' in text
  assert 'Transformer-XL < no memory): **holds**' in text
  # books test buckets, with the difference to the windowed model.
  assert '| predicted bytes | 100 | 100 | 100 | 0 | 300 |' in text
  assert '| MELODI S+L | 2.200 (-0.300) | 1.800 (-0.200) | 1.700 (-0.200) | — | 1.900 |' in text
  assert '| vanilla (no memory) | 2.500 | 2.000 | 1.900 | — | 2.100 |' in text
  assert '| Transformer-XL | — | layer_0 0.250 |' in text
  for png in ('compare_medium_positions.png', 'compare_medium_learning.png',
              'compare_medium_tradeoff.png'):
    assert os.path.getsize(os.path.join(out, png)) > 1000


def test_sanity_note_flags_a_windowed_model_ahead_of_transformer_xl():
  def row(name, value):
    return report.RunSummary(name, '', evals={('books_bytes', 'test'): {'bits_per_byte': value}})
  note = report_medium.sanity_note([row('vanilla', 1.9), row('transformer_xl', 2.0)])
  assert '**does not hold**' in note and 'Transformer-XL 2.000, no memory 1.900' in note
  assert 'not evaluated yet' in report_medium.sanity_note([row('vanilla', 1.9)])
