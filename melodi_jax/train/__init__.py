"""Training and evaluation: mesh and shardings, optimizer, checkpoints, metrics, eval protocol.

`python -m melodi_jax.train` runs `train/__main__.py`; the loop itself is `train/trainer.py`.
"""
