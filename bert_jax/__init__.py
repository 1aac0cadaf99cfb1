"""bert_jax: BERT, ALBERT and ELECTRA pretraining in JAX/Flax."""
