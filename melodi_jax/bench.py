"""Benchmark a model's train and eval steps: compile time, step time, tokens/s, memory, FLOP/s.

  python -m melodi_jax.bench --gin_file=models/melodi.gin --gin_file=bench/cpu.gin [--json]
      [--steps=20] [--batch_size=B] [--segment_length=T] [--sweep_windows=4,8,16,32,64]

With --sweep_windows, --steps=0 only compiles: compile time and XLA's memory figures per N.

First measures the machine's dense-matmul roofline at the model's compute dtype (a large
`jnp.dot`), then builds the model, the trainer's train step (train/step.py: loss, gradient,
update, memory carry; here under BenchConfig's optimizer, on a synthetic batch) and an eval step, compiles them, runs warm-up steps and times `--steps` more, each to completion.
FLOPs are dot-product FLOPs counted on the step's jaxpr with every scan multiplied by its length
(XLA's cost analysis counts a loop body once; its figure is reported alongside). Two counts: model
FLOPs = 3 x the forward pass (the usual MFU convention; what `roofline_fraction` uses) and executed
FLOPs (the train step's own jaxpr, including what rematerialisation recomputes). Step times are
medians.
"""

import dataclasses
import functools
import json
import resource
import statistics
import time
from typing import Sequence

from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from melodi_jax import models
from melodi_jax.bench_lib import flops, profile
from melodi_jax.train import cli
from melodi_jax.bench_lib.steps import BenchConfig, make_optimizer, make_steps, synthetic_batch
from melodi_jax.train.step import init_state

cli.define_gin_flags()
cli.define_json_flag()
flags.DEFINE_integer('steps', 20, 'timed steps after warm-up (the median is reported); 0 with '
                     '--sweep_windows: compile only')
flags.DEFINE_integer('warmup', 2, 'untimed steps after compilation')
flags.DEFINE_integer('batch_size', None, 'lanes B (default: BenchConfig.batch_size)')
flags.DEFINE_integer('segment_length', None, 'tokens T per lane (default: BenchConfig.'
                     'segment_length)')
flags.DEFINE_list('sweep_windows', [], 'numbers of windows N: compile time and per-token step '
                  'time for T = N * W (instead of the single benchmark)')
flags.DEFINE_bool('eval', True, 'also time the eval step')
flags.DEFINE_integer('profile_steps', 0, 'after timing, profile this many train steps with '
                     'jax.profiler and print where the time goes')
flags.DEFINE_integer('roofline_size', None, 'n of the [n, n] @ [n, n] roofline matmul (default: '
                     '2048 on CPU, 8192 on accelerators)')


@dataclasses.dataclass
class StepTiming:
  compile_s: float          # lower + compile
  median_s: float
  min_s: float
  max_s: float
  steps: int


def _time_steps(run, state, warmup: int, steps: int, probe=None):
  """Runs `warmup` untimed then `steps` timed calls state = run(state), each to completion.

  Returns (wall seconds, process CPU seconds, probe results (or []) per step, final state). With
  a `probe` (the roofline matmul), it runs right before each timed step, so that the step and its
  roofline see the same load on a shared machine.
  """
  for _ in range(warmup):
    state = run(state)
    jax.block_until_ready(state)
  walls, cpus, probes = [], [], []
  for _ in range(steps):
    if probe is not None:
      probes.append(probe())
    wall, cpu = time.perf_counter(), time.process_time()
    state = run(state)
    jax.block_until_ready(state)
    walls.append(time.perf_counter() - wall)
    cpus.append(time.process_time() - cpu)
  return walls, cpus, probes, state


def _timing(compile_s, times) -> StepTiming:
  return StepTiming(compile_s, statistics.median(times), min(times), max(times), len(times))


def _fractions(flops_per_step: float, walls, cpus, probes, roofline) -> dict:
  """Fractions of the roofline: wall-clock (median over steps, each against the roofline probe
  run just before it) and CPU-time (FLOPs per process CPU second, against the same for the
  roofline matmul; robust to other processes sharing the cores)."""
  if not probes:
    return {}
  wall = statistics.median((flops_per_step / w) / (roofline.flops / p[0])
                           for w, p in zip(walls, probes))
  cpu = ((flops_per_step / statistics.median(cpus))
         / (roofline.flops / statistics.median(p[1] for p in probes)))
  return {'roofline_fraction': wall, 'cpu_roofline_fraction': cpu,
          'roofline_flops_per_s_during_steps': statistics.median(roofline.flops / p[0]
                                                                 for p in probes)}


