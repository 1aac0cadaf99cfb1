"""Continued pretraining of a released checkpoint with one flag (issue 27).

Stand-in checkpoints are built with transformers in the test (small, random, perturbed), so
nothing downloads: `--config.init.hf_checkpoint=<dir>` on a pretraining config takes the model's
architecture and tokenizer from the directory (point 1), reads BERT checkpoints typed roberta or
untyped and ERNIE's as BERT and refuses a real RoBERTa (point 2), starts from exactly the
checkpoint's model (point 3), and refuses bad input in one line before anything is built (point 5).
"""

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from bert_jax import configs  # noqa: E402
from bert_jax import models  # noqa: E402
from bert_jax import starts  # noqa: E402
from bert_jax.interop import hf  # noqa: E402
from bert_jax.tasks import pretraining  # noqa: E402

WORDS = ("the a of and to in is was for on with as by at from that this it be are an or which his "
         "river city music game film war team school year world house water light stone king road "
         "small large early late first second new old long short high north south east west").split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB = list(dict.fromkeys(SPECIALS + WORDS + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
                           + list("abcdefghijklmnopqrstuvwxyz.,")))
SMALL = dict(hidden_size=24, num_hidden_layers=2, num_attention_heads=3, intermediate_size=40,
             max_position_embeddings=64, layer_norm_eps=1e-7, hidden_act="gelu_new")


def perturbed(model):
  torch.manual_seed(0)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(torch.randn_like(p) * 0.1)
  return model.eval()


def write_vocab(path, lower=True, pieces=VOCAB):
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "vocab.txt"), "w", encoding="utf-8") as f:
    f.write("\n".join(pieces) + "\n")
  with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
    json.dump({"do_lower_case": lower, "tokenizer_class": "BertTokenizer"}, f)


def bert_checkpoint(path, cls="BertForMaskedLM", lower=True, **overrides):
  """A stand-in HF BERT directory: weights of `cls` and a WordPiece vocab.txt."""
  cfg = transformers.BertConfig(vocab_size=len(VOCAB), **dict(SMALL, **overrides))
  model = perturbed(getattr(transformers, cls)(cfg))
  model.save_pretrained(str(path))
  write_vocab(str(path), lower)
  return model


def edit_config(path, **changes):
  file = os.path.join(path, "config.json")
  with open(file) as f:
    c = json.load(f)
  for k, v in changes.items():
    if v is None:
      c.pop(k, None)
    else:
      c[k] = v
  with open(file, "w") as f:
    json.dump(c, f)


def pretraining_config(path, arg="tiny,runlocal"):
  config = configs.load(f"bert.py:{arg}")
  config.init.hf_checkpoint = str(path)
  return config


@pytest.fixture(autouse=True)
def _no_command_line_keys():
  starts.COMMAND_LINE_KEYS.clear()
  yield
  starts.COMMAND_LINE_KEYS.clear()


# ---------------------------------------------------------------------------------------------
# Point 1: one flag.
# ---------------------------------------------------------------------------------------------
def test_one_flag_sets_architecture_and_tokenizer(tmp_path, capsys):
  bert_checkpoint(tmp_path / "ckpt", lower=False)
  config = pretraining_config(tmp_path / "ckpt")
  assert config.model.hidden_size == 128 and config.model.vocab_size == 4000  # runlocal's
  config.model.hidden_dropout_prob = 0.3
  pretraining.Pretraining.configure(config)
  m = config.model
  assert (m.vocab_size, m.hidden_size, m.num_hidden_layers, m.num_attention_heads, m.intermediate_size,
          m.max_position_embeddings, m.type_vocab_size, m.hidden_act) == (len(VOCAB), 24, 2, 3, 40, 64, 2, "gelu_new")
  assert m.layer_norm_eps == pytest.approx(1e-7)
  assert m.hidden_dropout_prob == 0.3  # training-only keys stay this run's
  tc = config.data.tokenizer
  assert (tc.kind, tc.path, tc.lower_case) == ("wordpiece", str(tmp_path / "ckpt" / "vocab.txt"), False)
  line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("Continued pretraining")]
  assert len(line) == 1, line
  assert f"bert 2 x 24 (3 heads, vocab {len(VOCAB)})" in line[0] and "WordPiece vocab.txt, cased" in line[0]
  assert "loaded: encoder, MLM head; fresh: pooler, NSP head (the checkpoint has none)" in line[0]
  # Without the flag nothing changes.
  plain = configs.load("bert.py:tiny,runlocal")
  before = plain.to_json()
  pretraining.Pretraining.configure(plain)
  assert plain.to_json() == before


