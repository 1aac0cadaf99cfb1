"""Parity with transformers (PyTorch, fp32) and HF import/export round trips.

Random HF models of small, odd sizes (3 or 5 heads, vocab 99, intermediate 37), every
parameter perturbed so LayerNorm scales/biases are not the trivial 1/0, inputs with padding
and two segments. Nothing downloads: models are built in-process from configs.
"""

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from bert_jax import models  # noqa: E402
from bert_jax.interop import hf  # noqa: E402

ATOL = 1e-4
B, L, P, V = 2, 11, 3, 99


def perturbed(model):
  torch.manual_seed(0)
  with torch.no_grad():
    for p in model.parameters():  # tied tables appear once
      p.add_(torch.randn_like(p) * 0.1)
  return model.eval()


def make_inputs(seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, V, (B, L)).astype(np.int32)
  mask = np.ones((B, L), np.int32)
  mask[1, 7:] = 0                       # padding in row 1
  ids[1, 7:] = 0
  tt = np.zeros((B, L), np.int32)
  tt[:, 5:] = 1                         # two segments
  tt[1, 7:] = 0
  pos = rng.integers(0, 7, (B, P)).astype(np.int32)
  return dict(input_ids=ids, input_mask=mask, token_type_ids=tt, masked_lm_positions=pos)


def torch_inputs(x):
  return dict(input_ids=torch.tensor(x["input_ids"], dtype=torch.long),
              attention_mask=torch.tensor(x["input_mask"], dtype=torch.long),
              token_type_ids=torch.tensor(x["token_type_ids"], dtype=torch.long))


def gather(logits, pos):
  return np.take_along_axis(logits, pos[..., None], axis=1)


def close(ours, theirs, mask=None):
  ours, theirs = np.asarray(ours, np.float32), np.asarray(theirs, np.float32)
  assert ours.shape == theirs.shape
  diff = np.abs(ours - theirs)
  if mask is not None:
    diff = diff * mask[..., None]
  assert diff.max() < ATOL, diff.max()
  return diff.max()


def check_round_trip(cfg, params, hf_dirs, out_dir):
  """Export what we imported: every HF parameter tensor comes back bit-identical."""
  written = hf.export_hf(cfg, params, str(out_dir))
  for src, dst in zip(hf_dirs, written):
    a, b = hf.read_state_dict(src), hf.read_state_dict(dst)
    for k, v in a.items():
      if k.endswith(hf._TIED_OR_BUFFERS):  # pylint: disable=protected-access
        continue
      assert k in b, f"{k} not exported"
      assert b[k].dtype == v.dtype and np.array_equal(b[k], v), k
  return written


BERT_CFG = dict(vocab_size=V, hidden_size=36, num_hidden_layers=2, num_attention_heads=3,
                intermediate_size=37, max_position_embeddings=40, attn_implementation="eager")


@pytest.mark.parametrize("act", ["gelu", "gelu_new"])
def test_bert_pretraining_parity_round_trip_and_export(tmp_path, act):
  ref = perturbed(transformers.BertForPreTraining(
      transformers.BertConfig(**BERT_CFG, hidden_act=act)))
  ref.save_pretrained(tmp_path / "hf")
  cfg, params, info = hf.import_hf(str(tmp_path / "hf"))
  assert info["initialized"] == [] and info["unused"] == []
  x = make_inputs()
  with torch.no_grad():
    o = ref(**torch_inputs(x), output_hidden_states=True)
  ours = models.build(cfg).apply({"params": params}, **x)
  close(ours["sequence_output"], o.hidden_states[-1])
  close(ours["mlm_logits"], gather(o.prediction_logits.numpy(), x["masked_lm_positions"]))
  close(ours["sentence_logits"], o.seq_relationship_logits)
  # Pooled output through the backbone class.
  with torch.no_grad():
    pooled = ref.bert(**torch_inputs(x)).pooler_output
  close(ours["pooled_output"], pooled)

  (out,) = check_round_trip(cfg, params, [str(tmp_path / "hf")], tmp_path / "export")
  back, loading = transformers.BertForPreTraining.from_pretrained(out, output_loading_info=True)
  assert not loading["missing_keys"] and not loading["unexpected_keys"], loading
  with torch.no_grad():
    o2 = back.eval()(**torch_inputs(x))
  close(ours["mlm_logits"], gather(o2.prediction_logits.numpy(), x["masked_lm_positions"]))
  close(ours["sentence_logits"], o2.seq_relationship_logits)


