"""CLIP text tokenisation with the tokenizer files shipped in the repository (tokenizers only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TEXT_BUCKET = 16  # texts are padded to a multiple of this many tokens (at most the context)


def text_length(longest: int, context: int) -> int:
    """The padded length for a batch whose longest text has `longest` tokens: a multiple of
    TEXT_BUCKET, so that Triton can batch requests of one bucket together, capped at the context.
    A query of a few words costs 16 positions, not 77 (CLIP's text tower pools at the end-of-text
    token under a causal mask, so padding after it changes nothing)."""
    return min(-(-longest // TEXT_BUCKET) * TEXT_BUCKET, context)


class TextTokenizer:
    """CLIP's tokenizer from the repository, truncated to the context and padded to text_length()."""

    def __init__(self, folder: Path, context_length: int):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        pad_id = self.tokenizer.token_to_id("<|endoftext|>")
        if pad_id is None:
            raise ValueError(f"{folder / 'tokenizer.json'} has no <|endoftext|> token: not a CLIP tokenizer")
        self.pad_id, self.context = pad_id, context_length
        self.tokenizer.enable_truncation(context_length)
        self.tokenizer.no_padding()

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        encodings = self.tokenizer.encode_batch(texts)
        length = text_length(max(len(e.ids) for e in encodings), self.context)
        ids = np.full((len(texts), length), self.pad_id, np.int64)
        mask = np.zeros((len(texts), length), np.int64)
        for row, encoding in enumerate(encodings):
            ids[row, :len(encoding.ids)], mask[row, :len(encoding.ids)] = encoding.ids, 1
        return ids, mask

    def merge(self, batches: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """Tokenised batches of different padded lengths -> one batch at the longest of them."""
        length = max(ids.shape[1] for ids, _ in batches)
        return (np.concatenate([np.pad(i, ((0, 0), (0, length - i.shape[1])), constant_values=self.pad_id) for i, _ in batches]),
                np.concatenate([np.pad(m, ((0, 0), (0, length - m.shape[1]))) for _, m in batches]))
