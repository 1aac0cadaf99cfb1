"""Text sources: the built-in corpus, text files by glob, TFDS datasets.

Every source yields documents as lists of sentences (str). Nothing is held beyond
one document at a time here; callers decide what to keep.

The built-in corpus needs no download and ships no text: it is assembled at run
time from the docstrings of the Python standard library that came with the
interpreter (parsed with `ast`, never imported), one document per module, class
or function with a docstring of at least two sentences, plus the language reference
topics that ship in `pydoc_data` (about 1.6 MB and 4,300 documents of English prose). It is deterministic for
a given Python build and cached as a text file (sentence per line, blank line
between documents) so it is built once.
"""

from __future__ import annotations

import ast
import contextlib
import gzip
import hashlib
import os
import pathlib
import re
import sys
import sysconfig
from typing import Callable, Iterable, Iterator

import tensorflow as tf

Document = list[str]

# Sentence boundary: end punctuation, whitespace, then an upper-case letter, digit or quote.
_SENT_RE = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9])")
_WS_RE = re.compile(r"\s+")
# Builtin corpus: docstring lines that are code, tables or rules are dropped.
_CODE_LINE_RE = re.compile(r"^\s*(>>>|\.\.\.|\$ |[-=~*+#|]{3,})")
_MIN_DOC_SENTENCES = 2
_BUILTIN_VERSION = 1
_MAX_RECORD_CHARS = 100_000


def split_sentences(paragraph: str) -> list[str]:
  """Splits a paragraph into sentences with a simple punctuation rule."""
  text = _WS_RE.sub(" ", paragraph).strip()
  if not text:
    return []
  return [s.strip() for s in _SENT_RE.split(text) if s.strip()]


def default_cache_dir() -> pathlib.Path:
  return pathlib.Path(os.environ.get("BERT_JAX_CACHE",
                                     pathlib.Path.home() / ".cache" / "bert_jax"))


def _module_documents(source: str, texts_of: Callable[[ast.AST], Iterator[str]]) -> Iterator[Document]:
  """Documents from the texts that `texts_of(node)` yields for each node of a Python module."""
  try:
    tree = ast.parse(source)
  except (SyntaxError, ValueError):
    return
  for node in ast.walk(tree):
    for text in texts_of(node):
      sentences = _prose_sentences(text)
      if len(sentences) >= _MIN_DOC_SENTENCES:
        yield sentences


def _docstrings(node: ast.AST) -> Iterator[str]:
  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
    doc = ast.get_docstring(node, clean=True)
    if doc:
      yield doc


def _topics(node: ast.AST) -> Iterator[str]:
  """The language reference topics of pydoc_data (string constants of a dict)."""
  if isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) > 200:
    yield node.value


def _prose_sentences(text: str) -> list[str]:
  sentences = []
  for para in re.split(r"\n\s*\n", text):
    lines = [l for l in para.splitlines() if not _CODE_LINE_RE.match(l)]
    # Indented blocks are code examples, grammar or argument tables; keep prose only.
    if not lines or all(l.startswith((" ", "\t")) for l in lines):
      continue
    sentences.extend(split_sentences(" ".join(lines)))
  return sentences


def _stdlib_files() -> list[pathlib.Path]:
  root = pathlib.Path(sysconfig.get_paths()["stdlib"])
  files = []
  for path in sorted(root.rglob("*.py")):
    rel = path.relative_to(root).parts
    # Tests, third-party packages and generated tables are not prose.
    if any(p in ("site-packages", "dist-packages", "test", "tests", "idle_test",
                 "__pycache__") for p in rel):
      continue
    files.append(path)
  return files


