"""Data: tokenizers, corpora, instances, masking and the tf.data pipeline (only package importing TF)."""
