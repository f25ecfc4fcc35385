"""The memory_recall report rebuilds from saved row outputs alone (no training folders)."""

import json
import os

from melodi_jax.experiments.memory_recall import report

CONFIG = {'window_length': 64, 'key_vocab': 64, 'value_vocab': 64, 'filler_vocab': 64,
          'eval_documents': 4, 'distances': [0, 1], 'num_pairs': [1, 4]}
GIN = {
    'vanilla': 'ModelConfig.stack = @VanillaStack()\n',
    'transformer_xl': 'ModelConfig.stack = @TransformerXLStack()\n',
    'memorizing_dense': ('ModelConfig.stack = @MemorizingStack()\nMemorizingStack.memory_slots = '
                         '2048\nMemorizingStack.top_k = 0\nMemorizingStack.memory_layer = 2\n'),
    'melodi_long_only': ('ModelConfig.stack = @MelodiStack()\nMelodiStack.short_term_slots = 0\n'
                         'MelodiStack.long_term_layers = (2,)\nMelodiStack.long_term_slots = 256\n'
                         'MelodiStack.long_term_increment = 8\n'),
    'melodi_short_only': ('ModelConfig.stack = @MelodiStack()\nMelodiStack.short_term_slots = 16\n'
                          'MelodiStack.long_term_layers = ()\nMelodiStack.long_term_slots = 256\n'
                          'MelodiStack.long_term_increment = 8\n'),
    'melodi': ('ModelConfig.stack = @MelodiStack()\nMelodiStack.short_term_slots = 16\n'
               'MelodiStack.long_term_layers = (2,)\nMelodiStack.long_term_slots = 256\n'
               'MelodiStack.long_term_increment = 8\n'),
}


def _write(path, text):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w', encoding='utf-8') as f:
    f.write(text if isinstance(text, str) else json.dumps(text))


