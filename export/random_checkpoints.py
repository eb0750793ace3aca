"""Random-weight checkpoints with real architectures, for machines that cannot reach the hub.

Tests use the tiny ones (seconds to build and export); benchmarks use the full-size ones, which
cost exactly what real weights cost. Both are written with ``save_pretrained`` and loaded back
with ``from_pretrained(folder)``: the same call users make with a hub id.

The tokenizers are the real ones. CLIP's BPE vocabulary ships inside the open-clip-torch wheel
(MIT), downloaded with pip and only unzipped for that one file. BERT's uncased WordPiece
vocabulary (BLIP's text side) is rebuilt from the id->word model in the blingfire package (MIT):
each id decoded alone gives the piece, and decoded after "a" tells a word start from a "##" piece.

SigLIP 2's tokenizer is Gemma's (256k entries), which no package ships: the SigLIP 2 checkpoints here
carry a tokenizer with Gemma's pipeline (transformers' GemmaTokenizer: "▁" for spaces, byte fallback,
<pad> 0, <eos> 1 appended, right padding to 64), its BPE trained offline on a few multilingual
sentences. Real checkpoints bring their own.

    python -m export.random_checkpoints clip --size tiny --out /tmp/clip-tiny
The multilingual text towers (sentence-transformers: DistilBERT -> mean pooling -> Dense into a CLIP's
space, as sentence-transformers/clip-ViT-B-32-multilingual-v1) carry a cased WordPiece vocabulary
trained offline on the same sentences.

    python -m export.random_checkpoints siglip2 --size tiny --out /tmp/siglip2-tiny
    python -m export.random_checkpoints multilingual-text --size tiny --out /tmp/mclip-text-tiny
    python -m export.random_checkpoints blip --size base --out /tmp/blip-base
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any

OPEN_CLIP_WHEEL = "open-clip-torch==3.3.0"
BPE_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
DEFAULT_CACHE = Path(os.environ.get("IMAGE_SEARCH_CACHE", Path.home() / ".cache" / "image-search"))

# CLIP's text side: 49,152 BPE slots = 256 bytes + 48,894 merges + 2 specials (and the "</w>" bytes).
N_MERGES = 49152 - 256 - 2
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def clip_bpe_file(cache_dir: Path = DEFAULT_CACHE) -> Path:
    """Path of open_clip's gzip BPE file, fetched once from the wheel on the package registry."""
    target = cache_dir / "bpe_simple_vocab_16e6.txt.gz"
    if target.exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", OPEN_CLIP_WHEEL, "-d", tmp],
            check=True,
        )
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as zf:
            partial = target.with_suffix(".partial")
            partial.write_bytes(zf.read(BPE_MEMBER))
            partial.replace(target)
    return target


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


@lru_cache(maxsize=1)
def clip_vocab_and_merges(bpe_file: Path) -> tuple[dict[str, int], list[str]]:
    """The 49,408-entry vocabulary and the merges, in the order open_clip's SimpleTokenizer builds them."""
    with gzip.open(bpe_file) as fh:
        lines = fh.read().decode("utf-8").split("\n")[1 : N_MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    byte_chars = list(_bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges] + [BOS, EOS]
    return {tok: i for i, tok in enumerate(tokens)}, [" ".join(m) for m in merges]


def write_clip_tokenizer(folder: Path, bpe_file: Path | None = None) -> None:
    """Write a CLIPTokenizer (vocab.json + merges.txt + configs) that matches openai's ids."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges(bpe_file or clip_bpe_file())
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
        Path(tmp, "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        # pad with <|endoftext|> and 77 positions, as openai/clip-vit-* ship their tokenizer.
        tokenizer = CLIPTokenizer.from_pretrained(tmp, pad_token=EOS, model_max_length=77)
    tokenizer.save_pretrained(folder)


def _save(out: Path, model, processor, write_tokenizer) -> Path:
    """A checkpoint folder as the hub holds one: weights and config, image processor, tokenizer."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    write_tokenizer(out)
    return out


# Architectures: tiny (tests) and the real ViT-B/32 / ViT-L/14 shapes (benchmarks, export checks).
CLIP_SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
        vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                    image_size=32, patch_size=8),
        projection_dim=16,
    ),
    "base": dict(text={}, vision={}, projection_dim=512),  # CLIPConfig() defaults = clip-vit-base-patch32
    "large": dict(
        text=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12),
        vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                    image_size=224, patch_size=14),
        projection_dim=768,
    ),
}