def test_pretraining_checkpoint_loads_both_heads(tmp_path, capsys):
  bert_checkpoint(tmp_path / "ckpt", cls="BertForPreTraining")
  pretraining.Pretraining.configure(pretraining_config(tmp_path / "ckpt"))
  assert "loaded: encoder, MLM head, pooler, NSP head." in capsys.readouterr().out
  config = pretraining_config(tmp_path / "ckpt")
  config.objective.sentence_loss = "none"
  pretraining.Pretraining.configure(config)
  assert "loaded: encoder, MLM head." in capsys.readouterr().out


def test_contradicting_model_flag_refused_training_keys_free(tmp_path):
  bert_checkpoint(tmp_path / "ckpt")
  config = pretraining_config(tmp_path / "ckpt")
  config.model.hidden_size = 64
  starts.COMMAND_LINE_KEYS.update({"model.hidden_size", "model.hidden_dropout_prob", "model.dtype"})
  with pytest.raises(ValueError, match=r"--config.model.hidden_size=64 contradicts config.init.hf_checkpoint="
                     r".*whose hidden_size is 24"):
    pretraining.Pretraining.configure(config)
  config = pretraining_config(tmp_path / "ckpt")
  config.model.hidden_size = 24  # the checkpoint's own value is no contradiction
  config.model.update(hidden_dropout_prob=0.0, dtype="bfloat16")
  pretraining.Pretraining.configure(config)
  assert (config.model.hidden_dropout_prob, config.model.dtype) == (0.0, "bfloat16")


def test_command_line_keys_from_main():
  from bert_jax import cli  # pylint: disable=g-import-not-at-top  # what main passes on (main defines flags)
  assert cli.command_line_keys(["--config=bert.py:tiny", "--config.model.hidden_size=3", "--workdir=x",
                                 "--config.data.tokenizer.path", "v.txt"]) == {"model.hidden_size",
                                                                                "data.tokenizer.path"}


def test_family_mismatch_refused(tmp_path):
  bert_checkpoint(tmp_path / "ckpt")
  config = configs.load("albert.py:base,runlocal")
  config.init.hf_checkpoint = str(tmp_path / "ckpt")
  with pytest.raises(ValueError, match="holds a bert model but config.model.family='albert'"):
    pretraining.Pretraining.configure(config)


# ---------------------------------------------------------------------------------------------
# Point 2: the quirks.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_type", ["roberta", None])
def test_bert_typed_roberta_or_untyped_read_as_bert(tmp_path, capsys, model_type):
  bert_checkpoint(tmp_path / "ckpt")
  edit_config(tmp_path / "ckpt", model_type=model_type)
  config = pretraining_config(tmp_path / "ckpt")
  pretraining.Pretraining.configure(config)
  out = capsys.readouterr().out.splitlines()
  said = "says model_type='roberta'" if model_type else "has no model_type"
  notes = [x for x in out if x.startswith("Note:")]
  assert len(notes) == 1 and said in notes[0] and "read as BERT" in notes[0], out
  assert config.model.hidden_size == 24
  cfg, params = hf.load_hf_checkpoint(str(tmp_path / "ckpt"))
  assert cfg["family"] == "bert" and "mlm" in params