def builtin_corpus_path(cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
  """Builds (once) and returns the cached builtin corpus text file."""
  cache = pathlib.Path(cache_dir) if cache_dir else default_cache_dir()
  tag = hashlib.sha1(f"{sys.version}|{_BUILTIN_VERSION}".encode()).hexdigest()[:10]
  path = cache / f"builtin_corpus_{tag}.txt"
  if path.exists():
    return path
  cache.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(f".tmp{os.getpid()}")
  with open(tmp, "w", encoding="utf-8") as f:
    for file in _stdlib_files():
      try:
        source = file.read_text(encoding="utf-8")
      except (UnicodeDecodeError, OSError):
        continue
      topics = file.name == "topics.py" and file.parent.name == "pydoc_data"
      docs = _module_documents(source, _topics if topics else _docstrings)
      for doc in docs:
        f.write("\n".join(doc) + "\n\n")
  os.replace(tmp, path)  # atomic: concurrent builders write identical files
  return path


# A line is not text when it is not UTF-8 or holds control characters (NUL, ...) other than
# tab, CR, vertical tab and form feed: what binary files and UTF-16 text look like line by line.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_CHECK_EVERY = 1000  # lines between checks of the non-text share (and at each file's end)
_MIN_BAD_LINES = 10  # a few stray lines in a small file are counted, not fatal


@contextlib.contextmanager
def _open_text(path: str):
  """A binary line iterator over a local or gs:// file, gunzipped when it is gzip'd (by its
  magic bytes, whatever its name: .gz exports and TFRecord-style GZIP compression alike)."""
  with tf.io.gfile.GFile(path, "rb") as f:
    magic = f.read(2)
    f.seek(0)
    if magic != b"\x1f\x8b":
      yield f
      return
    with gzip.GzipFile(fileobj=f, mode="rb") as g:
      yield g


def read_text_documents(paths: Iterable[str], text_format: str,
                        stats: dict | None = None,
                        max_bad_line_fraction: float = 0.01) -> Iterator[Document]:
  """Streams documents from text files (local or gs://, plain or gzip'd) via tf.io.gfile.

  sentence_per_line: one sentence per line, blank lines between documents (the BERT
  reference format). document_per_line: one document per line, split into sentences.
  Invalid UTF-8 bytes are replaced (and counted in stats["invalid_utf8_lines"]); a file with
  more than `max_bad_line_fraction` (config.data.max_bad_line_fraction) of its lines, and at
  least 10, that are not text (invalid UTF-8 or control characters) is refused with a
  ValueError naming it, checked every 1,000 lines and at its end.
  """
  if text_format not in ("sentence_per_line", "document_per_line"):
    raise ValueError(f"config.data.text_format={text_format!r}; use sentence_per_line "
                     "or document_per_line.")
  stats = stats if stats is not None else {}
  for path in paths:
    lines = bad = 0

    def check(final: bool = False):
      if bad >= _MIN_BAD_LINES and (final or lines >= _CHECK_EVERY) and bad > max_bad_line_fraction * lines:
        raise ValueError(
            f"{path} does not look like text: {bad} of {'its' if final else 'the first'} {lines} lines are "
            f"not valid UTF-8 or hold control characters (more than config.data.max_bad_line_fraction="
            f"{max_bad_line_fraction}). Remove it from the corpus (config.data.text_glob), convert it to "
            "UTF-8 text, or raise config.data.max_bad_line_fraction.")

    with _open_text(path) as f:
      doc: Document = []
      for raw in f:
        lines += 1
        try:
          line = raw.decode("utf-8")
          if _CONTROL_RE.search(line):
            bad += 1
            stats["control_char_lines"] = stats.get("control_char_lines", 0) + 1
        except UnicodeDecodeError:
          line = raw.decode("utf-8", errors="replace")
          bad += 1
          stats["invalid_utf8_lines"] = stats.get("invalid_utf8_lines", 0) + 1
        if lines % _CHECK_EVERY == 0:
          check()
        line = line.strip()
        if text_format == "document_per_line":
          if line:
            yield split_sentences(line)
          continue
        if not line:
          if doc:
            yield doc
          doc = []
        else:
          doc.append(_WS_RE.sub(" ", line))
      check(final=True)
      if doc:
        yield doc


def text_files(glob: str) -> list[str]:
  if not glob:
    raise ValueError("config.data.source='text' needs config.data.text_glob (a local or "
                     "gs:// glob of text files).")
  files = sorted(f for g in glob.split(",") for f in tf.io.gfile.glob(g.strip()))
  if not files:
    raise ValueError(f"config.data.text_glob={glob!r} matches no files.")
  return files


def describe_source(data_config) -> str:
  """The configured corpus for error messages: its config key and value, and the files it names."""
  c = data_config
  if c.source == "text":
    try:
      files = text_files(c.text_glob)
    except (ValueError, tf.errors.OpError):
      files = []
    shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    return f"config.data.text_glob={c.text_glob!r} (files: {shown or 'none'})"
  if c.source == "tfds":
    return f"config.data.tfds_name={c.tfds_name!r} (split {c.tfds_split!r})"
  if c.source == "tfrecord":
    return f"config.data.tfrecord_glob={c.tfrecord_glob!r}"
  return f"config.data.source={c.source!r}"


def tfds_documents(name: str, split: str, text_key: str, data_dir: str = "") -> Iterator[Document]:
  """Streams documents from a TFDS dataset (never downloads)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if not name:
    raise ValueError("config.data.source='tfds' needs config.data.tfds_name.")
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
    ds = builder.as_dataset(split=split, shuffle_files=False)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"Cannot read TFDS dataset {name!r} split {split!r} from data_dir "
                     f"{data_dir or '(default)'}: {e}. Prepare it first (tfds build) or fix "
                     "config.data.tfds_name / tfds_data_dir.") from e
  if text_key not in ds.element_spec:
    raise ValueError(f"TFDS {name!r} has no feature {text_key!r} (config.data.tfds_text_key); "
                     f"features: {sorted(ds.element_spec)}.")
  for ex in ds.as_numpy_iterator():
    text = ex[text_key].decode("utf-8", errors="replace")
    # A record is one document, except a very long one (tiny_shakespeare is a single
    # record per split): that is split into documents at blank lines.
    blocks = re.split(r"\n\s*\n", text) if len(text) > _MAX_RECORD_CHARS else [text]
    for block in blocks:
      sents = [s for line in block.split("\n") for s in split_sentences(line)]
      if sents:
        yield sents


def source_documents(data_config, split: str = "train", stats: dict | None = None,
                     cache_dir=None) -> Iterator[Document]:
  """All documents of the configured source (both train and eval; see pipeline)."""
  source = data_config.source
  if source == "builtin":
    yield from read_text_documents([str(builtin_corpus_path(cache_dir))],
                                   "sentence_per_line", stats)
  elif source == "text":
    yield from read_text_documents(text_files(data_config.text_glob),
                                   data_config.text_format, stats,
                                   data_config.get("max_bad_line_fraction", 0.01))
  elif source == "tfds":
    yield from tfds_documents(data_config.tfds_name, split, data_config.tfds_text_key,
                              data_config.tfds_data_dir)
  else:
    raise ValueError(f"config.data.source={source!r}: use builtin, text, tfds or tfrecord.")
