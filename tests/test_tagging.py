"""Token classification: CoNLL reading, first-piece labels, entity-level metrics vs seqeval.

bert_jax.metrics.entity_scores must equal seqeval's precision/recall/F1 (default, conlleval
mode) and accuracy on hand-made edge cases (IOB1 and IOB2, I- after O, type changes inside a
chunk, E/S tags, bare tags) and on random tag sequences.
"""

import numpy as np
import pytest

from bert_jax import metrics
from bert_jax.data import conll

seqeval_metrics = pytest.importorskip("seqeval.metrics")
seqeval_labeling = pytest.importorskip("seqeval.metrics.sequence_labeling")

EDGE_TRUE = [
    ["B-PER", "I-PER", "O", "B-LOC"],
    ["I-ORG", "I-ORG", "O", "I-PER", "B-PER"],        # IOB1: I starts a chunk after O
    ["B-PER", "I-LOC", "I-LOC", "O"],                 # type change inside a chunk
    ["S-MISC", "B-ORG", "E-ORG", "O", "E-PER"],       # IOBES tags
    ["O", "O", "O"],
    ["B", "I", "O", "B-X", "I-X"],                   # bare tags (type "_")
]
EDGE_PRED = [
    ["B-PER", "I-PER", "O", "B-ORG"],
    ["B-ORG", "I-ORG", "O", "I-PER", "I-PER"],
    ["B-PER", "I-PER", "I-LOC", "O"],
    ["S-MISC", "B-ORG", "I-ORG", "O", "O"],
    ["B-LOC", "O", "I-LOC"],
    ["B", "I", "O", "B-X", "B-X"],
]


def seqeval_scores(true, pred):
  return {"precision": seqeval_metrics.precision_score(true, pred), "recall": seqeval_metrics.recall_score(true, pred),
          "f1": seqeval_metrics.f1_score(true, pred), "accuracy": seqeval_metrics.accuracy_score(true, pred)}


def test_entities_and_scores_equal_seqeval_on_edge_cases():
  for seq in EDGE_TRUE + EDGE_PRED:
    assert sorted(metrics.entities(seq)) == sorted(seqeval_labeling.get_entities(seq)), seq
  assert metrics.entity_scores(EDGE_TRUE, EDGE_PRED) == pytest.approx(seqeval_scores(EDGE_TRUE, EDGE_PRED))
  # Nothing predicted / nothing to find: 0.0 as seqeval (zero_division="warn" -> 0).
  empty = [["O", "O"]]
  with pytest.warns(Warning):
    want = seqeval_scores([["B-PER", "O"]], empty)
  assert metrics.entity_scores([["B-PER", "O"]], empty) == pytest.approx(want)
  with pytest.raises(ValueError, match="same lengths"):
    metrics.entity_scores([["O"]], [["O", "O"]])


@pytest.mark.parametrize("seed", range(5))
def test_entity_scores_equal_seqeval_on_random_sequences(seed):
  rng = np.random.default_rng(seed)
  tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "E-ORG", "S-LOC"]
  true = [list(rng.choice(tags, size=int(rng.integers(1, 15)))) for _ in range(40)]
  # Predictions: the truth with 20% of the tags replaced.
  pred = [[t if rng.uniform() > 0.2 else str(rng.choice(tags)) for t in s] for s in true]
  assert metrics.entity_scores(true, pred) == pytest.approx(seqeval_scores(true, pred))


CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
"""


class PieceTokenizer:
  """Pieces of at most 3 characters ("##" continuations) over a growing vocabulary."""

  pad_id, unk_id, cls_id, sep_id, mask_id = 0, 1, 2, 3, 4

  def __init__(self):
    self.pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

  def encode(self, word):
    out = []
    for i in range(0, len(word), 3):
      p = word[i:i + 3] if i == 0 else "##" + word[i:i + 3]
      if p not in self.pieces:
        self.pieces.append(p)
      out.append(self.pieces.index(p))
    return out


def test_conll_parse_and_first_piece_labels(tmp_path):
  s = conll.parse(CONLL, -1)
  assert s.words == [["EU", "rejects", "German", "call", "."], ["Peter", "Blackburn"]]
  assert s.tags == [["B-ORG", "O", "B-MISC", "O", "O"], ["B-PER", "I-PER"]]
  assert conll.parse(CONLL, 1).tags[0][:2] == ["NNP", "VBZ"]
  labels = ("O", "B-ORG", "B-MISC", "B-PER", "I-PER")
  tok = PieceTokenizer()
  f = conll.featurize(s, tok, labels, 16)
  # "rejects" has 3 pieces: only the first carries the label; [CLS]/[SEP]/padding carry none.
  assert f["label_mask"][0].tolist() == [0, 1, 1, 0, 0, 1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]
  first = f["word_piece"][0, :5]
  assert [labels[f["labels"][0, p]] for p in first] == s.tags[0]
  assert f["input_ids"][0, 0] == tok.cls_id and f["input_ids"][0, int(f["input_mask"][0].sum()) - 1] == tok.sep_id
  # Words past the row are cut, predicted with the fallback, and still scored.
  short = conll.featurize(s, tok, labels, 6)
  assert short["word_piece"][0].tolist() == [1, 2, -1, -1, -1]
  assert short["word_piece"][1, :2].tolist() == [1, -1]  # "Blackburn" (3 pieces) does not fit
  pred = short["labels"]  # a perfect prediction of the pieces that fit
  words = conll.word_predictions(pred, short["word_piece"], [5, 2], labels, "O")
  assert words[0] == ["B-ORG", "O", "O", "O", "O"] and words[1] == ["B-PER", "O"]
  # Files and errors.
  (tmp_path / "train.txt").write_text(CONLL)
  assert conll.read_file(conll.split_file(str(tmp_path), "train")).words == s.words
  with pytest.raises(FileNotFoundError, match="valid.txt"):
    conll.split_file(str(tmp_path), "validation")
  with pytest.raises(ValueError, match="line 4: 3 columns"):
    conll.parse(CONLL.replace("rejects VBZ B-VP O", "rejects VBZ O"))
  with pytest.raises(ValueError, match="tag 'B-MISC' is not one of the labels"):
    conll.featurize(s, tok, ("O", "B-ORG", "B-PER", "I-PER"), 16)


def test_tfds_records_equal_the_conll_file():
  """TFDS conll2003 records (as its builder makes them from the same lines) give the same sentences."""
  s = conll.parse(CONLL, -1)
  pos = conll.parse(CONLL, 1)
  ner_names = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
  pos_names = sorted({t for sent in pos.tags for t in sent})
  records = [{"tokens": np.asarray([w.encode() for w in words]),
              "ner": np.asarray([ner_names.index(t) for t in tags]),
              "pos": np.asarray([pos_names.index(t) for t in ptags])}
             for words, tags, ptags in zip(s.words, s.tags, pos.tags)]
  got = conll.from_tfds_records(records, "ner", ner_names)
  assert got.words == s.words and got.tags == s.tags
  assert conll.from_tfds_records(records, "pos", pos_names).tags == pos.tags
  with pytest.raises(ValueError, match="label_column='lemma'"):
    conll.read_tfds("train", "lemma")
