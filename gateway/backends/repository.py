"""What both inference backends read from the model repository the export wrote: the models'
inputs and outputs (ModelInfo), CLIP's tokenizer and BLIP's default generation settings."""

from __future__ import annotations

import json
from pathlib import Path

from ..core.errors import ErrorKind, ServiceError
from ..core.protocols import EmbeddingModel, ModelInfo
from ..runtime.blip_decode import GenerationSettings
from ..runtime.preprocess import PixelSpec
from ..runtime.text import TextSpec, TextTokenizer


def _config_dims(config_text: str, section: str) -> list[int]:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    config = text_format.Parse(config_text, mc.ModelConfig())
    return list(getattr(config, section)[0].dims)


def served_models(captions: bool) -> list[str]:
    """The repository's models a gateway serves (BLIP only with captions)."""
    return ["clip_image", "clip_text"] + (["blip_caption"] if captions else [])


TIER_DECODE_MODELS = ["image_decode", "clip_image_bytes"]


def check_tier_decode(repository: Path, captions: bool) -> list[str]:
    """The models decoding on the inference tier needs (export/decode.py), or MISCONFIGURED saying how to
    make them: missing, or made before BLIP was exported when the gateway captions."""
    missing = [m for m in TIER_DECODE_MODELS if not (repository / m / "export.json").is_file()]
    if missing:
        raise ServiceError(ErrorKind.MISCONFIGURED, f"GATEWAY_DECODE=inference, but the model repository"
                           f" {repository.resolve()} has no {', '.join(missing)}: run python -m export decode"
                           " (after clip, and blip when captioning)")
    products = json.loads((repository / "image_decode" / "export.json").read_text())["request"]["products"]
    if captions and "blip_pixels" not in products:
        raise ServiceError(ErrorKind.MISCONFIGURED, "image_decode was exported before blip_caption and cannot make"
                           " BLIP's input: run python -m export decode again")
    return TIER_DECODE_MODELS


def read_model_info(repository: Path, captions: bool) -> ModelInfo:
    """ModelInfo from the repository's files; MISCONFIGURED naming the path when a model is missing."""
    models = served_models(captions)
    missing = [m for m in models if not (repository / m / "export.json").is_file()]
    if missing:
        raise ServiceError(ErrorKind.MISCONFIGURED, f"the model repository {repository.resolve()} has no {', '.join(missing)}"
                           " (GATEWAY_MODEL_REPOSITORY): export the models first (make export, or python -m export)")
    dim = _config_dims((repository / "clip_text" / "config.pbtxt").read_text(), "output")[0]
    blip = PixelSpec.load(repository / "blip_caption" / "preprocess.json") if captions else None
    manifests = {m: json.loads((repository / m / "export.json").read_text()) for m in models}
    sources = {m: manifest["request"]["source"] for m, manifest in manifests.items()}
    clip = manifests["clip_image"]["request"]
    match_logit = manifests["clip_image"].get("match_logit")  # exports before SigLIP wrote no family: CLIP
    return ModelInfo(PixelSpec.load(repository / "clip_image" / "preprocess.json"), blip, dim,
                     TextSpec.load(repository / "clip_text"), sources,
                     {m: precision_of(manifest) for m, manifest in manifests.items()},
                     EmbeddingModel(clip.get("fingerprint") or clip["source"], clip["source"]),
                     manifests["clip_image"].get("family", "clip"), tuple(match_logit) if match_logit else None)


def precision_of(manifest: dict) -> str:
    """fp32, fp16 or int8 (exports before int8 wrote no "precision": fp16 or fp32 from their serving options)."""
    return manifest.get("precision") or ("fp16" if manifest["request"].get("serving", {}).get("fp16") else "fp32")


class RepositoryModels:
    """The repository-derived parts both inference backends share."""

    def __init__(self, repository: Path, captions: bool, caption_settings: GenerationSettings):
        self.repository = repository
        self.info = read_model_info(repository, captions)
        self.tokenize = TextTokenizer(repository / "clip_text", self.info.text)
        self.caption_settings = caption_settings

    def count_tokens(self, texts: list[str]) -> int:
        """The text tower's tokens of the texts, special tokens included (at most the context length each)."""
        return self.tokenize.count(texts)