def build_clip(out: Path, size: str = "tiny", seed: int = 0) -> Path:
    """Save a random-weight CLIP checkpoint (model, tokenizer, image processor) to ``out``."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    spec = CLIP_SIZES[size]
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406,
                         eos_token_id=49407, pad_token_id=49407, **spec["text"]),
        vision_config=spec["vision"],
        projection_dim=spec["projection_dim"],
    )
    model = CLIPModel(config).eval()
    side = model.vision_model.config.image_size
    return _save(out, model, CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side}),
                 write_clip_tokenizer)


# A few sentences in several scripts: the offline Gemma-pipeline tokenizer's training text
GEMMA_TRAINING_TEXT = [
    "a photo of a cat sleeping on a sofa", "a man in a red jacket riding a bicycle", "a dog running on the beach",
    "ein Hund läuft über die Wiese", "eine Katze schläft auf dem Sofa", "un chat noir sur le canapé",
    "un homme en veste rouge à vélo", "un perro corriendo en la playa", "una foto de un gato", "猫がソファで寝ている",
    "一只猫在沙发上睡觉", "кошка спит на диване", "قطة نائمة على الأريكة", "a red rocket on a launch pad",
    "a cup of coffee on a wooden table", "an astronaut in a white space suit",
]
SIGLIP_CONTEXT = 64


def write_gemma_tokenizer(folder: Path, context: int = SIGLIP_CONTEXT) -> None:
    """A tokenizer with SigLIP 2's (Gemma's) pipeline, its BPE trained on GEMMA_TRAINING_TEXT."""
    from tokenizers import trainers
    from transformers import GemmaTokenizer

    backend = GemmaTokenizer().backend_tokenizer
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"] + [f"<0x{b:02X}>" for b in range(256)]  # byte fallback
    backend.train_from_iterator(GEMMA_TRAINING_TEXT * 4, trainers.BpeTrainer(vocab_size=2000, special_tokens=specials,
                                                                             show_progress=False))
    model = json.loads(backend.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    # (transformers hints list[str]; its tokenizers backend takes (left, right) pairs and refuses strings)
    tokenizer = GemmaTokenizer(vocab=model["vocab"], merges=merges,  # type: ignore[arg-type]
                               add_bos_token=False, add_eos_token=True,
                               padding_side="right", model_max_length=context)
    tokenizer.save_pretrained(folder)


SIGLIP_SIZES: dict[str, dict[str, Any]] = {
    # 16-d embeddings as tiny CLIP's (the image tower's width: SigLIP's text head projects to it), so that a
    # collection of one is refused to the other for its model, not only for its dimension
    "tiny": dict(
        text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, vocab_size=2000,
                  projection_size=16),
        vision=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                    image_size=32, patch_size=8),
    ),
    # google/siglip2-base-patch16-224: ViT-B/16 at 224 px, a 12-layer text tower over Gemma's 256k vocabulary
    "base": dict(text=dict(vocab_size=256000), vision=dict(image_size=224, patch_size=16)),
}


def build_siglip2(out: Path, size: str = "tiny", seed: int = 0) -> Path:
    """Save a random-weight SigLIP 2 checkpoint at fixed resolution (SiglipModel, as google/siglip2-*-patchNN-RES)."""
    import torch
    from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel

    spec = SIGLIP_SIZES[size]
    torch.manual_seed(seed)
    config = SiglipConfig(text_config=dict(max_position_embeddings=SIGLIP_CONTEXT, pad_token_id=0, eos_token_id=1,
                                           bos_token_id=2, **spec["text"]),
                          vision_config=spec["vision"])
    model = SiglipModel(config).eval()
    with torch.no_grad():  # the SigLIP paper's initialisation: t' = log 10, b = -10
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-10.0)
    side = model.vision_model.config.image_size
    return _save(out, model, SiglipImageProcessorPil(size={"height": side, "width": side}), write_gemma_tokenizer)


MULTILINGUAL_TEXT_SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(bert=dict(dim=32, hidden_dim=64, n_layers=2, n_heads=2), out=16),  # tiny CLIP's 16-d space
    # sentence-transformers/clip-ViT-B-32-multilingual-v1: distilbert-base-multilingual-cased -> 512 (ViT-B/32's space)
    "base": dict(bert=dict(vocab_size=119547), out=512),
}


def build_multilingual_text(out: Path, size: str = "tiny", seed: int = 0) -> Path:
    """Save a random-weight sentence-transformers text tower (DistilBERT, mean pooling, Dense) to ``out``."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer
    from tokenizers import BertWordPieceTokenizer
    from transformers import DistilBertConfig, DistilBertModel, DistilBertTokenizer

    spec = MULTILINGUAL_TEXT_SIZES[size]
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        vocabulary = BertWordPieceTokenizer(lowercase=False, strip_accents=False)
        vocabulary.train_from_iterator(GEMMA_TRAINING_TEXT * 4, vocab_size=1000, show_progress=False)
        vocabulary.save_model(tmp)
        tokenizer = DistilBertTokenizer.from_pretrained(tmp, do_lower_case=False, model_max_length=128)
        bert = DistilBertModel(DistilBertConfig(**{"vocab_size": len(tokenizer), **spec["bert"]})).eval()
        bert.save_pretrained(Path(tmp, "bert"))
        tokenizer.save_pretrained(Path(tmp, "bert"))
        transformer = Transformer(str(Path(tmp, "bert")), max_seq_length=128)
        width = bert.config.dim
        model = SentenceTransformer(modules=[
            transformer, Pooling(width, pooling_mode="mean"),
            Dense(width, spec["out"], bias=False, activation_function=torch.nn.Identity())], device="cpu")
        out.mkdir(parents=True, exist_ok=True)
        model.save(str(out))
    return out


