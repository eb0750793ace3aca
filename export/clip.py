"""Embedding towers (CLIP, SigLIP, SigLIP 2: export.families) -> two ONNX graphs (clip_image, clip_text)
in a Triton model repository, gated on parity. The names are the slots the gateway calls; the manifests
say which family fills them.

clip_image: uint8 RGB pixels (N, S, S, 3) -> L2-normalised embeddings (N, D); rescale, normalise
            and the NHWC->NCHW transpose run inside the graph.
clip_text:  token ids and attention mask (N, L) int64 -> L2-normalised embeddings (N, D), padded as
            text.json (gateway.runtime.text.TextSpec) says: CLIP to a multiple of 16 tokens, not 77 (the
            gate checks each text at that length against PyTorch at 77); SigLIP always to its 64. The
            gate also checks that the gateway's tokenizer (tokenizers, from the files installed) gives
            transformers' ids for every parity text.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gateway.runtime.preprocess import PixelSpec, preprocess
from gateway.runtime.text import TEXT_SPEC_FILE, TextSpec, TextTokenizer

from . import onnx_io
from .families import Family, UnsupportedCheckpoint, family_of
from .parity import ParityError, compare_embeddings, parity_session, precision_on, require
from .progress import say, step
from .quantize import Int8Report, int8_report, quantize, retrieval_images, retrieval_texts, top_k_agreement
from .sentence_text import TextSide, sentence_transformer_side
from .sources import fingerprint
from .triton_repo import ModelSpec, StagedModel, Tensor, TritonOptions, is_up_to_date, tensorrt_options

EXPORT_FORMAT = 4  # bump when the graphs or the repository layout change, so re-runs re-export
PARITY_TEXTS = [
    "man in red jacket",
    "a photo of a cat sleeping on a sofa",
    "",
    "Ünïcödé, emoji 🚲 and punctuation!?",
    "a very long caption that keeps going " * 12,  # longer than 77 tokens: truncated
]
PARITY_PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "camera"]  # camera is grayscale


def _towers(model, spec: PixelSpec, family: Family):
    import torch

    class ImageTower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.register_buffer("scale", torch.tensor(1.0 / 255.0))
            self.register_buffer("mean", torch.tensor(spec.image_mean).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(spec.image_std).view(1, 3, 1, 1))

        def forward(self, pixels):
            # Cast first: TensorRT takes uint8 only into Cast/Identity, so uint8 must not reach the Transpose
            x = pixels.to(torch.float32).permute(0, 3, 1, 2) * self.scale
            features = family.image_features(self.model, (x - self.mean) / self.std)
            return torch.nn.functional.normalize(features, dim=-1)

    class TextTower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return torch.nn.functional.normalize(family.text_features(self.model, input_ids, attention_mask), dim=-1)

    return ImageTower().eval(), TextTower().eval()


def parity_photo_bytes() -> list[bytes]:
    """The parity gates' real photos (scikit-image ships them), as JPEG files."""
    import skimage.data
    from PIL import Image

    photos = []
    for name in PARITY_PHOTOS:
        buffer = io.BytesIO()
        Image.fromarray(getattr(skimage.data, name)()).save(buffer, "JPEG", quality=92)
        photos.append(buffer.getvalue())
    return photos


