"""Text tokenisation with the tokenizer files shipped in the repository (tokenizers only), padded
the way the exported text tower was trained to read (TextSpec, written by the export as text.json)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

TEXT_BUCKET = 16  # bucketed texts are padded to a multiple of this many tokens (at most the context)
TEXT_SPEC_FILE = "text.json"


def text_length(longest: int, context: int) -> int:
    """The padded length for a batch whose longest text has `longest` tokens: a multiple of
    TEXT_BUCKET, so that Triton can batch requests of one bucket together, capped at the context.
    A query of a few words costs 16 positions, not 77 (CLIP's text tower pools at the end-of-text
    token under a causal mask, so padding after it changes nothing)."""
    return min(-(-longest // TEXT_BUCKET) * TEXT_BUCKET, context)


@dataclass(frozen=True)
class TextSpec:
    """How a text tower reads its tokens.

    padding "bucketed": to text_length() with an attention mask that hides the padding (CLIP, whose
    causal tower pools at the end-of-text token; masked mean-pooling towers). padding "fixed": always
    the whole context, every position attended (SigLIP and SigLIP 2 were trained on 64 tokens with
    their padding visible, and pool at the last position, which is usually padding: fewer positions
    or a mask would give another embedding). lowercase: the family was trained on lowercased text
    and its tokenizer does not lowercase.
    """

    context: int
    pad_token: str
    padding: str = "bucketed"
    lowercase: bool = False

    def __post_init__(self) -> None:
        if self.padding not in ("bucketed", "fixed"):
            raise ValueError(f"unknown text padding {self.padding!r}: bucketed or fixed")

    def length(self, longest: int) -> int:
        return self.context if self.padding == "fixed" else text_length(longest, self.context)

    @property
    def min_length(self) -> int:
        """The fewest positions a batch is sent with (Triton's and TensorRT's shape range)."""
        return self.context if self.padding == "fixed" else min(TEXT_BUCKET, self.context)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def load(cls, folder: Path) -> TextSpec:
        """From the tower's folder; repositories exported before text.json hold CLIP (pad with its
        end-of-text token, the context from tokenizer_config.json)."""
        if (folder / TEXT_SPEC_FILE).is_file():
            return cls(**json.loads((folder / TEXT_SPEC_FILE).read_text()))
        return cls(json.loads((folder / "tokenizer_config.json").read_text())["model_max_length"], "<|endoftext|>")


class TextTokenizer:
    """The repository's tokenizer, truncated to the context and padded as its TextSpec says."""

    def __init__(self, folder: Path, spec: TextSpec):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        pad_id = self.tokenizer.token_to_id(spec.pad_token)
        if pad_id is None:
            raise ValueError(f"{folder / 'tokenizer.json'} has no {spec.pad_token} token, which {folder / TEXT_SPEC_FILE}"
                             " pads with: the tokenizer and the text tower come from different checkpoints")
        self.pad_id, self.spec = pad_id, spec
        self.tokenizer.enable_truncation(spec.context)
        self.tokenizer.no_padding()

    @classmethod
    def from_folder(cls, folder: Path) -> TextTokenizer:
        """The tokenizer of a repository's text tower folder, padded as its text.json says."""
        return cls(folder, TextSpec.load(folder))

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask) int64 (N, L): the mask marks the tokens the tower attends to."""
        encodings = self._encode(texts)
        length = self.spec.length(max(len(e.ids) for e in encodings))
        ids = np.full((len(texts), length), self.pad_id, np.int64)
        mask = np.full((len(texts), length), int(self.spec.padding == "fixed"), np.int64)
        for row, encoding in enumerate(encodings):
            ids[row, :len(encoding.ids)], mask[row, :len(encoding.ids)] = encoding.ids, 1
        return ids, mask

    def count(self, texts: list[str]) -> int:
        """The texts' tokens, special tokens included, padding not (at most the context each)."""
        return sum(len(e.ids) for e in self._encode(texts))

    def _encode(self, texts: list[str]) -> list:
        return self.tokenizer.encode_batch([t.lower() for t in texts] if self.spec.lowercase else texts)

    def merge(self, batches: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """Tokenised batches of different padded lengths -> one batch at the longest of them."""
        length = max(ids.shape[1] for ids, _ in batches)
        return (np.concatenate([np.pad(i, ((0, 0), (0, length - i.shape[1])), constant_values=self.pad_id) for i, _ in batches]),
                np.concatenate([np.pad(m, ((0, 0), (0, length - m.shape[1]))) for _, m in batches]))