def _remat_mode(config) -> str:
  """What the train step keeps per window for its backward pass (ModelConfig.remat, remat_saves)."""
  if not config.remat:
    return 'none (every activation saved)'
  if config.remat_saves == 'nothing':
    return 'recomputing scan (each window recomputed)'
  mode = f'recomputing scan keeping {config.remat_saves} per window'
  if config.remat_budget_mib:
    mode += f' (whole windows recomputed if over {config.remat_budget_mib:g} MiB; see the log)'
  return mode


def _peak_rss_bytes() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # Linux reports KiB


def _device_memory() -> dict | None:
  device = jax.devices()[0]
  if device.platform == 'cpu':
    return None
  try:
    stats = device.memory_stats() or {}
  except Exception:  # pylint: disable=broad-except  (not every backend has memory_stats)
    return None
  return {k: stats[k] for k in ('peak_bytes_in_use', 'bytes_in_use', 'bytes_limit') if k in stats}


def _compiled_memory(compiled) -> dict:
  analysis = compiled.memory_analysis()
  if analysis is None:
    return {}
  names = ('temp_size_in_bytes', 'argument_size_in_bytes', 'output_size_in_bytes',
           'alias_size_in_bytes', 'peak_memory_in_bytes')
  return {n: int(getattr(analysis, n)) for n in names if hasattr(analysis, n)}


def run_benchmark(model: models.DecoderLM, batch_size: int, segment_length: int,
                  optimizer_name: str = 'adamw', learning_rate: float = 1e-4, steps: int = 20,
                  warmup: int = 2, with_eval: bool = True,
                  roofline: flops.Roofline | None = None, profile_steps: int = 0) -> dict:
  """Builds, compiles and times the train (and eval) step of `model`; returns a JSON-able dict."""
  window = model.window_length
  if segment_length % window:
    raise cli.UserError(f'--segment_length: {segment_length} is not a multiple of the window '
                        f'({window}); use a multiple of ModelConfig.window_length')
  num_windows = segment_length // window
  rng = jax.random.PRNGKey(0)
  tokens = jax.random.randint(rng, (batch_size, segment_length), 0, model.vocab_size, jnp.int32)
  doc_start = jnp.zeros((batch_size, num_windows), bool).at[:, 0].set(True)
  memory = model.init_memory(batch_size)
  start = time.perf_counter()
  variables = jax.jit(model.init)(rng, tokens[:, :window], memory, doc_start[:, :1])
  params = nn.meta.unbox(variables)['params']
  optimizer = make_optimizer(optimizer_name, learning_rate)
  state = jax.jit(lambda p: init_state(p, optimizer, jax.random.key(1)))(params)
  del params, variables  # (the state holds a copy; the train step donates it)
  jax.block_until_ready(state)
  init_s = time.perf_counter() - start
  steps_fns = make_steps(model, optimizer)
  batch = synthetic_batch(tokens, doc_start)

  # Train step.
  start, start_cpu = time.perf_counter(), time.process_time()
  lowered = steps_fns.train.lower(state, memory, batch)
  lower_s = time.perf_counter() - start
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  compile_cpu_s = time.process_time() - start_cpu   # robust to other processes on the cores
  executed_flops = flops.matmul_flops(steps_fns.train_fn, state, memory, batch)
  forward_flops = flops.matmul_flops(steps_fns.eval_fn, state.params, memory, batch)
  train_flops = 3 * forward_flops
  if not steps:  # compile only (sweeps of compile time and activation memory)
    return {'segment_length': segment_length, 'num_windows': num_windows,
            'train': {'compile_s': compile_s, 'compile_cpu_s': compile_cpu_s, 'lower_s': lower_s,
                      'matmul_flops': train_flops, 'executed_flops': executed_flops,
                      'compiled_memory': _compiled_memory(compiled)},
            'peak_rss_bytes': _peak_rss_bytes()}

  def train_once(carry):
    s, m = carry
    s, m, _ = compiled(s, m, batch)
    return s, m

  probe = roofline.probe if roofline else None
  times, cpus, probes, (state, memory) = _time_steps(train_once, (state, memory), warmup, steps,
                                                     probe)
  train = _timing(compile_s, times)
  where = None
  if profile_steps:
    where, (state, memory) = profile.profile(train_once, (state, memory), profile_steps,
                                             compiled.as_text())
  params = state.params
  tokens_per_step = batch_size * segment_length
  result = {
      'backend': jax.default_backend(), 'device': str(jax.devices()[0].device_kind),
      'dtype': jnp.dtype(model.config.dtype).name, 'batch_size': batch_size,
      'segment_length': segment_length, 'window_length': window, 'num_windows': num_windows,
      'parameters': int(sum(x.size for x in jax.tree_util.tree_leaves(params))),
      'remat': _remat_mode(model.config),
      'init_s': init_s,
      'train': dict(dataclasses.asdict(train), lower_s=lower_s, compile_cpu_s=compile_cpu_s,
                    cpu_median_s=statistics.median(cpus),
                    tokens_per_s=tokens_per_step / train.median_s,
                    us_per_token=1e6 * train.median_s / tokens_per_step,
                    matmul_flops=train_flops, executed_flops=executed_flops,
                    xla_cost_analysis_flops=flops.xla_flops(compiled),
                    flops_per_s=train_flops / train.median_s,
                    executed_flops_per_s=executed_flops / train.median_s,
                    compiled_memory=_compiled_memory(compiled)),
  }
  if where is not None:
    result['train']['profile'] = where
  if roofline:
    result['roofline'] = roofline.measure()
    result['train'].update(_fractions(train_flops, times, cpus, probes, roofline))
    executed = _fractions(executed_flops, times, cpus, probes, roofline)
    result['train']['executed_roofline_fraction'] = executed['roofline_fraction']
    result['train']['executed_cpu_roofline_fraction'] = executed['cpu_roofline_fraction']

  if with_eval:
    start = time.perf_counter()
    compiled_eval = steps_fns.evaluate.lower(params, memory, batch).compile()
    eval_compile_s = time.perf_counter() - start
    eval_flops = forward_flops

    def eval_once(state):
      return compiled_eval(params, state[0], batch)   # (memory, loss): wait for both

    times, cpus, probes, (memory, _) = _time_steps(eval_once, (memory, None), warmup, steps, probe)
    evaluation = _timing(eval_compile_s, times)
    result['eval'] = dict(dataclasses.asdict(evaluation),
                          tokens_per_s=tokens_per_step / evaluation.median_s,
                          us_per_token=1e6 * evaluation.median_s / tokens_per_step,
                          cpu_median_s=statistics.median(cpus),
                          matmul_flops=eval_flops, flops_per_s=eval_flops / evaluation.median_s)
    if roofline:
      result['eval'].update(_fractions(eval_flops, times, cpus, probes, roofline))
  result['peak_rss_bytes'] = _peak_rss_bytes()
  device_memory = _device_memory()
  if device_memory:
    result['device_memory'] = device_memory
  return result


