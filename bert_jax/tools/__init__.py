"""Command-line tools over the library: ablate (masking ablations, pretrain -> fine-tune grids),
compare (two fine-tuning runs), infer (fill-mask, embeddings, word similarity), convert
(HF <-> bert_jax checkpoints). Each is `python -m bert_jax.tools.<name>` and a bert-jax-* entry point."""
