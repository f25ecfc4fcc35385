"""Logical axis names for parameters and activations, and their default mapping to mesh axes.

Modules annotate arrays with these names only; `train/partitioning.py` maps them to the
('data', 'model') mesh through rules (gin-configurable there).
"""

BATCH = 'batch'
LENGTH = 'length'
EMBED = 'embed'
HEADS = 'heads'
KV = 'kv'
MLP = 'mlp'
VOCAB = 'vocab'

# Tensor-parallel ('model') sharding of the wide axes, data parallelism on the batch.
DEFAULT_RULES = (
    (BATCH, 'data'),
    (LENGTH, None),
    (EMBED, None),
    (HEADS, 'model'),
    (KV, None),
    (MLP, 'model'),
    (VOCAB, 'model'),
)