def test_real_roberta_refused(tmp_path):
  cfg = transformers.RobertaConfig(vocab_size=60, **SMALL)
  transformers.RobertaForMaskedLM(cfg).save_pretrained(str(tmp_path / "rob"))
  (tmp_path / "rob" / "vocab.json").write_text(json.dumps({"<s>": 0}))
  (tmp_path / "rob" / "merges.txt").write_text("#version: 0.2\n")
  with pytest.raises(ValueError, match=r"holds a RoBERTa model \(roberta.\* tensors, a byte-level BPE "
                     r"vocab.json \+ merges.txt\)"):
    pretraining.Pretraining.configure(pretraining_config(tmp_path / "rob"))


@pytest.mark.parametrize("use_task_id", [True, False])
def test_ernie_read_as_bert_matches_transformers(tmp_path, capsys, use_task_id):
  cfg = transformers.ErnieConfig(vocab_size=len(VOCAB), use_task_id=use_task_id, task_type_vocab_size=3,
                                 attn_implementation="eager", **SMALL)
  ernie = perturbed(transformers.ErnieForMaskedLM(cfg))
  ernie.save_pretrained(str(tmp_path / "ernie"))
  write_vocab(str(tmp_path / "ernie"))
  ours_cfg, params, info = hf.import_hf(str(tmp_path / "ernie"))
  assert ours_cfg.family == "bert" and not info["unused"], info
  assert "is an ERNIE checkpoint: read as BERT" in capsys.readouterr().out
  rng = np.random.default_rng(0)
  ids = rng.integers(5, len(VOCAB), (2, 12)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1, 9:] = 0
  tt = np.zeros_like(ids)
  tt[:, 6:] = 1
  with torch.no_grad():
    theirs = ernie(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
                   token_type_ids=torch.tensor(tt, dtype=torch.long)).logits.numpy()
  ours = models.build(ours_cfg).apply({"params": params}, input_ids=ids, input_mask=mask, token_type_ids=tt,
                                      masked_lm_positions=None)["mlm_logits"]
  diff = np.abs(np.asarray(ours) - theirs) * mask[..., None]
  assert diff.max() < 1e-5, diff.max()
  # And through the one flag.
  config = pretraining_config(tmp_path / "ernie")
  pretraining.Pretraining.configure(config)
  assert config.model.hidden_size == 24 and config.model.vocab_size == len(VOCAB)


# ---------------------------------------------------------------------------------------------
# Point 5: bad input, one line each, before anything is built.
# ---------------------------------------------------------------------------------------------
def test_directory_without_config_or_tokenizer(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="has no config.json: not a HuggingFace checkpoint directory"):
    pretraining.Pretraining.configure(pretraining_config(tmp_path / "empty"))
  bert_checkpoint(tmp_path / "ckpt")
  for name in ("vocab.txt", "tokenizer_config.json"):
    os.remove(tmp_path / "ckpt" / name)
  with pytest.raises(FileNotFoundError, match=r"has no tokenizer file \(vocab.txt, spiece.model or tokenizer.json\)"):
    pretraining.Pretraining.configure(pretraining_config(tmp_path / "ckpt"))


def test_vocab_size_differs_from_embedding_rows(tmp_path):
  bert_checkpoint(tmp_path / "ckpt")
  write_vocab(str(tmp_path / "ckpt"), pieces=VOCAB + ["extra1", "extra2"])
  with pytest.raises(ValueError, match=rf"vocab.txt has {len(VOCAB) + 2} ids but config.init.hf_checkpoint=.* "
                     rf"has {len(VOCAB)} word-embedding rows"):
    pretraining.Pretraining.configure(pretraining_config(tmp_path / "ckpt"))


