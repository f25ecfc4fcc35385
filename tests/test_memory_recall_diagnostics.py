"""The memory_recall diagnostics' helpers (the diagnostics themselves run on trained runs)."""

import collections
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import zoo
from melodi_jax.data import mqar
from melodi_jax.experiments.memory_recall import retrieval_hits, signal

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_find_index_locates_the_retrieval_index_and_only_there():
  index = retrieval_hits.find_index(zoo.build('memlong').init_memory(2))
  assert index is not None and index['valid'].shape == (2, 3)   # chunks = 3 in the zoo
  assert not np.asarray(index['valid']).any()
  assert retrieval_hits.find_index(zoo.build('transformer_xl').init_memory(2)) is None


def test_random_hit_rate():
  assert retrieval_hits.random_hit_rate(3, 4) == 1.0   # every candidate is retrieved
  assert retrieval_hits.random_hit_rate(4, 4) == 1.0
  assert retrieval_hits.random_hit_rate(8, 4) == 0.5
  assert retrieval_hits.random_hit_rate(31, 4) == 4 / 31


def _signal_cli(*args):
  return subprocess.run([sys.executable, '-m', 'melodi_jax.experiments.memory_recall.signal',
                         *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_signal_counts_every_scored_value_once_per_cell():
  """The signal table of a small mix equals a count written from the episodes' fields: value
  tokens = pairs per episode, shares summing to 1, per-step figures scaled by B x T."""
  config = mqar.MQARConfig(num_pairs=(1, 4), distances=(0, 1, 2), document_tokens=256,
                           train_documents=40)
  tokens, episodes, _ = mqar.split_documents(config, 'train')
  want = collections.Counter()
  for doc in episodes:
    for episode in doc:
      want[(episode.pairs, episode.distance)] += episode.pairs
  table = signal.signal(config, documents=40, batch_size=8, segment_length=128, num_steps=10)
  got = {(row['pairs'], row['distance']): row for row in table['rows']}
  assert set(got) == set(want) and table['tokens'] == 40 * 256
  for cell, values in want.items():
    assert got[cell]['values_per_1k_tokens'] == pytest.approx(1000 * values / (40 * 256))
    assert got[cell]['values_per_step'] == pytest.approx(values / (40 * 256) * 8 * 128)
    assert got[cell]['values_per_stage'] == pytest.approx(10 * got[cell]['values_per_step'])
  assert sum(row['value_share'] for row in table['rows']) == pytest.approx(1.0)
  assert table['values_per_step'] == pytest.approx(sum(want.values()) / (40 * 256) * 1024)


def test_signal_cli_reads_the_stage_config_and_rejects_other_tasks():
  small = ['--gin_file=experiments/memory_recall/vanilla.gin',
           '--gin_file=experiments/memory_recall/stage_reach.gin',
           '--gin_bindings=MQARConfig.train_documents = 8', '--json']
  done = _signal_cli(*small)
  assert done.returncode == 0, done.stderr[-2000:]
  table = json.loads(done.stdout)
  assert {row['pairs'] for row in table['rows']} == {1}            # stage_reach: N = 1 only
  assert {row['distance'] for row in table['rows']} <= {2, 4, 8}
  assert (table['batch_size'], table['segment_length'], table['num_steps']) == (16, 576, 300)
  wrong = _signal_cli('--gin_file=models/vanilla.gin')
  assert wrong.returncode == 2 and 'mqar_bytes' in wrong.stderr.strip().splitlines()[-1]
  missing = _signal_cli()
  assert missing.returncode == 2 and '--gin_file is required' in missing.stderr


def test_stage_pairs_is_the_formation_stage_with_two_pairs():
  """Stage 5a (stage_pairs.gin) includes stage 3's file and asks N = 2 only: every scored value of
  its train split is in an N = 2, k = 1 episode, on stage 3's lanes, segments and steps."""
  done = _signal_cli('--gin_file=experiments/memory_recall/melodi.gin',
                     '--gin_file=experiments/memory_recall/stage_pairs.gin',
                     '--gin_bindings=MQARConfig.train_documents = 8', '--json')
  assert done.returncode == 0, done.stderr[-2000:]
  table = json.loads(done.stdout)
  assert {(row['pairs'], row['distance']) for row in table['rows']} == {(2, 1)}
  assert (table['batch_size'], table['segment_length'], table['num_steps']) == (64, 128, 200)


@pytest.mark.parametrize('variable, value, message', [
    ('STAGES', '3 6', "error: STAGES='3 6': stages are 1..5, e.g. STAGES='3 4'"),
    ('JOBS', 'two', "error: JOBS='two': the number of rows trained at once, e.g. JOBS=2")])
def test_memory_recall_script_rejects_bad_settings(variable, value, message):
  env = dict(os.environ, RUNS_ROOT=os.devnull + '_never_used', **{variable: value})
  done = subprocess.run(['bash', 'launch/experiments/memory_recall.sh'], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=120)
  assert done.returncode == 2
  assert done.stderr.strip().splitlines() == [message]
  assert done.stdout == ''
