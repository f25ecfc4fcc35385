"""melodi_jax: MELODI and the long-context memory transformers it is measured against."""