def test_missing_encoder_tensors_named(tmp_path):
  from safetensors.numpy import load_file, save_file  # pylint: disable=g-import-not-at-top
  bert_checkpoint(tmp_path / "ckpt")
  file = str(tmp_path / "ckpt" / "model.safetensors")
  sd = load_file(file)
  gone = [k for k in sd if k.startswith("bert.encoder.layer.1.")]
  save_file({k: v for k, v in sd.items() if k not in gone}, file, metadata={"format": "pt"})
  with pytest.raises(ValueError, match=r"lacks 16 encoder tensors \(bert.encoder.layer.1.attention.self.query"
                     r".weight, bert.encoder.layer.1.attention.self.query.bias, .*, \.\.\.\)"):
    pretraining.Pretraining.configure(pretraining_config(tmp_path / "ckpt"))


def _text_corpus(path, lines):
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  return str(path)


def test_mostly_unk_corpus_refused_unless_allowed(tmp_path):
  from bert_jax.data import tokenizers  # pylint: disable=g-import-not-at-top
  bert_checkpoint(tmp_path / "ckpt")
  config = pretraining_config(tmp_path / "ckpt")
  pretraining.Pretraining.configure(config)
  config.data.source = "text"
  config.data.text_glob = _text_corpus(tmp_path / "zh.txt", ["今天天气很好，我们去公园散步。", "",
                                                              "这家酒店的服务非常好。", ""] * 20)
  tok = tokenizers.load(config.data.tokenizer.path, config.data.tokenizer.kind, config.data.tokenizer.lower_case)
  share, n = pretraining.unk_share(config.data, tok)
  assert share > 0.5 and n > 0
  with pytest.raises(ValueError, match=r"reads \d+\.\d% of the corpus's tokens as \[UNK\].*raise "
                     "config.data.max_unk_share"):
    pretraining.check_unk_share(config, tok)
  config.data.max_unk_share = 1.0  # the key that allows it
  pretraining.check_unk_share(config, tok)
  # An English corpus under the English vocabulary passes.
  config.data.max_unk_share = 0.5
  config.data.text_glob = _text_corpus(tmp_path / "en.txt", ["the river of the city was long and the road high.",
                                                              "", "a small king is in the house.", ""] * 20)
  assert pretraining.unk_share(config.data, tok)[0] < 0.05
  pretraining.check_unk_share(config, tok)


# ---------------------------------------------------------------------------------------------
# Point 3: the step-0 model is the checkpoint's.
# ---------------------------------------------------------------------------------------------
def _english_corpus(path, docs=60, seed=0):
  rng = np.random.default_rng(seed)
  lines = []
  for _ in range(docs):
    for _ in range(4):
      lines.append(" ".join(rng.choice(WORDS, rng.integers(6, 14))) + ".")
    lines.append("")
  return _text_corpus(path, lines)


@pytest.mark.slow  # ~95 s on 2 cores: a corpus, a tokenizer and the train step compiled over 8 devices
def test_step_zero_model_is_the_checkpoints(tmp_path, capsys):
  """A BertForMaskedLM stand-in continued with the one flag, trained one step (the first step of a
  warmup has learning rate 0: the params stay the checkpoint's bit for bit): the loop's eval accuracy and every prediction
  on its masked rows equal transformers' BertForMaskedLM on the same rows."""
  from bert_jax import train  # pylint: disable=g-import-not-at-top
  from bert_jax.tasks import registry  # pylint: disable=g-import-not-at-top
  hf_model = bert_checkpoint(tmp_path / "ckpt", attn_implementation="eager")
  config = pretraining_config(tmp_path / "ckpt")
  config.data.update(source="text", text_glob=_english_corpus(tmp_path / "corpus.txt"), eval_fraction=0.2,
                     max_seq_length=32, max_predictions_per_seq=5)
  config.train.update(num_steps=1, batch_size=16)
  config.optimizer.update(learning_rate=1e-3, warmup_steps=1)
  config.eval.update(every_steps=1, num_batches=2)
  config.checkpoint.update(every_steps=1, async_save=False)
  config.log.every_steps = 1
  starts.COMMAND_LINE_KEYS.update({"data.max_seq_length", "train.num_steps"})
  summary = train.train_and_evaluate(config, str(tmp_path / "run"))
  out = capsys.readouterr().out
  assert "loaded: encoder, MLM head; fresh: pooler, NSP head (the checkpoint has none)" in out
  assert config.model.hidden_size == 24
  params = summary["state"]["params"]
  task = registry.get_task(config)
  model = task.model
  correct = total = 0
  for batch in task.inputs(str(tmp_path / "run"), 0)[1]():
    ours = np.asarray(model.apply({"params": params}, **models.model_inputs(model, batch),
                                  deterministic=True)["mlm_logits"])
    with torch.no_grad():
      logits = hf_model(input_ids=torch.tensor(batch["input_ids"], dtype=torch.long),
                        attention_mask=torch.tensor(batch["input_mask"], dtype=torch.long),
                        token_type_ids=torch.tensor(batch["token_type_ids"], dtype=torch.long)).logits.numpy()
    theirs = np.take_along_axis(logits, batch["masked_lm_positions"][..., None].astype(np.int64), axis=1)
    w = batch["masked_lm_weights"] > 0
    assert np.abs(ours - theirs)[w].max() < 1e-4
    assert np.array_equal(ours.argmax(-1)[w], theirs.argmax(-1)[w])
    correct += int((theirs.argmax(-1) == batch["masked_lm_ids"])[w].sum())
    total += int(w.sum())
  assert total > 0
  assert summary["eval"]["mlm_accuracy"] == pytest.approx(correct / total, abs=1e-6)


