"""BLIP captioning -> three ONNX graphs + a decode loop, installed as the Triton model blip_caption.

optimum cannot export BLIP (optimum#1818), so the graphs are small wrappers exported with torch:
- vision.onnx:        uint8 pixels (N, S, S, 3) -> image_embeds (N, P, E); normalisation in-graph
- decoder_init.onnx:  [DEC] + prompt ids, image_embeds, search inputs -> the first step's best
                      candidates, self k/v and cross k/v
- decoder_step.onnx:  one token per row, the sequences so far, search inputs, past self k/v, cross
                      k/v -> best candidates, self k/v grown by one
- gather_rows.onnx:   rows of each of 2*layers tensors (beam search: one row per beam at the start,
                      the beams' reordering at every step), so that they never leave the device
The search step (log-softmax, repetition penalty, minimum length, top 2*beams) runs inside the
decoder graphs, so the decode loop keeps every key/value tensor on the device and only the
candidates come back per token.

The parity gate runs ``model.generate`` (greedy and beam search, with and without a prompt) and
the numpy decode loop of gateway.runtime.blip_decode on the same images, and refuses the export unless
the generated token ids are identical.
"""

from __future__ import annotations

import io
import json
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from gateway.runtime.blip_decode import BlipDecoder, DecoderSpec, GenerationSettings, strip_padding
from gateway.runtime.onnx_session import Device
from gateway.runtime.preprocess import PixelSpec, preprocess

from . import onnx_io
from .clip import PARITY_PHOTOS, parity_photo_bytes
from .parity import ParityError, compare_embeddings, parity_session, precision_on, require
from .progress import Progress, say, step
from .sources import fingerprint
from .triton_repo import ModelSpec, StagedModel, Tensor, TritonOptions, is_up_to_date

EXPORT_FORMAT = 3  # 3: search (log-softmax, penalties, top-k) and beam reordering inside the decoder graphs
MODEL_DIR = Path(__file__).parent
PARITY_PROMPTS = ["", "a picture of"]
# the decoder graphs' search inputs after their model inputs (gateway.runtime.blip_decode feeds them)
SEARCH_INPUTS = ["running_scores", "penalty", "log_probs", "eos_allowed"]
PARITY_SETTINGS = [GenerationSettings(max_new_tokens=12, num_beams=1),
                   GenerationSettings(max_new_tokens=12, num_beams=3),
                   GenerationSettings(max_new_tokens=8, num_beams=1, repetition_penalty=1.3)]