def _saved_row(saved, row, accuracy):
  gin = GIN[row] + 'ModelConfig.window_length = 64\nModelConfig.num_layers = 4\n'
  for stage, steps in ((f'{row}_k0', 20), (row, 40)):
    _write(os.path.join(saved, row, stage, 'config.gin'), gin)
    _write(os.path.join(saved, row, stage, 'train_metrics.jsonl'),
           ''.join(json.dumps({'step': s, 'loss': 4.0 - s / 20}) + '\n' for s in (steps // 2, steps)))
    _write(os.path.join(saved, row, stage, 'train_wall.jsonl'), json.dumps({'seconds': 60.0}) + '\n')
  cells = [{'pairs': n, 'distance': k, 'documents': 4, 'accuracy': accuracy(k),
            'standard_error': 0.01, 'source_windows': {str(k): [1, 1]}}
           for n in (1, 4) for k in (0, 1, 8)]
  _write(os.path.join(saved, row, 'mqar_test_40.json'),
         {'step': 40, 'chance': 1 / 64, 'segment_length': 512, 'config': CONFIG, 'cells': cells})
  _write(os.path.join(saved, row, 'model_stats.json'),
         {'memory_floats_per_lane': {'floats': 1234}})
  _write(os.path.join(saved, row, 'memory_usage.json'),
         {'gates': {'decoder/layer_2/attention': {'memory_weight': 0.7, 'min': 0.6, 'max': 0.8}},
          'attention_mass_on_memory': {}, 'uniform_mass_on_memory': {}})


def test_report_from_saved_rows(tmp_path):
  saved, out = str(tmp_path / 'saved'), str(tmp_path / 'out')
  _saved_row(saved, 'vanilla', lambda k: 1.0 if k == 0 else 0.02)
  _saved_row(saved, 'memorizing_dense', lambda k: 0.97)
  _saved_row(saved, 'transformer_xl', lambda k: 0.5 if k == 8 else 0.97)
  reach = [{'pairs': 1, 'distance': k, 'documents': 4, 'accuracy': 0.5 if k < 64 else 0.0,
            'standard_error': 0.02, 'source_windows': {}} for k in (2, 64)]
  _write(os.path.join(saved, 'memorizing_dense', 'reach', 'mqar_test_30_n1.json'),
         {'step': 30, 'chance': 1 / 64, 'cells': reach})
  _write(os.path.join(saved, 'memorizing_dense', 'reach', 'memory_usage.json'),
         {'gates': {'stack/layer_01': {'memory_weight': 0.61, 'min': 0.5, 'max': 0.7}}})
  _write(os.path.join(saved, 'memorizing_dense', 'reach', 'config.gin'),
         "OptimizerConfig.name = 'adamw'\nOptimizerConfig.peak_learning_rate = 0.001\n")
  # Another row's reach run from a protocol with another learning rate: the report says which.
  _write(os.path.join(saved, 'transformer_xl', 'reach', 'mqar_test_30_n1.json'),
         {'step': 30, 'chance': 1 / 64, 'cells': reach})
  _write(os.path.join(saved, 'transformer_xl', 'reach', 'config.gin'),
         'OptimizerConfig.peak_learning_rate = 0.003\n')
  # Stage 3 (formation) from stage 1: its own N = 1 table; its seconds count in the train time.
  formation = [{'pairs': 1, 'distance': k, 'documents': 4, 'accuracy': 0.9 if k == 1 else 0.03,
                'standard_error': 0.02, 'source_windows': {}} for k in (1, 8)]
  _write(os.path.join(saved, 'memorizing_dense', 'formation', 'mqar_test_20_n1.json'),
         {'step': 20, 'chance': 1 / 64, 'cells': formation})
  _write(os.path.join(saved, 'memorizing_dense', 'formation', 'train_wall.jsonl'),
         json.dumps({'seconds': 60.0}) + '\n')
  capacity = [{'pairs': n, 'distance': k, 'documents': 4, 'accuracy': 0.9 / n,
               'standard_error': 0.03, 'source_windows': {}} for n in (1, 2, 16) for k in (2, 8)]
  _write(os.path.join(saved, 'memorizing_dense', 'capacity', 'mqar_test_35_n1-2-16.json'),
         {'step': 35, 'chance': 1 / 64, 'cells': capacity})
  _write(os.path.join(saved, 'memorizing_dense', 'capacity', 'train_wall.jsonl'),
         json.dumps({'seconds': 120.0}) + '\n')
  # Stage 5a (the two-pair formation, pairs/) is printed above the capacity table.
  pairs = [{'pairs': n, 'distance': k, 'documents': 4, 'accuracy': 0.8 if k == 1 else 0.02,
            'standard_error': 0.02, 'source_windows': {}} for n in (1, 4) for k in (1, 8)]
  _write(os.path.join(saved, 'memorizing_dense', 'pairs', 'mqar_test_20_n1-4.json'),
         {'step': 20, 'chance': 1 / 64, 'cells': pairs})
  _write(os.path.join(saved, 'memorizing_dense', 'pairs', 'train_wall.jsonl'),
         json.dumps({'seconds': 60.0}) + '\n')
  _write(os.path.join(saved, 'memorizing_dense', 'pairs', 'config.gin'),
         'OptimizerConfig.peak_learning_rate = 0.003\n')
  # A retrieval row's diagnostic (retrieval_hits.json) is printed under the row, per stage.
  _write(os.path.join(saved, 'memorizing_dense', 'reach', 'retrieval_hits.json'),
         {'pairs': 1, 'top_k': 4, 'chunks': 32, 'rows': [
             {'distance': 8, 'documents': 16, 'candidates': 7, 'indexed_rate': 1.0,
              'hit_rate': 0.25,
              'random_hit_rate': 4 / 7, 'recall': 0.3, 'recall_when_retrieved': 0.9,
              'recall_when_missed': 0.1},
             {'distance': 1, 'documents': 16, 'candidates': 0, 'indexed_rate': 1.0,
              'hit_rate': 0.0,
              'random_hit_rate': 0.0, 'recall': 0.5, 'recall_when_retrieved': None,
              'recall_when_missed': 0.5}]})
  path = report.write(saved, out, ['vanilla', 'memorizing_dense', 'transformer_xl', 'melodi'],
                      'cmd')
  text = open(path, encoding='utf-8').read()
  assert 'Rows not finished yet: melodi.' in text
  assert '| 4 | 1.00 ± 0.01 | 0.02 ± 0.01 | 0.02 ± 0.01 |' in text  # vanilla, N = 4 row
  assert '| 1234 | 0.97 ± 0.01 | 2 min |' in text   # Transformer-XL: two stages of 1 minute
  assert 'dense lookup over the last 2048 keys/values of layer 2 = 32 windows' in text
  assert 'weight on memory' in text and '1 - g = 0.700' in text
  # Expectations are checked against the measured cells.
  assert ('- at chance (within 3 standard errors of 0.016) for every k beyond its reach (k > 0): '
          '**does not hold**' not in text)
  assert '- >= 0.9 at every k inside its buffer (1..32): **holds**' in text
  assert 'k = 0, N = 4 >= 0.95 (the in-window recall circuit formed): **holds** (1.000)' in text
  xl = text[text.index('## Transformer-XL'):]
  assert ('at chance (within 3 standard errors of 0.016) for every k beyond its reach (k > 4): '
          '**does not hold** (highest 0.500 ± 0.010 at N = 1, k = 8)') in xl
  # Stage 3 (formation) and stage 4 (reach): their own N = 1 tables for the rows that ran them,
  # the others named.
  formation_text = text[text.index('## Stage 3: formation'):text.index('## Stage 4: reach')]
  assert '| model | k = 1 | k = 8 | weight on memory |' in formation_text
  assert '| Memorizing (dense) | 0.90 ± 0.02 | 0.03 ± 0.02 | — |' in formation_text
  assert '| Memorizing (dense) | 0.50 ± 0.02 | 0.00 ± 0.02 | 0.610 |' in text
  assert 'Stage 4 not run yet: ' in text and 'vanilla' in text.split('Stage 4 not run yet: ')[1]
  reach_text = text[text.index('## Stage 4: reach'):text.index('## Stage 5')]
  assert ("Peak learning rate (each run's config.gin) differs between rows: 0.001: Memorizing "
          "(dense); 0.003: Transformer-XL.") in reach_text
  assert "Peak learning rate (each run's config.gin): not recorded, every row." in formation_text
  # Stage 5 (capacity): an N x k table and an accuracy-against-N plot for the rows that ran it;
  # its seconds count in the row's train time (2 + 1 + 1 + 2 minutes), after the two-pair
  # formation's table.
  capacity_text = text[text.index('## Stage 5: capacity (Memorizing (dense))'):]
  assert 'Peak learning rate (their config.gin): 0.003, then not recorded.' in capacity_text
  after_pairs = capacity_text[capacity_text.index('After the two-pair formation'):
                              capacity_text.index('After capacity:')]
  assert '| N \\ k | 1 | 8 |' in after_pairs
  assert '| 4 | 0.80 ± 0.02 | 0.02 ± 0.02 |' in after_pairs
  assert '| 2 | 0.45 ± 0.03 | 0.45 ± 0.03 |' in capacity_text
  assert '| 16 | 0.06 ± 0.03 | 0.06 ± 0.03 |' in capacity_text
  assert ('Pairs recalled per episode (N x accuracy, mean over k = 1..32): N = 1: 0.90, '
          'N = 2: 0.90') in capacity_text
  assert '| 1234 | 0.97 ± 0.01 | 6 min |' in text
  assert text.count('## Stage 5: capacity') == 1
  assert "Retrieval of the store's chunk by the query's window (stage 4)" in text
  assert '| 8 | 7 | 1.00 | 0.25 | 0.57 | 0.30 | 0.90 | 0.10 |' in text
  assert '| 1 | 0 | 1.00 | 0.00 | 0.00 | 0.50 | — | 0.50 |' in text
  assert text.count("Retrieval of the store's chunk") == 1   # no stage-2 file: no stage-2 table
  for plot in ('memory_recall.png', 'memory_recall_training.png', 'memory_recall_reach.png',
               'memory_recall_formation.png',
               'memory_recall_capacity_memorizing_dense.png'):
    assert os.path.getsize(os.path.join(out, plot)) > 1000


def test_reach_from_the_operative_config():
  assert report.reach(GIN['vanilla'] + 'ModelConfig.window_length = 64\n'
                      'ModelConfig.num_layers = 4\n')[1] == 0
  assert report.reach(GIN['transformer_xl'] + 'ModelConfig.window_length = 64\n'
                      'ModelConfig.num_layers = 4\n') == (
      'sliding window: each of 4 layers sees the 64 tokens before a token, so at most 256 tokens '
      '= 4 windows back', 4)
  note, horizon = report.reach(GIN['melodi_long_only'] + 'ModelConfig.window_length = 64\n'
                               'ModelConfig.num_layers = 4\n')
  assert horizon == 32 and 'FIFO of 256 slots (8 per window)' in note and 'short' not in note
  # MemLong's index evicts its least-retrieved chunk, not its oldest: no fixed horizon.
  note, horizon = report.reach('ModelConfig.stack = @MemLongStack()\nMemLongStack.chunks = 32\n'
                               'MemLongStack.top_k = 4\nModelConfig.window_length = 64\n'
                               'ModelConfig.num_layers = 4\n')
  assert horizon is None and 'top-4 of 32 stored windows' in note and 'least-retrieved' in note


def test_probe_read_out_recovers_a_linear_code_and_not_noise():
  import numpy as np
  from melodi_jax.experiments.memory_recall import probe
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 8, 400)
  codes = rng.normal(size=(8, 16))
  features = codes[labels] + 0.1 * rng.normal(size=(400, 16))
  assert probe.ridge_accuracy(features, labels, 8, penalty=1.0) > 0.95
  assert probe.ridge_accuracy(rng.normal(size=(400, 16)), labels, 8, penalty=1.0) < 0.3
  # More features than documents (the dual form) still reads a linear code.
  wide = np.concatenate([features, rng.normal(size=(400, 600))], axis=1)
  assert probe.ridge_accuracy(wide, labels, 8, penalty=1.0) > 0.9


def test_melodi_reach_is_checked_after_stage_4(tmp_path):
  """A MELODI row with a long-term FIFO (S+L too) must be above chance (3 standard errors) at
  N = 1 for every k up to the FIFO's span after stage 4; a short-term-only row, one window back."""
  saved, out = str(tmp_path / 'saved'), str(tmp_path / 'out')
  reach = {'melodi_long_only': {1: 0.6, 8: 0.5, 32: 0.02, 64: 0.0},   # k = 32 at chance
           'melodi_short_only': {1: 0.9, 8: 0.4, 32: 0.0, 64: 0.0},
           'melodi': {1: 0.9, 8: 0.5, 32: 0.3, 64: 0.0}}   # S+L: checked up to its FIFO's span
  for row, accuracy in reach.items():
    _saved_row(saved, row, lambda k: 1.0 if k == 0 else 0.02)
    cells = [{'pairs': 1, 'distance': k, 'documents': 4, 'accuracy': a, 'standard_error': 0.02,
              'source_windows': {}} for k, a in accuracy.items()]
    _write(os.path.join(saved, row, 'reach', 'mqar_test_30_n1.json'),
           {'step': 30, 'chance': 1 / 64, 'cells': cells})
  text = open(report.write(saved, out, list(reach), 'cmd'), encoding='utf-8').read()
  assert ('N = 1 above chance + 3 standard errors at every k up to the FIFO span (32), after '
          'stage 4: **does not hold** (weakest 0.020 ± 0.020 at k = 32)') in text
  assert ('N = 1 above chance + 3 standard errors one window back (k = 1), after stage 4: '
          '**holds** (0.900 ± 0.020; above chance at k = 1, 8)') in text
  assert ('N = 1 above chance + 3 standard errors at every k up to the FIFO span (32), after '
          'stage 4: **holds** (weakest 0.300 ± 0.020 at k = 32)') in text


def test_probe_lists_pairs_in_store_order_with_their_queries():
  """The per-pair probe: pair i is the i-th written; its scored position is the query's key for
  that same pair (the key there equals the stored key), its value the one stored."""
  import numpy as np
  from melodi_jax.data import mqar
  from melodi_jax.experiments.memory_recall import probe
  config = mqar.MQARConfig(window_length=32, key_vocab=16, value_vocab=16, filler_vocab=8)
  rng = np.random.default_rng(3)
  episodes = [mqar.eval_document(rng, config, 4, 2) for _ in range(6)]
  sources, asked_at, values, keys = probe.store_order(episodes)
  assert sources.shape == asked_at.shape == values.shape == keys.shape == (6, 4)
  assert np.all(np.diff(sources, axis=1) > 0), 'store order: first written first'
  for (tokens, episode), src, at, value, key in zip(episodes, sources, asked_at, values, keys):
    np.testing.assert_array_equal(tokens[src], mqar.VALUE_FIRST + value)
    np.testing.assert_array_equal(tokens[src - 1], mqar.KEY_FIRST + key)
    np.testing.assert_array_equal(tokens[at], tokens[src - 1])     # the same key is asked
    np.testing.assert_array_equal(tokens[at + 1], tokens[src])     # for the same value
    assert np.all(at >= episode.query)
  # The queries come in a new order, so store order is not query order somewhere.
  assert any(np.any(np.argsort(e.source_positions) != np.arange(4)) for _, e in episodes)


def test_wall_time_sums_every_invocation_of_the_ledger(tmp_path):
  assert 'not recorded' in report.wall_time_text(str(tmp_path))
  runs = [dict(started='2026-12-04T10:00:00Z', seconds=3600.0, jobs=2, stages='1 2 3 4 5',
               rows='vanilla melodi', status=130, cores=2, cpu='Xeon'),
          dict(started='2026-12-04T12:00:00Z', seconds=1800.0, jobs=2, stages='1 2 3 4 5',
               rows='vanilla melodi', status=0, cores=2, cpu='Xeon')]
  with open(tmp_path / 'benchmark_wall.jsonl', 'w', encoding='utf-8') as f:
    f.writelines(json.dumps(run) + '\n' for run in runs)
  text = report.wall_time_text(str(tmp_path))
  assert text.startswith('Wall time of the whole benchmark: 1.50 h (90 min) over 2 invocation(s)')
  assert '(1 interrupted and resumed), 2 row(s) trained at once (JOBS), on 2 cores, Xeon' in text
  assert text.endswith('.') and 'discarded' not in text
  # A discarded run is counted apart: its queue time over the queues it shared the machine with.
  with open(tmp_path / 'benchmark_wall.jsonl', 'a', encoding='utf-8') as f:
    f.write(json.dumps(dict(discarded='melodi stage 2 at 400 steps', queue_seconds=1200.0,
                            jobs=2)) + '\n')
  text = report.wall_time_text(str(tmp_path))
  assert text.startswith('Wall time of the whole benchmark: 1.50 h (90 min) over 2 invocation(s)')
  assert text.endswith('Of that, ~10 min went to 1 run(s) discarded since (melodi stage 2 at 400 '
                       'steps: their queue time / JOBS, from the run log), so these results took '
                       '~1.33 h (80 min).')