def sweep(model: models.DecoderLM, batch_size: int, windows: Sequence[int], **kwargs) -> list:
  """Compile time and per-token step time against the number of windows N (T = N * W)."""
  rows = []
  for n in windows:
    r = run_benchmark(model, batch_size, n * model.window_length, with_eval=False, **kwargs)
    rows.append({'num_windows': n, 'segment_length': r['segment_length'],
                 'compile_s': r['train']['compile_s'],
                 'compile_cpu_s': r['train']['compile_cpu_s'],
                 'median_s': r['train'].get('median_s'),
                 'us_per_token': r['train'].get('us_per_token'),
                 'cpu_median_s': r['train'].get('cpu_median_s'),
                 'roofline_fraction': r['train'].get('roofline_fraction'),
                 'cpu_roofline_fraction': r['train'].get('cpu_roofline_fraction'),
                 'temp_bytes': r['train']['compiled_memory'].get('temp_size_in_bytes'),
                 'peak_rss_bytes': r['peak_rss_bytes']})
  return rows


# ---------------------------------------------------------------------------------------------
# Printing


def _format(result: dict, name: str) -> str:
  lines = [f'{name}: {result["parameters"] / 1e6:.1f}M parameters, {result["dtype"]}, '
           f'B = {result["batch_size"]}, T = {result["segment_length"]} '
           f'({result["num_windows"]} windows of {result["window_length"]}), '
           f'{result["backend"]} ({result["device"]}); remat: {result["remat"]}']
  if 'roofline' in result:
    roof = result['roofline']
    lines.append(f'  roofline: {roof["flops_per_s"] / 1e9:.1f} GFLOP/s wall, '
                 f'{roof["flops_per_cpu_s"] / 1e9:.1f} GFLOP per CPU-second ({roof["dtype"]} '
                 f'{roof["size"]}x{roof["size"]} matmul, median)')
  for kind in ('train', 'eval'):
    if kind not in result:
      continue
    r = result[kind]
    line = (f'  {kind:5s}: compile {r["compile_s"]:.2f} s, step {1e3 * r["median_s"]:.1f} ms '
            f'median of {r["steps"]} (min {1e3 * r["min_s"]:.1f}, max {1e3 * r["max_s"]:.1f}), '
            f'{r["tokens_per_s"]:,.0f} tokens/s, {r["matmul_flops"] / 1e9:.2f} GFLOP/step, '
            f'{r["flops_per_s"] / 1e9:.1f} GFLOP/s')
    lines.append(line)
    if 'roofline_fraction' in r:
      line = (f'         roofline fraction: {100 * r["roofline_fraction"]:.0f}% wall-clock, '
              f'{100 * r["cpu_roofline_fraction"]:.0f}% per CPU-second')
      if 'executed_flops' in r and r['executed_flops'] != r['matmul_flops']:
        line += (f' (counting recomputed FLOPs ({r["executed_flops"] / 1e9:.1f} GFLOP): '
                 f'{100 * r["executed_roofline_fraction"]:.0f}%, '
                 f'{100 * r["executed_cpu_roofline_fraction"]:.0f}%)')
      lines.append(line)
  if 'compiled_memory' in result['train']:
    temp = result['train']['compiled_memory'].get('temp_size_in_bytes')
    if temp is not None:
      lines.append(f'  train step temporaries (XLA buffer assignment): {temp / 2**20:.1f} MiB')
  where = result['train'].get('profile')
  if where and 'by_category' in where:
    lines.append(f'  profile of the train step ({where["total_s"]:.2f} s of ops per step):')
    for label, seconds in list(where['by_category'].items())[:16]:
      lines.append(f'    {label:32s} {seconds:7.3f} s  {100 * seconds / where["total_s"]:5.1f}%')
  lines.append(f'  peak RSS: {result["peak_rss_bytes"] / 2**20:.0f} MiB')
  if 'device_memory' in result:
    lines.append(f'  device memory: {result["device_memory"]}')
  return '\n'.join(lines)


