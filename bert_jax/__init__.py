"""bert_jax: BERT, ALBERT and ELECTRA pretraining in JAX/Flax."""

# The one source of the version: pyproject.toml reads it from here (tool.setuptools.dynamic), and
# an installed distribution's metadata carries it.
__version__ = "0.1.0"
