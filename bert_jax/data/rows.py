r"""Row records: a host's unmasked rows, written once, read back by a graph-only tf.data source.

  python -m bert_jax.data.rows --config=configs/bert.py:base --workdir=gs://bucket/run \
      --output=gs://bucket/rows/wiki --epochs=10 --process_count=4 [--config.data.* as for training]

then train with --config.data.rows_path=gs://bucket/rows/wiki, and to move reading, masking and
batching off the training hosts, --config.data.service_address=grpc://<dispatcher>:<port>.

Why: rows are built in Python (bert_jax.data.instances), and a tf.data service worker runs only
the dataset's serialized graph. The records hold the rows a training run builds (the same
generator, row_source.row_pieces: same seed, hosts and order) with their masking keys, so reading
them gives the same batches as building them. Masking stays a per-run choice (any strategy and
rate): the records hold no masks.

Files: <output>.json (the settings the rows depend on, row counts), and per split and host
<output>.<split>-<p>-of-<P>.tfrecord with one record per piece of at most `piece_rows` rows
(each field a serialized tensor). train holds --epochs epochs, eval one. A run that reads past
the end starts over at the first row (same rows and masks again, as the reference scripts'
dupe_factor repeats them). A resume skips whole records (counts in the .json) without parsing
them, then the rest of a piece.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from bert_jax.data import row_source
from bert_jax.data import tokenizers
from bert_jax import configs

VERSION = 1
_SETTINGS = ("instances", "max_seq_length", "short_seq_prob", "pack_examples", "eval_fraction")


def _meta_path(prefix: str) -> str:
  return prefix + ".json"


def file_name(prefix: str, split: str, process_index: int, process_count: int) -> str:
  return f"{prefix}.{split}-{process_index:05d}-of-{process_count:05d}.tfrecord"


def _serialize(piece: dict) -> bytes:
  feature = {k: tf.train.Feature(bytes_list=tf.train.BytesList(
      value=[tf.io.serialize_tensor(np.ascontiguousarray(v)).numpy()])) for k, v in piece.items()}
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write(data_config, tokenizer, output: str, *, epochs: int, process_count: int,
          stats: dict | None = None) -> dict:
  """Writes every host's rows of train (`epochs` epochs) and eval (one) and returns the metadata."""
  c = data_config
  if epochs < 1 or process_count < 1:
    raise ValueError(f"--epochs={epochs} and --process_count={process_count} must be >= 1.")
  if c.get("rows_path", "") or c.get("service_address", ""):
    raise ValueError("config.data.rows_path / service_address are for reading row records; unset "
                     "them when writing.")
  if tf.io.gfile.exists(_meta_path(output)):
    raise ValueError(f"{_meta_path(output)} exists: row records were written there already; choose "
                     "another --output or delete them.")
  if os.path.dirname(output):
    tf.io.gfile.makedirs(os.path.dirname(output))  # local folders (no-op on object stores)
  stats = stats if stats is not None else {}
  piece_rows = row_source.default_chunk_rows(1, c.max_seq_length, "token")
  splits = {}
  for split, seed, n_epochs in (("train", c.seed, epochs),
                                ("eval", c.seed + row_source.EVAL_SEED_OFFSET, 1)):
    if split == "eval" and c.eval_fraction <= 0:
      continue
    counts = []
    for p in range(process_count):
      path, host = file_name(output, split, p, process_count), []
      tmp = f"{path}.tmp{os.getpid()}"
      with tf.io.TFRecordWriter(tmp) as w:
        for piece in row_source.row_pieces(c, tokenizer, split, chunk_rows=piece_rows,
                                           process_index=p, process_count=process_count, seed=seed,
                                           start_row=0, stats=stats, max_epochs=n_epochs):
          w.write(_serialize(piece))
          host.append(len(piece["keys"]))
      tf.io.gfile.rename(tmp, path, overwrite=True)
      counts.append(host)
    splits[split] = dict(seed=seed, epochs=n_epochs, records=counts)
  meta = dict(version=VERSION, settings={k: c[k] for k in _SETTINGS}, seed=c.seed,
              tokenizer=tokenizer.fingerprint(), process_count=process_count, piece_rows=piece_rows,
              splits=splits)
  with tf.io.gfile.GFile(_meta_path(output), "w") as f:  # last: its presence marks the set complete
    json.dump(meta, f)
  return meta


