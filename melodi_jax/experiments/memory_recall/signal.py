"""How much training signal a memory_recall stage gives each (N, k) cell of its MQAR mix.

  python -m melodi_jax.experiments.memory_recall.signal --gin_file=experiments/memory_recall/melodi.gin
      [--gin_file=experiments/memory_recall/stage_reach.gin] [--gin_bindings=...] [--documents=8192]
      [--json]

The loss is on the query regions' value tokens only, one per pair, so a cell's share of the
gradient is its share of the value tokens. Episodes are drawn with N and k uniform but packed into
fixed-length documents (mqar.train_document), so the mix of value tokens is neither uniform nor
N-proportional: it is counted here over the first `--documents` train documents of the stage's
config. Per cell: episodes and value tokens per 1,000 train tokens, and the value tokens one
training step (batch_size lanes x segment_length tokens) and the whole stage (num_steps) feed it.
A memory that carries one pair per window (a compressed write) learns its carrying circuit from the
N = 1, k >= 1 cells; the formation runs of results/memory_recall/diagnostics/ show how many such
tokens forming it took.
"""
from __future__ import annotations

import collections
import json
from typing import Sequence

from absl import flags

from melodi_jax.train import cli


def define_flags() -> None:
  """The command-line flags (defined only when run as a program)."""
  cli.define_gin_flags()
  cli.define_json_flag()
  flags.DEFINE_integer('documents', 8192, 'Train documents counted (the first ones of the split).')


FLAGS = flags.FLAGS


def count(documents: Sequence) -> tuple[int, dict[tuple[int, int], dict[str, int]]]:
  """(train tokens, {(N, k): {'episodes', 'values'}}) over (tokens, episodes) documents."""
  tokens, cells = 0, collections.defaultdict(lambda: {'episodes': 0, 'values': 0})
  for doc_tokens, episodes in documents:
    tokens += len(doc_tokens)
    for episode in episodes:
      cell = cells[(episode.pairs, episode.distance)]
      cell['episodes'] += 1
      cell['values'] += len(episode.value_positions)
  return tokens, dict(cells)


def signal(config, documents: int, batch_size: int, segment_length: int, num_steps: int) -> dict:
  """The per-cell table for an MQARConfig and the stage's batch, segment and steps."""
  from melodi_jax.data import mqar  # pylint: disable=g-import-not-at-top
  if documents < 1:
    raise cli.UserError(f'--documents={documents} must be at least 1')
  split_tokens, split_episodes, _ = mqar.split_documents(config, 'train')
  drawn = list(zip(split_tokens, split_episodes))[:documents]
  tokens, cells = count(drawn)
  per_step = batch_size * segment_length
  values = sum(cell['values'] for cell in cells.values())
  rows = []
  for (n, k), cell in sorted(cells.items()):
    density = cell['values'] / tokens
    rows.append({'pairs': n, 'distance': k,
                 'episodes_per_1k_tokens': 1000 * cell['episodes'] / tokens,
                 'values_per_1k_tokens': 1000 * density,
                 'value_share': cell['values'] / values,
                 'values_per_step': density * per_step,
                 'values_per_stage': density * per_step * num_steps})
  return {'documents': len(drawn), 'tokens': tokens, 'batch_size': batch_size,
          'segment_length': segment_length, 'num_steps': num_steps,
          'values_per_step': values / tokens * per_step, 'rows': rows}


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise cli.UserError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not FLAGS.gin_file:
    raise cli.UserError('--gin_file is required: pass a memory_recall row and its stage file, '
                        'e.g. --gin_file=experiments/memory_recall/melodi.gin')
  cli.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings, FLAGS.gin_search_paths)
  from melodi_jax.data import mqar  # pylint: disable=g-import-not-at-top
  from melodi_jax.train import config as train_config  # pylint: disable=g-import-not-at-top
  train = cli.call_gin(train_config.TrainConfig, 'TrainConfig')
  if train.task != 'mqar_bytes':
    raise cli.UserError(f"TrainConfig.task = {train.task!r}: this counts the MQAR task's "
                        "signal; pass a memory_recall config (task 'mqar_bytes')")
  mqar_config = cli.call_gin(mqar.MQARConfig, 'MQARConfig')
  result = signal(mqar_config, FLAGS.documents, train.batch_size, train.segment_length,
                  train.num_steps)
  result['gin_files'] = list(FLAGS.gin_file)
  result['gin_bindings'] = list(FLAGS.gin_bindings)
  if FLAGS.json:
    print(json.dumps(result, indent=1))
    return
  print(f'{" ".join(FLAGS.gin_file)}: {result["documents"]} documents, '
        f'{result["batch_size"]} lanes x {result["segment_length"]} tokens a step, '
        f'{result["num_steps"]} steps; {result["values_per_step"]:.1f} scored values a step')
  print('   N    k  episodes/1k tok  values/1k tok  share  values/step  values/stage')
  for row in result['rows']:
    print(f'{row["pairs"]:4d} {row["distance"]:4d}  {row["episodes_per_1k_tokens"]:15.2f}  '
          f'{row["values_per_1k_tokens"]:13.2f}  {row["value_share"]:5.3f}  '
          f'{row["values_per_step"]:11.1f}  {row["values_per_stage"]:12.0f}')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
