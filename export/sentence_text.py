"""A multilingual text tower in a CLIP model's embedding space, from a sentence-transformers checkpoint
(`python -m export clip --text-model ...`): e.g. sentence-transformers/clip-ViT-B-32-multilingual-v1, a
multilingual DistilBERT distilled onto openai/clip-vit-base-patch32's text embeddings (50+ languages).

The checkpoint's own pipeline (Transformer -> Pooling -> Dense, whatever its modules.json says) is the
graph exported and, run by sentence-transformers with its own tokenisation, the parity reference. Its
texts are padded to buckets under a mask (its pooling averages the attended tokens only). The image
tower, and so a collection's vectors, stay the CLIP checkpoint's: adding or changing the text tower
needs no re-indexing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.runtime.text import TextSpec

from .families import UnsupportedCheckpoint


@dataclass
class TextSide:
    """What export_clip needs of a text tower, whichever checkpoint it comes from."""

    module: Any  # torch module: (input_ids, attention_mask) -> L2-normalised embeddings
    tokenizer: Any  # transformers tokenizer (saved beside the graph; the reference for the gateway's ids)
    spec: TextSpec
    reference: Callable[[list[str]], np.ndarray]  # PyTorch's normalised embeddings of texts
    dim: int


def sentence_transformer_side(source: str) -> TextSide:
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(source, device="cpu").eval()
    transformer = model[0]
    tokenizer = model.tokenizer
    if tokenizer is None or getattr(tokenizer, "pad_token", None) is None:
        raise UnsupportedCheckpoint(f"{source} has no text tokenizer with a padding token: not a text tower")
    dim = model.get_embedding_dimension()
    if not dim:
        raise UnsupportedCheckpoint(f"{source} does not say its embedding dimension: not a sentence-transformers text tower")

    class SentenceTower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            features = self.model({"input_ids": input_ids, "attention_mask": attention_mask})
            return torch.nn.functional.normalize(features["sentence_embedding"], dim=-1)

    def reference(texts: list[str]) -> np.ndarray:
        return model.encode(texts, batch_size=8, normalize_embeddings=True, convert_to_numpy=True)

    context = model.max_seq_length
    if not context:
        raise UnsupportedCheckpoint(f"{source} does not say its longest text (max_seq_length)")
    spec = TextSpec(int(context), tokenizer.pad_token, "bucketed",
                    bool(getattr(transformer, "do_lower_case", False)))
    return TextSide(SentenceTower().eval(), tokenizer, spec, reference, int(dim))
