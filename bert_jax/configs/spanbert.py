r"""SpanBERT (Joshi et al. 2020): span masking, MLM + the span-boundary objective, no NSP.

Sizes and recipe are configs/bert.py's (tiny ... large, runlocal); what changes: single
segments of up to max_seq_length tokens (no sentence pairs), span masking (span lengths in
words ~ Geometric(0.2) clipped at 10, 15% of tokens), and the SBO head on top of MLM
(bert_jax.tasks.span_boundary).

  python -m bert_jax.main --config=configs/spanbert.py:tiny,runlocal --workdir=runs/spanbert_tiny
  python -m bert_jax.main --config=configs/spanbert.py:base --workdir=gs://bucket/spanbert_base
"""

from bert_jax.configs import bert


def get_config(arg=None):
  config = bert.get_config(arg)
  config.data.update(instances="full_sentences", masking="span", span_p=0.2, span_max=10)
  config.objective.update(name="sbo", sentence_loss="none")
  config.objective.sbo_max_targets = 20  # positions in a span with their own embedding (SpanBERT: 20)
  return config