BERT_SPECIALS = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}


@lru_cache(maxsize=1)
def bert_uncased_vocab() -> list[str]:
    """bert-base-uncased's 30,522 WordPiece entries, in id order."""
    import blingfire
    import numpy as np

    model = blingfire.load_model(str(Path(blingfire.__file__).with_name("bert_base_tok.i2w")))
    try:
        vocab = []
        for i in range(30522):
            if i in BERT_SPECIALS:
                vocab.append(BERT_SPECIALS[i])
                continue
            alone = blingfire.ids_to_text(model, np.array([i], np.int32), False)
            after_a = blingfire.ids_to_text(model, np.array([1037, i], np.int32), False)  # 1037 = "a"
            is_unused = alone.startswith("[unused") and alone.endswith("]")
            vocab.append(alone if after_a.startswith("a ") or is_unused else "##" + alone)
    finally:
        blingfire.free_model(model)
    if len(set(vocab)) != len(vocab):
        raise RuntimeError("rebuilt BERT vocabulary has duplicate entries")
    return vocab


def write_blip_tokenizer(folder: Path) -> None:
    """BLIP's tokenizer: BERT uncased + [DEC] (30522, bos) + [ENC] (30523), as Salesforce ships it."""
    from transformers import BertTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "vocab.txt").write_text("\n".join(bert_uncased_vocab()) + "\n")
        tokenizer = BertTokenizer.from_pretrained(tmp, do_lower_case=True, model_max_length=512)
    tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    tokenizer.save_pretrained(folder)


BLIP_SIZES: dict[str, dict[str, Any]] = {
    # vision width != text width, as in BLIP-large (1024 vs 768): the cross-attention shapes differ
    # initializer_range 0.2: a 32-wide random decoder otherwise has nearly flat logits over 30k tokens,
    # where onnxruntime's batch-size-dependent rounding (~1e-6) can flip near-ties between batchings
    "tiny": dict(
        text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  encoder_hidden_size=48, initializer_range=0.2),
        vision=dict(hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                    image_size=32, patch_size=8),
    ),
    # Salesforce/blip-image-captioning-base: ViT-B/16 at 384 px + a BERT-base decoder
    "base": dict(text=dict(num_attention_heads=12), vision={}),
    # Salesforce/blip-image-captioning-large: ViT-L/16 at 384 px
    "large": dict(
        text=dict(num_attention_heads=12, encoder_hidden_size=1024),
        vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16),
    ),
}


def build_blip(out: Path, size: str = "tiny", seed: int = 0) -> Path:
    """Save a random-weight BlipForConditionalGeneration (model, tokenizer, image processor) to ``out``."""
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessorPil

    spec = BLIP_SIZES[size]
    torch.manual_seed(seed)
    config = BlipConfig(
        text_config=dict(vocab_size=30524, bos_token_id=30522, pad_token_id=0, sep_token_id=102, **spec["text"]),
        # BlipVisionConfig's initializer_range defaults to 1e-10: every image would look the same
        vision_config=dict(initializer_range=0.02, **spec["vision"]),
    )
    model = BlipForConditionalGeneration(config).eval()
    side = model.vision_model.config.image_size
    return _save(out, model, BlipImageProcessorPil(size={"height": side, "width": side}), write_blip_tokenizer)


BUILDERS = {"clip": (build_clip, CLIP_SIZES), "blip": (build_blip, BLIP_SIZES), "siglip2": (build_siglip2, SIGLIP_SIZES),
            "multilingual-text": (build_multilingual_text, MULTILINGUAL_TEXT_SIZES)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("family", choices=sorted(BUILDERS))
    parser.add_argument("--size", choices=["tiny", "base", "large"], default="tiny")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    build, _ = BUILDERS[args.family]
    # built beside the destination and renamed into place: a failed build leaves no half-written checkpoint
    partial = args.out.with_name(f".{args.out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        build(partial, args.size, args.seed)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(args.out, ignore_errors=True)
    partial.rename(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
