r"""ELECTRA pretraining (Clark et al. 2020): generator MLM + discriminator replaced-token detection.

Sizes: small, base, large (paper Table 6 / google-research/electra). Generator hidden size is a
fraction of the discriminator's (small 1/4, base 1/3, large 1/4) with the same depth, and shares
the token/position embeddings. Masking: 15% (25% for large), 85% [MASK] / 15% kept / no random.
Recipe: AdamW (no bias correction, eps 1e-6, wd 0.01), 10k warmup, linear decay;
small: batch 128, lr 5e-4, 1M steps; base: batch 256, lr 2e-4, 766k steps;
large: batch 2048, lr 2e-4, 400k steps. Discriminator loss weight 50.

  python -m bert_jax.main --config=configs/electra.py:small --workdir=gs://bucket/run1 \
      --config.data.mask_rate=0.25
"""

from bert_jax.configs import common

# (layers, hidden, heads, intermediate, embedding, generator fraction, batch, lr, steps, mask)
SIZES = {
    "small": (12, 256, 4, 1024, 128, 0.25, 128, 5e-4, 1_000_000, 0.15),
    "base": (12, 768, 12, 3072, 768, 1.0 / 3.0, 256, 2e-4, 766_000, 0.15),
    "large": (24, 1024, 16, 4096, 1024, 0.25, 2048, 2e-4, 400_000, 0.25),
}


def model_for(variant: str):
  if variant not in SIZES:
    raise ValueError(f"Unknown ELECTRA variant {variant!r}; choose one of {sorted(SIZES)}.")
  layers, hidden, heads, inter, emb, gen, *_ = SIZES[variant]
  return common.model_config(
      family="electra", vocab_size=30522, embedding_size=emb, hidden_size=hidden,
      num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=inter,
      hidden_act="gelu", generator_hidden_size=gen, generator_layers=1.0, use_pooler=False)


def get_config(arg=None):
  arg = common.parse_arg(arg, variant="small", runlocal=False)
  config = common.base_config()
  config.variant = arg.variant
  config.model = model_for(arg.variant)
  *_, batch, lr, steps, mask = SIZES[arg.variant]
  config.data = common.data_config(
      instances="segments", masking="electra", mask_rate=mask, max_seq_length=128,
      max_predictions_per_seq=int((mask + 0.005) * 128),
      mask_token_prob=0.85, random_token_prob=0.0, keep_token_prob=0.15)
  config.objective = common.objective_config(name="electra", sentence_loss="none",
                                             disc_weight=50.0, gen_weight=1.0)
  config.train.batch_size = batch
  config.train.num_steps = steps
  config.optimizer.update(name="bert_adamw", learning_rate=lr, warmup_steps=10_000,
                          weight_decay=0.01, eps=1e-6)
  config.checkpoint.best_metric = "eval/disc_loss"
  if arg.runlocal:
    common.runlocal(config)
    config.model.embedding_size = 64
    # Init std 0.1 (about 1/sqrt(128): variance 1/fan-in) instead of the recipe's 0.02, which
    # suits width 768: at width 128 it leaves attention logits near zero and the discriminator
    # sits at its all-real prior for thousands of steps (README, "ELECTRA at runlocal scale").
    config.model.initializer_range = 0.1
    # runlocal's lr 1e-3 (3e-3 let the generator outrun the discriminator: AUC 0.50 at step 3000).
    config.data.max_predictions_per_seq = int((mask + 0.005) * config.data.max_seq_length)
  return config