def image_parity_inputs(processor, spec: PixelSpec, seed: int = 0):
    """(reference pixel_values for PyTorch, uint8 pixels for ONNX): real photos through the HF
    processor and through our preprocessing, plus random images already at the model's size."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = parity_photo_bytes()
    noise = rng.integers(0, 256, size=(3, spec.height, spec.width, 3), dtype=np.uint8)
    pil_images = [Image.open(io.BytesIO(p)) for p in photos] + [Image.fromarray(a) for a in noise]
    reference = processor(images=pil_images, return_tensors="pt")["pixel_values"]
    ours = np.stack([preprocess(p, spec) for p in photos] + list(noise))
    return reference, ours


def export_clip(source: str, repository: Path, serving: TritonOptions, force: bool = False, parity_device: str = "cpu",
                text_source: str | None = None) -> dict:
    """Export both towers of ``source`` (hub id or folder) into ``repository``, gated on parity on
    ``parity_device`` (cpu, cuda, tensorrt); with ``text_source``, the text tower from that sentence-transformers
    checkpoint instead (export.sentence_text: a multilingual tower in a CLIP's space). Returns parity figures."""
    import torch
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

    parity = Parity(parity_device, precision_on(parity_device, serving.fp16), serving)
    with step(f"[clip] reading checkpoint {source}" + (f" and text tower {text_source}" if text_source else "")):
        config = AutoConfig.from_pretrained(source)
        family = family_of(config)
        if text_source and family.name != "clip":
            raise UnsupportedCheckpoint(f"--text-model replaces a CLIP text tower; {source} is {family.name}"
                                        " (SigLIP 2's own text tower is multilingual)")
        request = {"source": source, "fingerprint": fingerprint(source, config), "serving": asdict(serving),
                   "format": EXPORT_FORMAT}
        text_request = request if not text_source else {
            **request, "source": text_source, "fingerprint": fingerprint(text_source, AutoConfig.from_pretrained(text_source)),
            "image_source": source}
        if not force and is_up_to_date(repository, "clip_image", request) and \
                is_up_to_date(repository, "clip_text", text_request):
            say(f"[clip] {repository}/clip_image and clip_text are up to date (use --force to re-export)")
            return {}
        model = family.load(source)
        processor = AutoImageProcessor.from_pretrained(source)
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
        except ImportError as exc:  # e.g. SigLIP 1's sentencepiece-only tokenizer
            raise UnsupportedCheckpoint(f"{source}'s tokenizer has no fast form (tokenizer.json), which the gateway"
                                        f" reads: {exc}") from exc
        spec = PixelSpec.from_processor(processor)
        image_tower, text_tower = _towers(model, spec, family)
        own = own_text_side(model, family, tokenizer, text_tower)
        side = own if not text_source else sentence_transformer_side(text_source)
    dim = family.embedding_dim(model)
    labels: dict[str, object] = {"family": family.name, "match_logit": family.match_logit(model)}
    text_labels = dict(labels)
    if text_source:
        if side.dim != dim:
            raise UnsupportedCheckpoint(f"{text_source} gives {side.dim}-d embeddings, {source}'s image tower {dim}-d:"
                                        " they are not in one embedding space")
        # how close it lands to the CLIP's own text tower (English): near 1 for a tower distilled onto it
        english = [t for t in PARITY_TEXTS if t.isascii() and t]
        alignment = float(np.mean(np.sum(side.reference(english) * own.reference(english), axis=1)))
        say(f"[clip_text] {text_source}: mean cosine to {source}'s text tower on English texts {alignment:.4f}")
        text_labels.update(text_tower="sentence-transformers", alignment=round(alignment, 6))
    text = side.spec
    say(f"[clip] {family.name} family: {dim}-d embeddings, texts padded {text.padding} to {text.context} tokens")
    reports = {}

    with tempfile.TemporaryDirectory() as scratch:
        # --- image tower ---------------------------------------------------------------------
        image_spec = ModelSpec(
            "clip_image",
            inputs=(Tensor("pixels", "uint8", (spec.height, spec.width, 3)),),
            outputs=(Tensor("embeddings", "float32", (dim,)),),
            extra_files={"preprocess.json": _write(Path(scratch, "preprocess.json"), spec.to_json())},
        )
        reference_pixels, our_pixels = image_parity_inputs(processor, spec)
        with torch.inference_mode():
            reference = torch.nn.functional.normalize(family.image_features(model, reference_pixels), dim=-1).numpy()
        gates = Int8Gates(spec) if serving.int8 else None
        reports["clip_image"] = _export_tower(
            image_spec, repository, serving, request, image_tower,
            example=(torch.from_numpy(our_pixels[:2]),), feeds=[{"pixels": our_pixels}], reference=reference,
            dynamic_axes={"pixels": {0: "batch"}, "embeddings": {0: "batch"}}, parity=parity, labels=labels,
            int8_gate=gates.image if gates else None)

        # --- text tower ----------------------------------------------------------------------
        tokenizer_dir = Path(scratch, "tokenizer")
        side.tokenizer.model_max_length = text.context
        side.tokenizer.save_pretrained(tokenizer_dir)
        if not (tokenizer_dir / "tokenizer.json").is_file():
            raise UnsupportedCheckpoint(f"{text_source or source}'s tokenizer has no fast form (tokenizer.json), which"
                                        " the gateway reads")
        _write(tokenizer_dir / TEXT_SPEC_FILE, text.to_json())
        text_spec = ModelSpec(
            "clip_text",
            inputs=tuple(Tensor(name, "int64", (-1,), dynamic_range=((text.min_length,), (text.context,)))
                         for name in ("input_ids", "attention_mask")),
            outputs=(Tensor("embeddings", "float32", (dim,)),),
            # flat beside config.pbtxt: Triton warns about any non-numeric sub-folder of a model
            extra_files={p.name: p for p in tokenizer_dir.iterdir()},
        )
        gateway_tokenizer = TextTokenizer(tokenizer_dir, text)
        feeds = gateway_feeds(gateway_tokenizer, side.tokenizer, PARITY_TEXTS, text)
        if gates:
            gates.texts = gateway_feeds(gateway_tokenizer, side.tokenizer, retrieval_texts(), text)
        example = tuple(torch.from_numpy(np.concatenate([f[k] for f in feeds[:1]] * 2)) for k in ("input_ids", "attention_mask"))
        reports["clip_text"] = _export_tower(
            text_spec, repository, serving, text_request, side.module, example=example, feeds=feeds,
            reference=side.reference(PARITY_TEXTS),
            dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                          "embeddings": {0: "batch"}}, parity=parity, labels=text_labels,
            int8_gate=gates.text if gates else None)
    return reports