@pytest.mark.slow  # a fresh process (~20 s of imports)
def test_command_line_contradiction_is_one_line(tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  bert_checkpoint(tmp_path / "ckpt")
  out = subprocess.run([sys.executable, "-m", "bert_jax.main", "--config=bert.py:tiny,runlocal",
                        f"--workdir={tmp_path / 'run'}", f"--config.init.hf_checkpoint={tmp_path / 'ckpt'}",
                        "--config.model.num_hidden_layers=4", "--config.model.hidden_dropout_prob=0.0"],
                       capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode == 2, out.stderr
  lines = [x for x in out.stderr.splitlines() if "error:" in x]
  assert len(lines) == 1 and "--config.model.num_hidden_layers=4 contradicts" in lines[0], out.stderr
  assert "whose num_hidden_layers is 2" in lines[0]
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_tokenizer_json_only_checkpoint_tokenizer(tmp_path):
  """A directory with only tokenizer.json: the tokenizer comes from it (kind tokenizer_json) and
  encodes as the vocab.txt it was made from."""
  from bert_jax.data import tokenizers  # pylint: disable=g-import-not-at-top
  bert_checkpoint(tmp_path / "ckpt")
  from tokenizers.implementations import BertWordPieceTokenizer  # pylint: disable=g-import-not-at-top
  BertWordPieceTokenizer(str(tmp_path / "ckpt" / "vocab.txt"), lowercase=True).save(
      str(tmp_path / "ckpt" / "tokenizer.json"))
  for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
    if (tmp_path / "ckpt" / name).exists():
      os.remove(tmp_path / "ckpt" / name)
  file, kind, _ = hf.tokenizer_file(str(tmp_path / "ckpt"))
  assert kind == tokenizers.JSON_KIND and hf.tokenizer_size(file, kind) == len(VOCAB)
  tok = tokenizers.load(file, kind)
  wp = tokenizers.load(str(_vocab_dir(tmp_path) / "vocab.txt"), "wordpiece")
  text = "The river of the city was Long, and the Road high."
  assert tok.encode(text) == wp.encode(text) and tok.vocab_size == wp.vocab_size
  assert np.array_equal(tok.is_word_start, wp.is_word_start) and tok.mask_id == wp.mask_id


def _vocab_dir(tmp_path):
  write_vocab(str(tmp_path / "vocab"))
  return tmp_path / "vocab"


# ---------------------------------------------------------------------------------------------
# The Chinese path (point 4 b): a stand-in with the real bert-base-chinese vocabulary.
# ---------------------------------------------------------------------------------------------
def _chinese_checkpoint(tmp_path):
  from conftest import shared_path  # pylint: disable=g-import-not-at-top
  vocab = shared_path("weights", "bert-base-chinese-vocab", "vocab.txt")
  corpus = shared_path("data", "chinese", "ChnSentiCorp")
  pieces = vocab.read_text(encoding="utf-8").rstrip("\n").split("\n")  # not splitlines: \x85 and kin are pieces
  cfg = transformers.BertConfig(vocab_size=len(pieces), **SMALL)
  perturbed(transformers.BertForMaskedLM(cfg)).save_pretrained(str(tmp_path / "zh_ckpt"))
  write_vocab(str(tmp_path / "zh_ckpt"), pieces=pieces)
  return tmp_path / "zh_ckpt", corpus


def _reviews(corpus, n):
  rows = [line.split("\t") for line in (corpus / "train.tsv").read_text(encoding="utf-8").splitlines()]
  return [r for r in rows if len(r) == 2 and r[0].strip()][:n]


def test_chinese_checkpoint_covers_chnsenticorp(tmp_path):
  from bert_jax.data import tokenizers  # pylint: disable=g-import-not-at-top
  ckpt, corpus = _chinese_checkpoint(tmp_path)
  config = pretraining_config(ckpt)
  config.data.update(source="text", text_format="document_per_line", masking="whole_word")
  config.data.tokenizer.word_segmenter = "jieba"
  pretraining.Pretraining.configure(config)
  assert config.model.vocab_size == 21128 and config.data.tokenizer.kind == "wordpiece"
  config.data.text_glob = _text_corpus(tmp_path / "zh.txt", [t for t, _ in _reviews(corpus, 300)])
  tc = config.data.tokenizer
  tok = tokenizers.load(tc.path, tc.kind, tc.lower_case, tc.word_segmenter)
  share, n = pretraining.unk_share(config.data, tok)
  assert n > 10_000 and share < 0.01, share
  pretraining.check_unk_share(config, tok)
  # Whole-word masking sees jieba's words: some characters continue a word.
  ids = tok.encode_for_masking(["这家酒店的服务非常好。"])[0]
  assert 0 < int((~tok.word_starts(np.asarray(ids))).sum()) < len(ids)


@pytest.mark.slow  # two runs: ~3 minutes on 2 cores
def test_chinese_continued_then_finetuned(tmp_path):
  """The Chinese path end to end: the stand-in continued with whole-word masking over jieba
  words on ChnSentiCorp text, then fine-tuned on ChnSentiCorp labels from that workdir."""
  from bert_jax import finetune, train  # pylint: disable=g-import-not-at-top,g-multiple-import
  ckpt, corpus = _chinese_checkpoint(tmp_path)
  reviews = _reviews(corpus, 600)
  config = pretraining_config(ckpt)
  config.data.update(source="text", text_format="document_per_line", masking="whole_word", eval_fraction=0.1,
                     text_glob=_text_corpus(tmp_path / "zh.txt", [t for t, _ in reviews]), max_seq_length=64)
  config.data.tokenizer.word_segmenter = "jieba"
  config.train.update(num_steps=10, batch_size=16)
  config.eval.update(every_steps=10, num_batches=2)
  config.checkpoint.update(every_steps=10, async_save=False)
  config.optimizer.warmup_steps = 2
  summary = train.train_and_evaluate(config, str(tmp_path / "zh_dapt"))
  assert summary["status"] == "done" and np.isfinite(summary["eval"]["mlm_loss"])
  data = tmp_path / "zh_sentiment_data"
  data.mkdir()
  (data / "train.tsv").write_text("".join(f"{t}\t{y}\n" for t, y in reviews[:400]), encoding="utf-8")
  (data / "dev.tsv").write_text("".join(f"{t}\t{y}\n" for t, y in reviews[400:600]), encoding="utf-8")
  (data / "labels.txt").write_text("negative\npositive\n")
  ft = configs.load("finetune.py:tsv")
  ft.init.workdir = str(tmp_path / "zh_dapt")
  ft.finetune.update(data_dir=str(data), epochs=1.0)
  ft.data.max_seq_length = 64
  ft.train.batch_size = 16
  ft.checkpoint.async_save = False
  results = finetune.run(ft, str(tmp_path / "zh_sentiment"))
  assert results and (tmp_path / "zh_sentiment" / "results.json").exists()
  seed = json.loads((tmp_path / "zh_sentiment" / "seed_0" / "config.json").read_text())
  # The fine-tuned model is the continued one: its shape, vocabulary and segmenter.
  assert (seed["model"]["hidden_size"], seed["model"]["vocab_size"]) == (24, 21128)
  assert seed["data"]["tokenizer"]["path"].endswith("vocab.txt") and seed["data"]["tokenizer"]["word_segmenter"] == "jieba"


def test_run_directory_is_not_a_checkpoint(tmp_path):
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / "config.json").write_text(configs.load("bert.py:tiny,runlocal").to_json())
  with pytest.raises(ValueError, match="is a bert_jax run directory, not a checkpoint directory"):
    pretraining.Pretraining.configure(pretraining_config(tmp_path / "run"))


def test_electra_discriminator_with_and_without_generator(tmp_path, capsys):
  cfg = transformers.ElectraConfig(vocab_size=len(VOCAB), embedding_size=16, **SMALL)
  perturbed(transformers.ElectraForPreTraining(cfg)).save_pretrained(str(tmp_path / "electra"))
  write_vocab(str(tmp_path / "electra"))
  config = configs.load("electra.py:small,runlocal")
  config.init.hf_checkpoint = str(tmp_path / "electra")
  generator_keys = {k: config.model[k] for k in starts.GENERATOR_KEYS}
  pretraining.Pretraining.configure(config)
  assert (config.model.hidden_size, config.model.embedding_size) == (24, 16)
  assert {k: config.model[k] for k in starts.GENERATOR_KEYS} == generator_keys  # no generator: the config's
  assert "loaded: encoder, discriminator head; fresh: generator (the checkpoint has none)" in capsys.readouterr().out
  gen = transformers.ElectraConfig(vocab_size=len(VOCAB), embedding_size=16, **dict(SMALL, hidden_size=12,
                                                                                   num_attention_heads=3,
                                                                                   intermediate_size=20))
  perturbed(transformers.ElectraForMaskedLM(gen)).save_pretrained(str(tmp_path / "electra" / "generator"))
  config = configs.load("electra.py:small,runlocal")
  config.init.hf_checkpoint = str(tmp_path / "electra")
  pretraining.Pretraining.configure(config)
  assert (config.model.generator_hidden_size, config.model.generator_num_attention_heads) == (0.5, 3)
  assert "loaded: encoder, discriminator head, generator." in capsys.readouterr().out


def test_the_benchmarks_standin_is_a_checkpoint_transformers_and_the_one_flag_read(tmp_path, capsys):
  """bert_jax.benchmarks.chinese_wwm --standin_vocab: a random 2 x 128 BERT with the given
  vocabulary, saved as an HF directory that transformers loads whole and the one flag continues."""
  from bert_jax.benchmarks import chinese_wwm  # pylint: disable=g-import-not-at-top
  (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
  out = chinese_wwm.standin_checkpoint(str(tmp_path / "vocab.txt"), str(tmp_path / "standin"))
  model, info = transformers.BertForPreTraining.from_pretrained(out, output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  assert (model.config.vocab_size, model.config.hidden_size, model.config.num_hidden_layers) == (len(VOCAB), 128, 2)
  config = pretraining_config(out)
  pretraining.Pretraining.configure(config)
  assert (config.model.vocab_size, config.model.hidden_size) == (len(VOCAB), 128)
  assert config.data.tokenizer.path == os.path.join(out, "vocab.txt") and config.data.tokenizer.kind == "wordpiece"
  assert "loaded: encoder, MLM head" in capsys.readouterr().out
