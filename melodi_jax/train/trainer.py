"""The training loop: one flat function, read top to bottom (logging, mesh, model, input,
sharding, update step, checkpoint, evals, loop). Helpers live in the sibling modules."""
from __future__ import annotations

import os
import signal

from absl import logging
import flax.linen as nn
import gin
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from melodi_jax.errors import UserError
from melodi_jax.models import freezing
from melodi_jax.train import checkpoints, cli, evaluator, inputs, metrics, optim, partitioning
from melodi_jax.train import collapse, warm_start
from melodi_jax.train.config import TrainConfig
from melodi_jax.train.step import TrainState, init_state, make_train_step


class TrainingDiverged(RuntimeError):
  """The loss became NaN or inf; the last good state was saved first."""


class StopRequest:
  """Between steps, says whether to save and stop. One process: SIGTERM or Ctrl-C set a flag
  (a second Ctrl-C interrupts at once). Several processes: jax's preemption sync point, so that
  every process stops after the same step."""

  def __init__(self):
    self.signal_name = None
    self._previous = {}
    if jax.process_count() == 1:
      for sig in (signal.SIGINT, signal.SIGTERM):
        self._previous[sig] = signal.signal(sig, self._handler)

  def _handler(self, signum, frame):
    del frame
    if self.signal_name == 'SIGINT' and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.signal_name = signal.Signals(signum).name
    logging.warning('%s received: finishing the step, then saving and stopping',
                    self.signal_name)

  def __call__(self, step: int) -> bool:
    if jax.process_count() > 1:
      if multihost_utils.reached_preemption_sync_point(step):
        self.signal_name = 'a preemption notice'
        return True
      return False
    return self.signal_name is not None

  def restore(self):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _with_shardings(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree,
                      shardings)


def _write_atomic(path: str, text: str):
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    f.write(text)
  os.replace(path + '.tmp', path)