def check(data_config, tokenizer, split: str, seed: int, process_count: int) -> dict:
  """The records' metadata, or ValueError naming the config key that disagrees with them."""
  c, prefix = data_config, data_config.rows_path
  if not tf.io.gfile.exists(_meta_path(prefix)):
    raise ValueError(f"config.data.rows_path={prefix!r}: {_meta_path(prefix)} does not exist; write "
                     "the records first (python -m bert_jax.data.rows --output=<rows_path> ...).")
  with tf.io.gfile.GFile(_meta_path(prefix)) as f:
    meta = json.load(f)
  redo = " (rewrite the records with this config, or point rows_path elsewhere)"
  if meta.get("version") != VERSION:
    raise ValueError(f"{_meta_path(prefix)}: row records version {meta.get('version')}, this code reads "
                     f"{VERSION}{redo}.")
  for k, v in meta["settings"].items():
    if c[k] != v:
      raise ValueError(f"config.data.{k}={c[k]!r}, but the row records at {prefix!r} were built with "
                       f"{v!r}{redo}.")
  if meta["tokenizer"] != tokenizer.fingerprint():
    raise ValueError(f"The row records at {prefix!r} were built with another tokenizer{redo}.")
  if meta["process_count"] != process_count:
    raise ValueError(f"The row records at {prefix!r} are for {meta['process_count']} hosts, this run has "
                     f"{process_count} (python -m bert_jax.data.rows --process_count={process_count}).")
  if split not in meta["splits"]:
    raise ValueError(f"The row records at {prefix!r} have no {split} split (config.data.eval_fraction "
                     "was 0 when they were written).")
  if meta["splits"][split]["seed"] != seed:
    raise ValueError(f"config.data.seed={c.seed} gives {split} seed {seed}, but the row records at "
                     f"{prefix!r} were built with seed {meta['seed']}{redo}.")
  return meta


def pieces(data_config, tokenizer, split: str, *, process_index: int, process_count: int, seed: int,
           start_row: int) -> tuple[tf.data.Dataset, int]:
  """This host's row pieces from row `start_row` (graph ops only), and the largest piece's rows."""
  meta = check(data_config, tokenizer, split, seed, process_count)
  counts = meta["splits"][split]["records"][process_index]
  sig = row_source.piece_signature(data_config.max_seq_length)
  # Past the end the records start over: skip whole records, then rows of one.
  start_row %= sum(counts)
  skip_records = int(np.searchsorted(np.cumsum(counts), start_row, side="right"))
  skip_rows = start_row - sum(counts[:skip_records])

  def parse(record):
    f = tf.io.parse_single_example(record, {k: tf.io.FixedLenFeature([], tf.string) for k in sig})
    return {k: tf.ensure_shape(tf.io.parse_tensor(f[k], s.dtype), s.shape) for k, s in sig.items()}

  files = tf.data.TFRecordDataset(file_name(data_config.rows_path, split, process_index, process_count))
  head = files.skip(skip_records).take(1).map(parse).map(
      lambda p: {k: v[skip_rows:] for k, v in p.items()})
  ds = head.concatenate(files.skip(skip_records + 1).map(parse)).concatenate(files.map(parse).repeat())
  return ds.prefetch(1), meta["piece_rows"]


def main(argv) -> None:
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top  # command line only, as in cli()
  f = flags.FLAGS
  c = f.config.data
  tok = tokenizers.build_or_load(c, f.workdir, process_index=0)
  stats: dict = {}
  meta = write(c, tok, f.output, epochs=f.epochs, process_count=f.process_count, stats=stats)
  for split, s in meta["splits"].items():
    print(f"{split}: {s['epochs']} epoch(s), rows per host {[sum(r) for r in s['records']]}")
  print(f"wrote {_meta_path(f.output)}; train with --config.data.rows_path={f.output}")


def cli() -> None:
  """Console entry point `bert-jax-rows` (flags are defined here, not at import: absl.app defines
  its own flags when imported, so the command line alone imports it)."""
  from absl import app, flags  # pylint: disable=g-import-not-at-top,g-multiple-import
  configs.define_flag("config", "configs/<family>.py:<arg>: the data settings of the training run")
  flags.DEFINE_string("workdir", None, "the training run's workdir (its tokenizer; trained if absent)")
  flags.DEFINE_string("output", None, "path prefix of the records (local or gs://)")
  flags.DEFINE_integer("epochs", 1, "train epochs to write (a longer run starts over)")
  flags.DEFINE_integer("process_count", 1, "hosts of the training run (rows are per host)")
  flags.mark_flags_as_required(["config", "workdir", "output"])
  app.run(main)


if __name__ == "__main__":
  cli()