def _format_sweep(rows: list, name: str) -> str:
  lines = [f'{name}: train step against the number of windows',
           f'{"N":>4} {"T":>7} {"compile s":>10} {"step ms":>9} {"us/token":>9} {"temp MiB":>9} '
           f'{"roofline":>9} {"per CPU-s":>9}']
  nan = float('nan')
  for r in rows:
    temp = r['temp_bytes'] / 2**20 if r['temp_bytes'] is not None else nan
    step_ms = 1e3 * r['median_s'] if r['median_s'] is not None else nan
    lines.append(f'{r["num_windows"]:>4} {r["segment_length"]:>7} {r["compile_s"]:>10.2f} '
                 f'{step_ms:>9.1f} {r["us_per_token"] or nan:>9.2f} {temp:>9.1f} '
                 f'{100 * (r["roofline_fraction"] or 0):>8.0f}% '
                 f'{100 * (r["cpu_roofline_fraction"] or 0):>8.0f}%')
  return '\n'.join(lines)


def main(argv: Sequence[str]) -> None:
  FLAGS = flags.FLAGS
  if len(argv) > 1:
    raise cli.UserError(f'unexpected arguments {argv[1:]}: pass configs with --gin_file')
  if not FLAGS.gin_file:
    raise cli.UserError('--gin_file: give a model config, e.g. --gin_file=models/melodi.gin '
                        '--gin_file=bench/cpu.gin')
  if FLAGS.steps < 0 or FLAGS.warmup < 0 or (FLAGS.steps == 0 and not FLAGS.sweep_windows):
    raise cli.UserError('--steps must be >= 1 (or 0 with --sweep_windows: compile only) and '
                        '--warmup >= 0')
  try:
    windows = [int(n) for n in FLAGS.sweep_windows]
  except ValueError as e:
    raise cli.UserError(f'--sweep_windows: {FLAGS.sweep_windows} must be integers, e.g. '
                        '--sweep_windows=4,8,16') from e
  cli.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings, FLAGS.gin_search_paths)
  config = BenchConfig()
  model = cli.build_model()
  batch_size = FLAGS.batch_size or config.batch_size
  segment_length = FLAGS.segment_length or config.segment_length
  name = ' + '.join(FLAGS.gin_file)
  roofline = flops.Roofline(model.config.dtype, FLAGS.roofline_size)
  common = dict(optimizer_name=config.optimizer, learning_rate=config.learning_rate,
                steps=FLAGS.steps, warmup=FLAGS.warmup, roofline=roofline,
                profile_steps=FLAGS.profile_steps)
  if windows:
    rows = sweep(model, batch_size, windows, **common)
    print(json.dumps({'model': name, 'roofline': roofline.measure(), 'sweep': rows}, indent=1)
          if FLAGS.json else _format_sweep(rows, name))
    return
  result = run_benchmark(model, batch_size, segment_length, with_eval=FLAGS.eval, **common)
  result['model'] = name
  result['gin_bindings'] = list(FLAGS.gin_bindings)
  print(json.dumps(result, indent=1) if FLAGS.json else _format(result, name))


if __name__ == '__main__':
  cli.run(main)