def train(config: TrainConfig, workdir: str, *, model=None, tfds_data_dir: str | None = None,
          optimizer_config: optim.OptimizerConfig | None = None,
          stream_factory: inputs.StreamFactory | None = None, init_from: str | None = None,
          freeze_loaded_steps: int = 0) -> TrainState:
  """Trains `config.num_steps` steps in `workdir`, resuming from its latest checkpoint.

  `init_from`: a new run starts from the parameters of that run's checkpoint wherever names and
  shapes match (train/warm_start.py); `freeze_loaded_steps` keeps those fixed for K steps.

  `model` defaults to `models.build_from_gin()` and `stream_factory` to `data.make_lanes`; the
  gin config must already be parsed. Raises UserError for mistakes a user can fix (nothing is
  written to `workdir` before they are ruled out), TrainingDiverged on a NaN/inf loss and
  collapse.TrainingCollapsed on a collapse to uniform output with `config.stop_on_collapse`.
  """
  config.validate()
  if optimizer_config is None:
    optimizer_config = cli.call_gin(optim.OptimizerConfig, 'OptimizerConfig')

  # ---------------------------------------------------------------------------------------
  # Logging.
  primary = jax.process_index() == 0
  logging.info('process %d/%d, %d devices (%s)', jax.process_index(), jax.process_count(),
               jax.device_count(), jax.devices()[0].platform)

  # ---------------------------------------------------------------------------------------
  # Mesh.
  mesh = partitioning.make_mesh(config.mesh_shape)
  rules = tuple(config.axis_rules) if config.axis_rules else partitioning.default_rules()
  logging.info('mesh %s, rules %s', dict(mesh.shape), rules)

  # ---------------------------------------------------------------------------------------
  # Model.
  if model is None:
    model = cli.build_model(config.segment_length)
  # The train step's model: the same parameters, its memory sized for training documents where
  # the stack plan says so (ModelConfig.for_training); evaluation runs `eval_model`.
  eval_model, train_model_config = model, model.config.for_training()
  if train_model_config is not model.config:
    model = model.clone(config=train_model_config)
  batch_size, segment_length = config.batch_size, config.segment_length
  window_length = model.window_length
  partitioning.check_batch_divides(batch_size, mesh)

  # ---------------------------------------------------------------------------------------
  # Input: this process's lanes (the data layer reports a missing corpus here).
  train_spec = inputs.StreamSpec(
      task=config.task, split=config.train_split, batch_size=batch_size,
      segment_length=segment_length, window_length=window_length, train=True, seed=config.seed,
      text_dir=config.text_dir, tfds_data_dir=tfds_data_dir)
  batch_sharding = partitioning.batch_sharding(mesh)
  stream = inputs.open_stream(train_spec, stream_factory, model.vocab_size, batch_sharding)
  windows = segment_length // window_length
  tokens_per_step = batch_size * segment_length

  # ---------------------------------------------------------------------------------------
  # Sharding: abstract shapes first, then everything is created directly where it lives.
  tx = optim.make_optimizer(optimizer_config, config.num_steps)
  tx = freezing.freeze_lower_layers(tx, model.config)  # MemLong's option; else tx itself
  schedule = optim.learning_rate_schedule(optimizer_config, config.num_steps)

  def init_params(rng):
    tokens = jnp.zeros((batch_size, segment_length), jnp.int32)
    doc_start = jnp.ones((batch_size, windows), bool)
    variables = model.init(rng, tokens, model.init_memory(batch_size), doc_start)
    assert set(variables) == {'params'}, f'only params are trained, got {set(variables)}'
    return variables['params']

  boxed_params = jax.eval_shape(init_params, jax.random.key(0))
  params_sharding = partitioning.logical_shardings(boxed_params, mesh, rules)
  abstract_params = nn.meta.unbox(boxed_params)
  warm = warm_start.plan(init_from, abstract_params) if init_from else None
  if warm:
    tx = warm_start.freeze_loaded(tx, warm_start.loaded_mask(abstract_params, warm),
                                  freeze_loaded_steps)
  abstract_opt_state = jax.eval_shape(tx.init, abstract_params)
  opt_sharding = partitioning.like_param_shardings(abstract_opt_state, abstract_params,
                                                   params_sharding, mesh)
  abstract_memory = jax.eval_shape(lambda: model.init_memory(batch_size))
  memory_sharding = partitioning.lane_shardings(abstract_memory, mesh)
  replicated = partitioning.replicated(mesh)
  state_sharding = TrainState(step=replicated, params=params_sharding, opt_state=opt_sharding,
                              rng=replicated)

  def new_state(seed):
    params_key, dropout_key = jax.random.split(jax.random.key(seed))
    return init_state(nn.meta.unbox(init_params(params_key)), tx, dropout_key)

  init_memory = jax.jit(lambda: model.init_memory(batch_size), out_shardings=memory_sharding)

  # ---------------------------------------------------------------------------------------
  # Update step (train/step.py): memory enters as a constant (no gradient into earlier
  # segments) and a step whose loss or gradient is not finite changes nothing.
  train_step = jax.jit(
      make_train_step(model, tx, schedule), in_shardings=(state_sharding, memory_sharding, batch_sharding),
      out_shardings=(state_sharding, memory_sharding, replicated), donate_argnums=(0, 1))

  # ---------------------------------------------------------------------------------------
  # Checkpoint: resume from the latest readable checkpoint, else initialize.
  os.makedirs(workdir, exist_ok=True)  # every user mistake above has been ruled out
  checkpointer = checkpoints.Checkpointer(workdir, keep=config.keep_checkpoints)
  collapse_watch = collapse.CollapseWatch(model.vocab_size, config.collapse_steps)
  restored = checkpointer.restore({
      'params': _with_shardings(abstract_params, params_sharding),
      'opt_state': _with_shardings(abstract_opt_state, opt_sharding),
      'memory': _with_shardings(abstract_memory, memory_sharding)})
  if restored is None:
    state, memory = jax.jit(new_state, out_shardings=state_sharding)(config.seed), init_memory()
    logging.info('initialized a new run in %s', workdir)
    if warm:
      warm_start.log_plan(warm, abstract_params, workdir)
      state = state.replace(params=warm_start.load(state.params, warm))
  else:
    progress = restored.progress
    state = TrainState(
        step=jax.device_put(jnp.asarray(restored.step, jnp.int32), replicated),
        params=restored.params, opt_state=restored.opt_state,
        rng=jax.device_put(jnp.asarray(progress['rng'], jnp.uint32), replicated))
    memory = restored.memory
    # The lanes are global (train/inputs.py), so any process count resumes them; checkpoints
    # from before that hold one state per process ('lane_states'), exact only for one process.
    lane_state = progress.get('lane_state')
    if lane_state is None and len(progress.get('lane_states') or []) == 1:
      lane_state = progress['lane_states'][0]
    if lane_state is not None:
      inputs.restore_stream(stream, lane_state)
    else:
      logging.warning('the checkpoint holds %d per-process lane states (an older format), no '
                      'global one: lanes and memory start afresh',
                      len(progress.get('lane_states') or []))
      memory = init_memory()
    logging.info('resumed from step %d in %s', restored.step, checkpointer.directory)
    collapse_watch.resume(progress, restored.step, checkpointer)

  def save(step: int, lane_state: dict):
    progress = dict(step=step, rng=[int(x) for x in np.asarray(jax.device_get(state.rng))],
                    lane_state=inputs.agreed_lane_state(lane_state), batch_size=batch_size,
                    segment_length=segment_length, window_length=window_length,
                    num_processes=jax.process_count(), task=train_spec.name,
                    split=config.train_split, collapse=collapse_watch.record)
    if checkpointer.save(step, params=state.params, opt_state=state.opt_state, memory=memory,
                         progress=progress):
      logging.info('saving checkpoint at step %d', step)

  # ---------------------------------------------------------------------------------------
  # Evals: the evaluation protocol on `eval_split`, with the same code as melodi_jax.evaluate.
  eval_runner = None
  if config.eval_every:
    eval_spec = inputs.StreamSpec(
        task=config.task, split=config.eval_split, batch_size=config.eval_batch,
        segment_length=segment_length, window_length=window_length, train=False,
        text_dir=config.text_dir, tfds_data_dir=tfds_data_dir)
    eval_runner = evaluator.Evaluator(eval_model, mesh, params_sharding, eval_spec,
                                      stream_factory=stream_factory,
                                      max_batches=config.eval_max_batches,
                                      position_buckets=config.eval_position_buckets)
    eval_runner.open()  # a missing eval split is reported now, not at the first eval

  # ---------------------------------------------------------------------------------------
  # Loop.
  step = int(restored.step) if restored else 0
  logger = metrics.MetricLogger(workdir, config.num_steps, start_step=step, primary=primary)
  stop = StopRequest()
  first_step_of_process = True
  lanes_before = stream.state()
  batch, lanes_after = inputs.next_batch(stream)
  try:
    while step < config.num_steps:
      with jax.profiler.StepTraceAnnotation('train', step_num=step):
        state, memory, step_metrics = train_step(state, memory,
                                                 inputs.global_batch(batch, batch_sharding))
      lanes_done = lanes_after
      batch, lanes_after = inputs.next_batch(stream)  # host work overlaps the device step
      step_metrics = jax.device_get(step_metrics)
      if not step_metrics['ok']:
        save(step, lanes_before)  # the step changed nothing: this is the last good state
        checkpointer.wait()
        raise TrainingDiverged(
            f'loss is {float(step_metrics["loss"])} (grad norm '
            f'{float(step_metrics["grad_norm"])}) at step {step + 1}; the last good state is '
            f'saved as step {step} in {checkpointer.directory}; lower '
            'OptimizerConfig.peak_learning_rate or clip_grad_norm and resume')
      step += 1
      lanes_before = lanes_done
      collapsed = collapse_watch.observe(step, float(step_metrics['loss']),
                                         float(step_metrics['grad_norm']), checkpointer)
      halt = collapsed and config.stop_on_collapse

      if first_step_of_process and primary:
        operative = gin.operative_config_str()
        _write_atomic(os.path.join(workdir, 'config.gin'), operative)
        logger.text(step, 'config', operative)
      first_step_of_process = False

      if step % config.log_every == 0 or step == config.num_steps:
        logger.train(step, dict(
            loss=float(step_metrics['loss']),
            bits_per_byte=metrics.bits_per_byte(float(step_metrics['nats']),
                                                float(step_metrics['bytes'])),
            grad_norm=float(step_metrics['grad_norm']),
            learning_rate=float(step_metrics['learning_rate']),
            tokens=float(step_metrics['tokens'])), tokens_per_step)

      if eval_runner and (step % config.eval_every == 0 or step == config.num_steps):
        result = eval_runner.run(state.params, step)
        logger.eval(step, f'{result.task}_{result.split}', result.scalars())
        if result.complete:
          evaluator.write_result(workdir, result)

      stopping = stop(step)
      if step % config.checkpoint_every == 0 or step == config.num_steps or stopping or halt:
        save(step, lanes_done)
      if halt:
        raise collapse_watch.stopped(step, checkpointer.directory)
      if stopping:
        logging.warning('stopped by %s after step %d; checkpoint saved; rerun the same command '
                        'to resume', stop.signal_name, step)
        break
  finally:
    stop.restore()
    checkpointer.wait()
    checkpointer.close()
    logger.close()
  return state