def own_text_side(model, family: Family, tokenizer, text_tower) -> TextSide:
    """The checkpoint's own text tower; its reference tokenised by transformers at the whole context."""
    import torch

    spec = family.text_spec(model, tokenizer)

    def reference(texts: list[str]) -> np.ndarray:
        full = padded_tokens(tokenizer, texts, spec)
        with torch.inference_mode():
            ids = torch.from_numpy(full["input_ids"])
            # SigLIP as its authors run it: no mask (the gateway's all-ones mask is the same thing)
            mask = torch.from_numpy(full["attention_mask"]) if spec.padding == "bucketed" else None
            return torch.nn.functional.normalize(family.text_features(model, ids, mask), dim=-1).numpy()

    return TextSide(text_tower, tokenizer, spec, reference, family.embedding_dim(model))


def padded_tokens(tokenizer, texts: list[str], text: TextSpec) -> dict[str, np.ndarray]:
    """transformers' tokens of the texts at the whole context (the reference)."""
    tokens = tokenizer([t.lower() for t in texts] if text.lowercase else texts, padding="max_length",
                       max_length=text.context, truncation=True, return_tensors="np")
    return {"input_ids": tokens["input_ids"].astype(np.int64), "attention_mask": tokens["attention_mask"].astype(np.int64)}


def gateway_feeds(ours: TextTokenizer, tokenizer, texts: list[str], text: TextSpec) -> list[dict[str, np.ndarray]]:
    """One feed per text, as the gateway sends it; ParityError unless its ids are transformers' ids
    (padding beyond the gateway's length aside)."""
    reference = padded_tokens(tokenizer, texts, text)
    feeds = []
    for row, sentence in enumerate(texts):
        ids, mask = ours([sentence])
        expected = reference["input_ids"][row]
        if not np.array_equal(ids[0], expected[:ids.shape[1]]) or \
                np.any(reference["attention_mask"][row][ids.shape[1]:]):
            raise ParityError(f"[clip_text] the gateway's tokenizer gives other ids than transformers for {sentence!r}:"
                              f" {ids[0].tolist()} vs {expected.tolist()}")
        feeds.append({"input_ids": ids, "attention_mask": mask})
    return feeds