def _graphs(model, spec: PixelSpec):
    import torch
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    model.requires_grad_(False)
    layers = model.config.text_config.num_hidden_layers
    encoder_width = model.config.text_config.encoder_hidden_size

    def flat(cache) -> list:
        return [t for layer in cache.layers for t in (layer.keys, layer.values)]

    class Vision(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vision = model.vision_model
            self.register_buffer("scale", torch.tensor(1.0 / 255.0))
            self.register_buffer("mean", torch.tensor(spec.image_mean).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(spec.image_std).view(1, 3, 1, 1))

        def forward(self, pixels):
            x = pixels.to(torch.float32).permute(0, 3, 1, 2) * self.scale  # Cast first (TensorRT: uint8 only into Cast)
            return self.vision(pixel_values=(x - self.mean) / self.std).last_hidden_state

    eos = model.config.text_config.sep_token_id

    def search(logits, sequences, running_scores, penalty, log_probs, eos_allowed, candidates):
        """One step of transformers' search on the device: log-softmax (beam search; greedy keeps the raw
        logits), repetition penalty over ``sequences``, EOS masked while ``eos_allowed`` is false, each
        beam's running score added, then the best ``candidates`` of each image over all its beams'
        tokens. Returns (scores, flat indices beam*vocab + token): all the host needs."""
        # elementwise work over the whole vocabulary kept to a subtraction and an addition (greedy subtracts 0)
        scores = logits - log_probs.to(logits.dtype) * torch.logsumexp(logits, dim=-1, keepdim=True)
        seen = torch.gather(scores, 1, sequences)
        scores = scores.scatter(1, sequences, torch.where(seen < 0, seen * penalty, seen / penalty))
        eos_bias = torch.where((torch.arange(scores.shape[-1]) == eos) & ~eos_allowed, float("-inf"), 0.0)
        scores = scores + eos_bias
        images, beams = running_scores.shape
        totals = (scores.reshape(images, beams, -1) + running_scores.unsqueeze(-1)).reshape(images, -1)
        return torch.topk(totals, candidates, dim=1)

    class DecoderInit(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.decoder = model.text_decoder

        def forward(self, input_ids, image_embeds, running_scores, penalty, log_probs, eos_allowed):
            cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
            out = self.decoder(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                          encoder_hidden_states=image_embeds,
                          encoder_attention_mask=torch.ones(image_embeds.shape[:2], dtype=torch.long),
                          past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            # every image's beams start identical: the first step runs once per image, its candidates all
            # come from the first beam (the others start at -1e9), and the decode loop widens the
            # keys/values to one row per beam on the device (gather_rows.onnx)
            top_scores, top_index = search(out.logits[:, -1, :], input_ids, running_scores[:, :1], penalty, log_probs,
                                           eos_allowed, 2 * running_scores.shape[1])
            return (top_scores, top_index, *flat(cache.self_attention_cache), *flat(cache.cross_attention_cache))

    class DecoderStep(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.decoder = model.text_decoder

        def forward(self, input_ids, sequences, running_scores, penalty, log_probs, eos_allowed, *past):
            own, cross = past[:2 * layers], past[2 * layers:]
            cache = EncoderDecoderCache([(own[2 * i], own[2 * i + 1], cross[2 * i], cross[2 * i + 1]) for i in range(layers)])
            batch, patches = cross[0].shape[0], cross[0].shape[2]
            # the cached cross k/v are used; the encoder states only have to be present (and shaped)
            placeholder = torch.zeros(batch, patches, encoder_width)
            mask = torch.ones(batch, own[0].shape[2] + 1, dtype=torch.long)
            out = self.decoder(input_ids=input_ids, attention_mask=mask, encoder_hidden_states=placeholder,
                          encoder_attention_mask=torch.ones(batch, patches, dtype=torch.long),
                          past_key_values=cache, use_cache=True)
            top_scores, top_index = search(out.logits[:, -1, :], sequences, running_scores, penalty, log_probs,
                                           eos_allowed, 2 * running_scores.shape[1])
            return (top_scores, top_index, *flat(out.past_key_values.self_attention_cache))

    return Vision().eval(), DecoderInit().eval(), DecoderStep().eval(), layers


def kv_names(prefix: str, layers: int) -> list[str]:
    return [f"{prefix}_{kv}_{i}" for i in range(layers) for kv in "kv"]


def parity_images(spec: PixelSpec) -> tuple[list, np.ndarray]:
    """Real photos: PIL images for the HF processor, and our uint8 pixels of the same files."""
    from PIL import Image

    photos = parity_photo_bytes()
    return [Image.open(io.BytesIO(p)) for p in photos], np.stack([preprocess(p, spec) for p in photos])


def hf_generate(model, processor, images, prompt: str, settings: GenerationSettings) -> list[list[int]]:
    import torch

    inputs = processor(images=images, text=[prompt] * len(images) if prompt else None, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=settings.max_new_tokens, num_beams=settings.num_beams,
                             repetition_penalty=settings.repetition_penalty, length_penalty=settings.length_penalty,
                             do_sample=False)
    pad = model.config.text_config.pad_token_id
    prompt_len = 1 + (len(processor.tokenizer(prompt, add_special_tokens=False)["input_ids"]) if prompt else 0)
    return [strip_padding(row.numpy(), pad, prompt_len) for row in out]


def export_blip(source: str, repository: Path, serving: TritonOptions, force: bool = False, parity_device: str = "cpu"
                ) -> dict:
    """Export ``source`` (hub id or folder) into ``repository``/blip_caption, gated on parity on
    ``parity_device`` (tensorrt means cuda here: the decode loop is a python model on ONNX Runtime's CUDA
    provider). Returns parity figures."""
    from transformers import AutoConfig, BlipForConditionalGeneration, BlipProcessor

    if serving.fp16:
        raise ValueError("fp16 BLIP export is not supported yet: greedy/beam parity is defined on fp32 ids")
    with step(f"[blip] reading checkpoint {source}"):
        config = AutoConfig.from_pretrained(source)
        request = {"source": source, "fingerprint": fingerprint(source, config), "serving": asdict(serving),
                   "format": EXPORT_FORMAT}
        if not force and is_up_to_date(repository, "blip_caption", request):
            say(f"[blip] {repository}/blip_caption is up to date (use --force to re-export)")
            return {}
        model = BlipForConditionalGeneration.from_pretrained(source).eval()
        processor = BlipProcessor.from_pretrained(source)
    spec = PixelSpec.from_processor(processor.image_processor)
    text = model.config.text_config
    vision, init, step_graph, layers = _graphs(model, spec)
    vision_config = model.config.vision_config
    ids = DecoderSpec(bos=text.bos_token_id, eos=text.sep_token_id, pad=text.pad_token_id, layers=layers,
                   vocab=text.vocab_size, kv_bytes=layers * 2 * text.hidden_size * 4,
                   patches=(vision_config.image_size // vision_config.patch_size) ** 2 + 1)

    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        processor.tokenizer.save_pretrained(scratch / "tokenizer")
        (scratch / "preprocess.json").write_text(spec.to_json())
        (scratch / "blip.json").write_text(json.dumps({**asdict(ids), "defaults": asdict(GenerationSettings())}))
        model_spec = ModelSpec(
            "blip_caption",
            inputs=(Tensor("pixels", "uint8", (spec.height, spec.width, 3)),
                    Tensor("prompt", "bytes", (1,), optional=True),
                    Tensor("max_new_tokens", "int32", (1,), optional=True),
                    Tensor("num_beams", "int32", (1,), optional=True),
                    Tensor("repetition_penalty", "float32", (1,), optional=True)),
            outputs=(Tensor("caption", "bytes", (1,)),),
            extra_files={"preprocess.json": scratch / "preprocess.json", "blip.json": scratch / "blip.json",
                         **{p.name: p for p in (scratch / "tokenizer").iterdir()}},
            python_model=MODEL_DIR / "triton_blip_model.py",
            python_only=True,
        )
        staged = StagedModel(repository, model_spec)
        try:
            device: Device = "cpu" if parity_device == "cpu" else "cuda"
            reports = _export_graphs(staged, model, processor, spec, vision, init, step_graph, layers, ids, device)
            final = staged.install(serving, {"request": request, "parity": reports})
            say(f"[blip_caption] installed {final}")
            return reports
        finally:
            staged.discard()


def _export_graphs(staged: StagedModel, model, processor, spec, vision, init, step_graph, layers, ids, device: Device
                   ) -> dict:
    import torch

    images, pixels = parity_images(spec)
    with step("[blip_caption] exporting vision.onnx"):
        onnx_io.export_module(vision, (torch.from_numpy(pixels[:2]),), staged.onnx_file("vision.onnx"), ["pixels"],
                              ["image_embeds"], {"pixels": {0: "batch"}, "image_embeds": {0: "batch"}})
    vision_session = parity_session(staged.onnx_file("vision.onnx"), device)
    embeds = vision_session.run(None, {"pixels": pixels})[0]
    with torch.inference_mode():
        reference = model.vision_model(pixel_values=processor.image_processor(images=images, return_tensors="pt")
                                       ["pixel_values"]).last_hidden_state.numpy()
    vision_report = require(compare_embeddings("blip_caption/vision", reference.reshape(len(images), -1),
                                               embeds.reshape(len(images), -1), precision_on(device, False), device))
    say(f"[blip_caption] {vision_report}")

    example_embeds = torch.from_numpy(embeds[:2])
    example_ids = torch.tensor([[ids.bos, 1037, 3861]] * 2)  # [DEC] a picture
    beams = 3
    example_search = (torch.zeros(2, beams), torch.tensor([1.0]), torch.tensor([True]), torch.tensor([True]))
    self_names, cross_names = kv_names("self", layers), kv_names("cross", layers)
    rows = {0: "rows"}
    search_axes = {"running_scores": {0: "batch", 1: "beams"}, "top_scores": {0: "batch", 1: "candidates"},
                   "top_index": {0: "batch", 1: "candidates"}}
    with step("[blip_caption] exporting decoder_init.onnx and decoder_step.onnx"):
        onnx_io.export_module(
            init, (example_ids, example_embeds, *example_search), staged.onnx_file("decoder_init.onnx"),
            ["input_ids", "image_embeds", *SEARCH_INPUTS], ["top_scores", "top_index", *self_names, *cross_names],
            {"input_ids": {0: "batch", 1: "prompt"}, "image_embeds": {0: "batch"}, **search_axes,
             **{n: {0: "batch", 2: "prompt"} for n in self_names}, **{n: {0: "batch"} for n in cross_names}})
        with torch.inference_mode():
            widen = torch.arange(2).repeat_interleave(beams)
            past = [t.index_select(0, widen) for t in init(example_ids, example_embeds, *example_search)[2:]]
        past_names = [f"past_{n}" for n in self_names]
        tokens = torch.full((2 * beams, 1), 1037)
        onnx_io.export_module(
            step_graph, (tokens, example_ids.repeat(beams, 1), *example_search, *past),
            staged.onnx_file("decoder_step.onnx"),
            ["input_ids", "sequences", *SEARCH_INPUTS, *past_names, *cross_names],
            ["top_scores", "top_index", *self_names],
            {"input_ids": rows, "sequences": {0: "rows", 1: "length"}, **search_axes,
             **{n: {0: "rows", 2: "past"} for n in past_names}, **{n: rows for n in cross_names},
             **{n: {0: "rows", 2: "length"} for n in self_names}})
        onnx_io.save_gather_rows(staged.onnx_file("gather_rows.onnx"), 2 * layers)

    init_session, step_session, gather_session = (
        parity_session(staged.onnx_file(f"{name}.onnx"), device) for name in ("decoder_init", "decoder_step", "gather_rows"))
    decoder = BlipDecoder(vision_session, init_session, step_session, gather_session, ids, device)
    checked = 0
    progress = Progress("[blip_caption] parity captions", len(PARITY_PROMPTS) * len(PARITY_SETTINGS) * len(images))
    with step(f"[blip_caption] parity: generated ids vs model.generate on {len(images)} images"):
        for prompt in PARITY_PROMPTS:
            prompt_ids = processor.tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
            for settings in PARITY_SETTINGS:
                want = hf_generate(model, processor, images, prompt, settings)
                got = decoder.generate(embeds, prompt_ids, settings)
                for i, (w, g) in enumerate(zip(want, got)):
                    if w != g:
                        raise ParityError(
                            f"parity gate refused the export: blip_caption generated different ids than"
                            f" model.generate for image {PARITY_PHOTOS[i]!r}, prompt {prompt!r}, {settings}:"
                            f"\n  transformers: {w}\n  onnx:         {g}")
                checked += len(want)
                progress.advance(len(want))
    say(f"[blip_caption] generated ids identical to model.generate in {checked}/{checked} captions"
        f" (greedy, beam 3, repetition penalty; with and without a prompt)")
    return {"vision": vision_report.as_dict(), "generate_identical": checked, "device": device}
