"""Optimizers from gin: Adafactor (the reference setting) or AdamW, warmup + cosine decay,
gradient clipping by global norm."""
from __future__ import annotations

import dataclasses

import gin
import optax

from melodi_jax.errors import UserError


@gin.configurable
@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """Defaults follow meliad's base trainer: Adafactor (decay 0.8, momentum 0.9), learning rate
  warmed up linearly to 0.01 over 1000 steps, then cosine-decayed to 0.001 at the last step."""
  name: str = 'adafactor'            # 'adafactor' or 'adamw'
  peak_learning_rate: float = 0.01
  final_learning_rate: float = 0.001  # reached at decay_steps
  warmup_steps: int = 1000
  decay_steps: int | None = None     # None: TrainConfig.num_steps
  clip_grad_norm: float | None = 1.0  # None or 0: no clipping
  # Adafactor
  decay_rate: float = 0.8
  momentum: float | None = 0.9
  multiply_by_parameter_scale: bool = True
  # AdamW
  b1: float = 0.9
  b2: float = 0.98
  eps: float = 1e-9
  weight_decay: float = 1e-4


def learning_rate_schedule(config: OptimizerConfig, num_steps: int) -> optax.Schedule:
  """Linear warmup to the peak (step 0 already takes peak / warmup_steps), then cosine decay
  to the final rate at decay_steps."""
  decay_steps = config.decay_steps or num_steps
  warmup = min(config.warmup_steps, decay_steps)
  return optax.warmup_cosine_decay_schedule(
      init_value=config.peak_learning_rate / max(warmup, 1), peak_value=config.peak_learning_rate, warmup_steps=warmup,
      decay_steps=max(decay_steps, warmup + 1), end_value=config.final_learning_rate)


def make_optimizer(config: OptimizerConfig, num_steps: int) -> optax.GradientTransformation:
  schedule = learning_rate_schedule(config, num_steps)
  if config.name == 'adafactor':
    update = optax.adafactor(
        learning_rate=schedule, decay_rate=config.decay_rate, momentum=config.momentum,
        multiply_by_parameter_scale=config.multiply_by_parameter_scale)
  elif config.name == 'adamw':
    update = optax.adamw(learning_rate=schedule, b1=config.b1, b2=config.b2, eps=config.eps,
                         weight_decay=config.weight_decay)
  else:
    raise UserError(f"OptimizerConfig.name={config.name!r} is unknown; use 'adafactor' or 'adamw'")
  if config.clip_grad_norm:
    return optax.chain(optax.clip_by_global_norm(config.clip_grad_norm), update)
  return update