def _embed(session, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    return np.concatenate([onnx_io.run_in_batches(session, feed, batch_size=8) for feed in feeds])


class Int8Gates:
    """The int8 fidelity gates of both towers (export.quantize): the image tower's retrieval corpus,
    embedded by its fp32 graph, is what the text tower's queries search."""

    def __init__(self, spec: PixelSpec):
        from PIL import Image

        photos = [np.asarray(Image.open(io.BytesIO(p)).convert("RGB")) for p in parity_photo_bytes()]
        self.corpus, self.queries = retrieval_images(photos, spec.height)
        self.corpus_fp32: np.ndarray | None = None
        self.texts: list[dict[str, np.ndarray]] = []

    def image(self, fp32, int8, feeds: list[dict[str, np.ndarray]]) -> Int8Report:
        base, quant = _embed(fp32, feeds), _embed(int8, feeds)
        corpus32, corpus8 = _embed(fp32, [{"pixels": self.corpus}]), _embed(int8, [{"pixels": self.corpus}])
        query32, query8 = _embed(fp32, [{"pixels": self.queries}]), _embed(int8, [{"pixels": self.queries}])
        self.corpus_fp32 = corpus32
        return int8_report("clip_image", np.concatenate([base, corpus32, query32]), np.concatenate([quant, corpus8, query8]),
                           top_k_agreement(query32, corpus32, query8, corpus8), len(query32))

    def text(self, fp32, int8, feeds: list[dict[str, np.ndarray]]) -> Int8Report:
        assert self.corpus_fp32 is not None, "the image tower's gate runs first"
        base, quant = _embed(fp32, feeds + self.texts), _embed(int8, feeds + self.texts)
        query32, query8 = base[len(feeds):], quant[len(feeds):]
        return int8_report("clip_text", base, quant, top_k_agreement(query32, self.corpus_fp32, query8, self.corpus_fp32),
                           len(query32))


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@dataclass(frozen=True)
class Parity:
    """Where the gate runs the exported towers, and the arithmetic it checks there."""

    device: str
    precision: str
    serving: TritonOptions

    def session(self, spec: ModelSpec, path: Path, scratch: Path):
        # TensorRT as deployed (the config's options), its engines built into scratch, not the cache volume
        if self.device != "tensorrt":
            return parity_session(path, self.device)
        cache = scratch / "tensorrt" / spec.name
        cache.mkdir(parents=True)
        return parity_session(path, self.device, tensorrt_options(spec, self.serving, str(cache)))


def _export_tower(spec: ModelSpec, repository: Path, serving: TritonOptions, request: dict, module, example: tuple,
                  feeds: list[dict], reference: np.ndarray, dynamic_axes: dict, parity: Parity, labels: dict,
                  int8_gate: Callable[..., Int8Report] | None = None) -> dict:
    """``labels``: written into the manifest (the family and what its scores mean). ``int8_gate``: with
    --precision int8, (fp32 session, int8 session, feeds) -> its report: the graph that passed parity is
    quantized and installed only if that gate passes too."""
    staged = StagedModel(repository, spec)
    try:
        with step(f"[{spec.name}] exporting ONNX"):
            onnx_io.export_module(module, example, staged.onnx_path, [t.name for t in spec.inputs],
                                  [t.name for t in spec.outputs], dynamic_axes)
            if serving.fp16:
                onnx_io.convert_to_fp16(staged.onnx_path)
        say(f"[{spec.name}] {staged.onnx_path.name}: {onnx_io.megabytes(staged.onnx_path):.1f} MB"
            f" ({'fp16' if serving.fp16 else 'fp32'})")
        with step(f"[{spec.name}] parity against PyTorch on {len(reference)} inputs, on {parity.device}"), \
                tempfile.TemporaryDirectory() as scratch:
            session = parity.session(spec, staged.onnx_path, Path(scratch))
            candidate = np.concatenate([onnx_io.run_in_batches(session, feed, batch_size=2) for feed in feeds])
            report = compare_embeddings(spec.name, reference, candidate, parity.precision, parity.device)
            say(f"[{spec.name}] {report}")
            require(report)
        manifest = {"request": request, "parity": report.as_dict(), "precision": "fp16" if serving.fp16 else "fp32",
                    **labels}
        if int8_gate is not None:
            with step(f"[{spec.name}] int8: quantizing, then its gate against the fp32 graph"):
                fp32_path = staged.onnx_file("fp32.onnx.tmp")
                staged.onnx_path.rename(fp32_path)
                quantize(fp32_path, staged.onnx_path)
                int8 = int8_gate(parity_session(fp32_path, "cpu"), parity_session(staged.onnx_path, "cpu"), feeds)
                fp32_path.unlink()
                say(f"[{spec.name}] {int8}; {onnx_io.megabytes(staged.onnx_path):.1f} MB")
                if not int8.passed:
                    raise ParityError(f"the int8 gate refused the export: {int8}")
            manifest.update(precision="int8", int8=int8.as_dict())
        final = staged.install(serving, manifest)
        say(f"[{spec.name}] installed {final} ({serving.flavour} flavour)")
        return report.as_dict()
    finally:
        staged.discard()