def test_bert_masked_lm_and_bare_model_import(tmp_path):
  hfc = transformers.BertConfig(**BERT_CFG)
  mlm = perturbed(transformers.BertForMaskedLM(hfc))
  mlm.save_pretrained(tmp_path / "mlm")
  cfg, params, info = hf.import_hf(str(tmp_path / "mlm"))
  # No pooler and no NSP head in a BertForMaskedLM: freshly initialised and reported.
  assert info["initialized"] == ["bert/encoder/pooler/bias", "bert/encoder/pooler/kernel",
                                 "sentence/dense/bias", "sentence/dense/kernel"]
  x = make_inputs(1)
  with torch.no_grad():
    logits = mlm(**torch_inputs(x)).logits.numpy()
  model = models.build(cfg)
  close(model.apply({"params": params}, **x)["mlm_logits"],
        gather(logits, x["masked_lm_positions"]))
  # All positions (fill-mask): masked_lm_positions=None gives [B, L, V].
  full = model.apply({"params": params}, **dict(x, masked_lm_positions=None))["mlm_logits"]
  close(full, logits)
  # Without pooler (no sentence task) the export is a BertForMaskedLM with nothing missing.
  nopool = dataclasses.replace(cfg, use_pooler=False)
  trimmed = {"bert": {"embeddings": params["bert"]["embeddings"], "encoder": {
      k: v for k, v in params["bert"]["encoder"].items() if k != "pooler"}}, "mlm": params["mlm"]}
  (out,) = hf.export_hf(nopool, trimmed, str(tmp_path / "nopool"))
  back, loading = transformers.BertForMaskedLM.from_pretrained(out, output_loading_info=True)
  assert not loading["missing_keys"] and not loading["unexpected_keys"], loading
  with torch.no_grad():
    close(back.eval()(**torch_inputs(x)).logits, logits)

  bare = perturbed(transformers.BertModel(hfc))
  bare.save_pretrained(tmp_path / "bare")
  _, loaded = hf.load_hf_checkpoint(str(tmp_path / "bare"))
  assert set(loaded) == {"bert"}  # the warm-start loader returns only what is there
  np.testing.assert_array_equal(
      loaded["bert"]["embeddings"]["word_embeddings"]["embedding"],
      bare.embeddings.word_embeddings.weight.detach().numpy())
  # Old-style pytorch_model.bin (transformers v5 only writes safetensors).
  (tmp_path / "bin").mkdir()
  torch.save(bare.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
  bare.config.to_json_file(tmp_path / "bin" / "config.json")
  _, from_bin = hf.load_hf_checkpoint(str(tmp_path / "bin"))
  flat = lambda t: sorted(hf._flatten(t).items())  # noqa: E731  pylint: disable=protected-access
  for a, b in zip(flat(loaded), flat(from_bin)):
    assert a[0] == b[0] and np.array_equal(a[1], b[1])


@pytest.mark.parametrize("layers,groups,inner", [(3, 1, 1), (4, 2, 2), (2, 2, 1)])
def test_albert_sharing_layouts_parity(tmp_path, layers, groups, inner):
  hfc = transformers.AlbertConfig(
      vocab_size=V, embedding_size=10, hidden_size=30, num_hidden_layers=layers,
      num_attention_heads=5, intermediate_size=37, num_hidden_groups=groups,
      inner_group_num=inner, hidden_act="gelu_new", max_position_embeddings=40,
      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, attn_implementation="eager")
  ref = perturbed(transformers.AlbertForPreTraining(hfc))
  ref.save_pretrained(tmp_path / "hf")
  cfg, params, info = hf.import_hf(str(tmp_path / "hf"))
  assert info["initialized"] == [] and info["unused"] == []
  assert (cfg.num_groups, cfg.inner_group_num) == (groups, inner)
  x = make_inputs(2)
  with torch.no_grad():
    o = ref(**torch_inputs(x), output_hidden_states=True)
    pooled = ref.albert(**torch_inputs(x)).pooler_output
  ours = models.build(cfg).apply({"params": params}, **x)
  close(ours["sequence_output"], o.hidden_states[-1])
  close(ours["pooled_output"], pooled)
  close(ours["mlm_logits"], gather(o.prediction_logits.numpy(), x["masked_lm_positions"]))
  close(ours["sentence_logits"], o.sop_logits)
  if (layers, groups, inner) == (4, 2, 2):
    (out,) = check_round_trip(cfg, params, [str(tmp_path / "hf")], tmp_path / "export")
    back = transformers.AlbertForPreTraining.from_pretrained(out).eval()
    with torch.no_grad():
      close(ours["sentence_logits"], back(**torch_inputs(x)).sop_logits)


def electra_hf_configs(cfg):
  """HF configs of our ELECTRA config's discriminator and generator."""
  kw = dict(attn_implementation="eager")
  disc = transformers.ElectraConfig(**hf.config_to_hf(cfg, "electra"), **kw)
  gen = transformers.ElectraConfig(**hf.config_to_hf(cfg, "generator"), **kw)
  return disc, gen


ELECTRA = dict(family="electra", vocab_size=V, embedding_size=10, hidden_size=30,
               num_hidden_layers=2, num_attention_heads=5, intermediate_size=37,
               max_position_embeddings=40, use_pooler=False, generator_hidden_size=0.4,
               generator_layers=0.5, generator_num_attention_heads=3,
               generator_intermediate_size=19)


def test_electra_generator_discriminator_parity(tmp_path):
  cfg = models.validate(ELECTRA)
  disc_cfg, gen_cfg = electra_hf_configs(cfg)
  assert (gen_cfg.hidden_size, gen_cfg.num_hidden_layers) == (12, 1)
  disc = perturbed(transformers.ElectraForPreTraining(disc_cfg))
  gen = perturbed(transformers.ElectraForMaskedLM(gen_cfg))
  # Shared embeddings, as in a real ELECTRA pair.
  gen.electra.embeddings.load_state_dict(disc.electra.embeddings.state_dict())
  disc.save_pretrained(tmp_path / "disc")
  gen.save_pretrained(tmp_path / "disc" / "generator")  # found automatically
  cfg2, params, info = hf.import_hf(str(tmp_path / "disc"))
  assert cfg2 == cfg and info["initialized"] == [] and info["unused"] == []
  x = make_inputs(3)
  model = models.build(cfg)
  with torch.no_grad():
    d_logits = disc(**torch_inputs(x)).logits
    d_hidden = disc.electra(**torch_inputs(x)).last_hidden_state
    g_logits = gen(**torch_inputs(x)).logits.numpy()
  ours = model.apply({"params": params}, **x)
  close(ours["disc_logits"], d_logits)
  close(ours["sequence_output"], d_hidden)
  close(ours["mlm_logits"], gather(g_logits, x["masked_lm_positions"]))
  gen_only = model.apply({"params": params}, **x, method=model.generator)
  close(gen_only, gather(g_logits, x["masked_lm_positions"]))
  check_round_trip(cfg, params, [str(tmp_path / "disc"), str(tmp_path / "disc" / "generator")],
                   tmp_path / "export")


def test_electra_objective_loss_and_gradients_match_pytorch(tmp_path):
  """Our generator MLM + 50 x replaced-token-detection loss, and its gradient for every
  parameter, equal the same loss written in PyTorch over HF's ElectraForMaskedLM and
  ElectraForPreTraining (autograd; the shared embedding tables get both towers' gradients)."""
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from bert_jax.tasks import pretraining  # pylint: disable=g-import-not-at-top
  cfg = models.validate(ELECTRA)
  disc_cfg, gen_cfg = electra_hf_configs(cfg)
  disc = perturbed(transformers.ElectraForPreTraining(disc_cfg))
  gen = perturbed(transformers.ElectraForMaskedLM(gen_cfg))
  gen.electra.embeddings.load_state_dict(disc.electra.embeddings.state_dict())
  disc.save_pretrained(tmp_path / "disc")
  gen.save_pretrained(tmp_path / "disc" / "generator")
  _, params, _ = hf.import_hf(str(tmp_path / "disc"))
  model = models.build(cfg)
  rng = np.random.default_rng(5)
  batch = make_inputs(5)
  batch["masked_lm_weights"] = np.array([[1, 1, 1], [1, 1, 0]], np.float32)  # one padding slot
  batch["masked_lm_positions"] = np.array([[1, 4, 8], [2, 6, 0]], np.int32)
  batch["masked_lm_ids"] = rng.integers(5, V, (B, P)).astype(np.int32)
  mask_id = 3
  for b, p in zip(*np.nonzero(batch["masked_lm_weights"])):
    batch["input_ids"][b, batch["masked_lm_positions"][b, p]] = mask_id
  batch["input_ids"][0, 4] = batch["masked_lm_ids"][0, 1]  # a kept token (input = original)
  ocfg = ml_collections.ConfigDict(dict(name="electra", gen_weight=1.0, disc_weight=50.0,
                                        sampling_temperature=1.0, sentence_loss="none"))
  key = jax.random.PRNGKey(11)
  # The generator's samples (replayed with the objective's key; they do not depend on the
  # targets): slot (0, 0) gets the sample as its original, so a "replacement" equal to the
  # original must count as real.
  gen_logits = model.apply({"params": params}, **{k: batch[k] for k in (
      "input_ids", "input_mask", "token_type_ids", "masked_lm_positions")}, method=model.generator)
  sampled = np.asarray(pretraining.gumbel_sample(jax.random.split(key, 3)[1], gen_logits, 1.0))
  batch["masked_lm_ids"][0, 0] = sampled[0, 0]
  batch["masked_lm_ids"][1, 1] = (sampled[1, 1] + 1) % V
  electra_loss = pretraining.make_electra(model, ocfg)
  (loss, _), grads = jax.jit(jax.value_and_grad(lambda p, b, k: electra_loss(p, b, k, deterministic=True),
                                                has_aux=True))(params, batch, key)

  # Everything else independently, in numpy and PyTorch.
  real = batch["masked_lm_weights"] > 0
  fake, original = batch["input_ids"].astype(np.int64), batch["input_ids"].astype(np.int64)
  for b, p in zip(*np.nonzero(real)):
    fake[b, batch["masked_lm_positions"][b, p]] = sampled[b, p]
    original[b, batch["masked_lm_positions"][b, p]] = batch["masked_lm_ids"][b, p]
  labels = torch.tensor(fake != original, dtype=torch.float32)
  assert 0 < labels.sum() < labels.numel()
  t = torch_inputs(batch)
  g_logits = gen.eval()(**t).logits  # eval(): no dropout, as deterministic=True; autograd stays on
  pos = torch.tensor(batch["masked_lm_positions"], dtype=torch.long)
  picked = torch.gather(g_logits, 1, pos[..., None].expand(-1, -1, g_logits.shape[-1]))
  w = torch.tensor(batch["masked_lm_weights"])
  xent = torch.nn.functional.cross_entropy(picked.reshape(-1, V), torch.tensor(
      batch["masked_lm_ids"], dtype=torch.long).reshape(-1), reduction="none").reshape(B, P)
  g_loss = (w * xent).sum() / (w.sum() + 1e-5)
  d_logits = disc.eval()(**dict(t, input_ids=torch.tensor(fake))).logits
  m = t["attention_mask"].float()
  bce = torch.nn.functional.binary_cross_entropy_with_logits(d_logits, labels, reduction="none")
  torch_loss = g_loss + 50.0 * (m * bce).sum() / (m.sum() + 1e-6)
  torch_loss.backward()
  assert abs(float(loss) - torch_loss.item()) < 1e-4 * torch_loss.item(), (loss, torch_loss)

  theirs = {("disc", k): p.grad for k, p in disc.named_parameters()}
  theirs.update({("gen", k): p.grad for k, p in gen.named_parameters()})
  checked = 0
  for tower, part in (("disc", "electra"), ("gen", "generator")):
    for e in hf.name_map(cfg, part):
      want = theirs[(tower, e.hf_key)].numpy()
      if e.path[0] == "embeddings":
        if tower == "gen":
          continue  # shared table: compared once, as the sum of both towers
        want = want + theirs[("gen", e.hf_key)].numpy()
      got = hf.to_hf(e, np.asarray(hf._get(grads, e.path)))  # pylint: disable=protected-access
      scale = max(1.0, float(np.abs(want).max()))
      assert np.abs(got - want).max() < 1e-4 * scale, (e.hf_key, np.abs(got - want).max())
      checked += 1
  assert checked == len(jax.tree.leaves(grads)), (checked, len(jax.tree.leaves(grads)))


def test_electra_export_of_fresh_params_loads_in_transformers(tmp_path):
  import jax  # pylint: disable=g-import-not-at-top
  cfg = models.validate(ELECTRA)
  model = models.build(cfg)
  x = make_inputs(4)
  # Random values for every leaf (numpy: an eager Flax init is slow on CPU), no trivial 0/1.
  rng = np.random.default_rng(3)
  params = jax.tree.map(
      lambda a: rng.normal(0, 0.1, a.shape).astype(np.float32), models.abstract_params(model, x))
  hf.export_hf(cfg, params, str(tmp_path / "out"))
  with open(tmp_path / "out" / "config.json") as f:
    assert json.load(f)["architectures"] == ["ElectraForPreTraining"]
  disc, di = transformers.ElectraForPreTraining.from_pretrained(
      str(tmp_path / "out"), output_loading_info=True)
  gen, gi = transformers.ElectraForMaskedLM.from_pretrained(
      str(tmp_path / "out"), subfolder="generator", output_loading_info=True)
  for loading in (di, gi):
    assert not loading["missing_keys"] and not loading["unexpected_keys"], loading
  ours = model.apply({"params": params}, **x)
  with torch.no_grad():
    close(ours["disc_logits"], disc.eval()(**torch_inputs(x)).logits)
    close(ours["mlm_logits"], gather(gen.eval()(**torch_inputs(x)).logits.numpy(),
                                     x["masked_lm_positions"]))


def test_converted_format_round_trip_and_cli(tmp_path):
  from bert_jax.tools import convert  # pylint: disable=g-import-not-at-top
  ref = perturbed(transformers.BertForMaskedLM(transformers.BertConfig(**BERT_CFG)))
  ref.save_pretrained(tmp_path / "hf")
  (tmp_path / "hf" / "vocab.txt").write_text("[PAD]\n[UNK]\n")
  assert convert.main(["import", str(tmp_path / "hf"), str(tmp_path / "ours")]) == 0
  assert (tmp_path / "ours" / "vocab.txt").exists()
  cfg, params = hf.load_converted(str(tmp_path / "ours"))
  assert cfg.family == "bert" and cfg.num_attention_heads == 3
  assert convert.main(["export", str(tmp_path / "ours"), str(tmp_path / "back")]) == 0
  a = hf.read_state_dict(str(tmp_path / "hf"))
  b = hf.read_state_dict(str(tmp_path / "back"))
  for k, v in a.items():
    assert np.array_equal(v, b[k]), k
  with pytest.raises(FileNotFoundError, match="config.json"):
    hf.import_hf(str(tmp_path / "ours"))


def test_bad_checkpoints_fail_clearly(tmp_path):
  bad = tmp_path / "bad"
  bad.mkdir()
  (bad / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
  with pytest.raises(ValueError, match="model_type='gpt2'"):
    hf.import_hf(str(bad))
  (bad / "config.json").write_text(json.dumps(
      {"model_type": "bert", "position_embedding_type": "relative_key"}))
  with pytest.raises(ValueError, match="position_embedding_type"):
    hf.import_hf(str(bad))
  # config.json that does not match the weights: named shape error.
  ref = transformers.BertModel(transformers.BertConfig(**BERT_CFG))
  ref.save_pretrained(tmp_path / "hf")
  conf = json.loads((tmp_path / "hf" / "config.json").read_text())
  conf["intermediate_size"] = 40
  (tmp_path / "hf" / "config.json").write_text(json.dumps(conf))
  with pytest.raises(ValueError, match="intermediate.dense.weight has shape"):
    hf.import_hf(str(tmp_path / "hf"))


def test_minilm_real_checkpoint_matches_transformers():
  from conftest import shared_path  # pylint: disable=g-import-not-at-top
  weights = shared_path("weights", "all-MiniLM-L6-v2")
  ref = np.load(weights / "reference" / "reference_outputs.npz")
  cfg, params, info = hf.import_hf(str(weights))
  assert info["unused"] == []
  model = models.build(cfg)
  x = {k: ref[k].astype(np.int32) for k in ("input_ids", "token_type_ids")}
  x["input_mask"] = ref["attention_mask"].astype(np.int32)
  ours = model.apply({"params": params}, **x)
  mask = x["input_mask"].astype(np.float32)
  tm = transformers.BertModel.from_pretrained(str(weights)).eval()
  with torch.no_grad():
    o = tm(**torch_inputs(x))
  close(ours["sequence_output"], o.last_hidden_state, mask)
  close(ours["pooled_output"], o.pooler_output)
  # And the independent Flax reference stored with the weights.
  close(ours["sequence_output"], ref["last_hidden_state"], mask)
  # Sentence embedding as sentence-transformers computes it (masked mean, L2 norm).
  h = np.asarray(ours["sequence_output"]) * mask[..., None]
  emb = h.sum(1) / mask.sum(1, keepdims=True)
  emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
  close(emb, ref["sentence_embedding"])
  assert x["input_ids"][0, :5].tolist() == [101, 7592, 2088, 999, 102]
  # bfloat16 compute on real weights. Measured: max |diff| 0.039 on hidden states that reach
  # 5.7 in magnitude (mean |diff| 0.004); sentence-embedding cosine > 0.9999.
  bf16 = models.build(dataclasses.replace(cfg, dtype="bfloat16"))
  h16 = np.asarray(bf16.apply({"params": params}, **x)["sequence_output"], np.float32)
  assert np.abs((h16 - np.asarray(ours["sequence_output"])) * mask[..., None]).max() < 0.1
  e16 = (h16 * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
  e16 /= np.linalg.norm(e16, axis=-1, keepdims=True)
  assert np.all((e16 * emb).sum(-1) > 0.999)


def test_warm_start_from_hf_directory_loads_every_tensor(tmp_path):
  """config.init.hf_checkpoint path of the train loop: HF dir -> our params, leaf by leaf."""
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from bert_jax import starts  # pylint: disable=g-import-not-at-top
  ref = perturbed(transformers.BertForPreTraining(transformers.BertConfig(**BERT_CFG)))
  ref.save_pretrained(tmp_path / "hf")
  cfg, want, _ = hf.import_hf(str(tmp_path / "hf"))
  fresh = jax.tree.map(lambda w: jax.numpy.zeros(w.shape, w.dtype), want)
  config = ml_collections.ConfigDict({"init": {"hf_checkpoint": str(tmp_path / "hf")},
                                      "model": {"family": "bert"}})
  got = starts.from_hf(config, fresh)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(a), b)


def test_albert_masked_lm_and_bare_model_import(tmp_path):
  hfc = transformers.AlbertConfig(
      vocab_size=V, embedding_size=10, hidden_size=30, num_hidden_layers=2,
      num_attention_heads=5, intermediate_size=37, max_position_embeddings=40,
      hidden_act="gelu_new", attn_implementation="eager")
  mlm = perturbed(transformers.AlbertForMaskedLM(hfc))
  mlm.save_pretrained(tmp_path / "mlm")
  cfg, params, info = hf.import_hf(str(tmp_path / "mlm"))
  assert info["unused"] == [] and all(
      k.startswith(("bert/encoder/pooler", "sentence")) for k in info["initialized"])
  x = make_inputs(6)
  with torch.no_grad():
    logits = mlm(**torch_inputs(x)).logits.numpy()
  close(models.build(cfg).apply({"params": params}, **x)["mlm_logits"],
        gather(logits, x["masked_lm_positions"]))
  bare = perturbed(transformers.AlbertModel(hfc))
  bare.save_pretrained(tmp_path / "bare")
  _, loaded = hf.load_hf_checkpoint(str(tmp_path / "bare"))
  np.testing.assert_array_equal(loaded["bert"]["encoder"]["pooler"]["kernel"],
                                bare.pooler.weight.detach().numpy().T)
