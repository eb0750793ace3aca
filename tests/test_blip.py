"""BLIP captioning: ONNX graphs + numpy decode loop against transformers, in-process and through Triton."""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from PIL import Image
from transformers import BlipForConditionalGeneration, BlipProcessor
from tritonclient.utils import InferenceServerException

import export.__main__ as export_cli
import export.blip as blip_export
from export.random_checkpoints import build_blip
from gateway.runtime.blip_decode import BlipDecoder, CaptionText, GenerationSettings
from gateway.runtime.preprocess import PixelSpec, preprocess
from tests.support.images import photo_bytes
from tests.support.references import triton_counts_after, triton_inference_counts

pytestmark = [pytest.mark.integration, pytest.mark.triton]

# images the export's parity gate did not see
NEW_PHOTOS = ["horse", "coins", "hubble_deep_field", "page"]
SETTINGS = [GenerationSettings(max_new_tokens=15, num_beams=1), GenerationSettings(max_new_tokens=15, num_beams=3),
            GenerationSettings(max_new_tokens=10, num_beams=4, length_penalty=0.6, repetition_penalty=1.2),
            GenerationSettings(max_new_tokens=10, num_beams=2, min_new_tokens=6)]


@pytest.fixture(scope="module")
def blip_folder(model_repository):
    return model_repository / "blip_caption"


@pytest.fixture(scope="module")
def captioner(blip_folder):
    return BlipDecoder.from_folder(blip_folder), CaptionText(blip_folder)


@pytest.fixture(scope="module")
def photos(blip_folder):
    spec = PixelSpec.load(blip_folder / "preprocess.json")
    files = [photo_bytes(name, "JPEG") for name in NEW_PHOTOS]
    return files, np.stack([preprocess(f, spec) for f in files])


def test_export_gate_figures_and_layout(export_reports, blip_folder):
    _, reports = export_reports
    assert reports["generate_identical"] == 30 and reports["vision"]["min_cosine"] >= 0.99999
    for name in ("vision.onnx", "decoder_init.onnx", "decoder_step.onnx", "gather_rows.onnx", "model.py"):
        assert (blip_folder / "1" / name).exists()
    runtime = Path(__file__).parents[1] / "gateway" / "runtime"  # copied whole: the repository carries its code
    for source in runtime.glob("*.py"):
        assert (blip_folder / "1" / "gateway" / "runtime" / source.name).read_text() == source.read_text()
    assert (blip_folder / "tokenizer.json").exists() and (blip_folder / "blip.json").exists()


@pytest.mark.parametrize("prompt", ["", "a photo of"])
@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: f"beams{s.num_beams}")
def test_captions_equal_transformers_generate_and_decode(blip_checkpoint, captioner, photos, prompt, settings):
    decoder, text = captioner
    files, pixels = photos
    model = BlipForConditionalGeneration.from_pretrained(blip_checkpoint).eval()
    processor = BlipProcessor.from_pretrained(blip_checkpoint)
    images = [Image.open(io.BytesIO(f)) for f in files]
    inputs = processor(images=images, text=[prompt] * len(images) if prompt else None, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=settings.max_new_tokens, num_beams=settings.num_beams,
                             repetition_penalty=settings.repetition_penalty, length_penalty=settings.length_penalty,
                             min_new_tokens=settings.min_new_tokens or None, do_sample=False)
    want = processor.batch_decode(out, skip_special_tokens=True)
    ids = decoder.generate(decoder.encode(pixels), text.prompt_ids(prompt), settings)
    assert [text.caption(i) for i in ids] == [w.strip() for w in want]
    assert all(caption.startswith(prompt) for caption in want)


@pytest.mark.parametrize("settings", SETTINGS[:2], ids=["greedy", "beam3"])
def test_batched_and_single_agree(captioner, photos, settings):
    decoder, text = captioner
    embeds = decoder.encode(photos[1])
    batched = decoder.generate(embeds, [], settings)
    assert batched == [decoder.generate(embeds[i:i + 1], [], settings)[0] for i in range(len(embeds))]


class RecordingBinding:
    """A real IOBinding that writes down what crosses between numpy and ONNX Runtime."""

    def __init__(self, binding, log: list):
        self.binding, self.log, self.outputs = binding, log, []

    def bind_cpu_input(self, name, array):
        self.log.append(("numpy in", name, array.nbytes))
        self.binding.bind_cpu_input(name, array)

    def bind_ortvalue_input(self, name, value):
        self.log.append(("kept in", name, value.data_ptr()))
        self.binding.bind_ortvalue_input(name, value.value if isinstance(value, RecordingValue) else value)

    def bind_output(self, name, *device):
        self.outputs.append(name)
        self.binding.bind_output(name, *device)

    def get_outputs(self):
        return [RecordingValue(name, value, self.log) for name, value in zip(self.outputs, self.binding.get_outputs())]


class RecordingValue:
    def __init__(self, name, value, log):
        self.name, self.value, self.log = name, value, log
        log.append(("kept out", name, value.data_ptr()))

    def data_ptr(self):
        return self.value.data_ptr()

    def numpy(self):
        array = self.value.numpy()
        self.log.append(("numpy out", self.name, array.nbytes))
        return array


class RecordingSession:
    def __init__(self, session, runs: list):
        self.session, self.runs = session, runs

    def io_binding(self):
        self.runs.append([])
        return RecordingBinding(self.session.io_binding(), self.runs[-1])

    def run_with_iobinding(self, binding):
        self.session.run_with_iobinding(binding.binding)

    def run(self, *args, **kwargs):
        raise AssertionError("the decoder graphs run on IOBinding only: a plain run copies every input")


@pytest.mark.parametrize("settings", [SETTINGS[0], SETTINGS[2]], ids=["greedy", "beam4"])
def test_keys_and_values_stay_in_onnx_runtime_between_steps(captioner, photos, settings):
    """What crosses between numpy and ONNX Runtime per graph run, measured on the real sessions: no
    key/value tensor ever (each one bound as an input is an ONNX Runtime output of an earlier run; the
    cross-attention ones are the very same buffers at every step), and per token only ids, sequences
    and search inputs go in and the (images, 2*beams) candidates come out."""
    decoder, text = captioner
    _, pixels = photos
    runs: list = []
    recording = BlipDecoder(decoder.vision, *(RecordingSession(s, runs) for s in (decoder.init, decoder.step,
                                                                                  decoder.gather_rows)), decoder.ids)
    embeds = decoder.encode(pixels)
    ids = recording.generate(embeds, text.prompt_ids("a photo of"), settings)
    assert ids == decoder.generate(embeds, text.prompt_ids("a photo of"), settings)
    images, beams = len(pixels), settings.num_beams
    produced: set[int] = set()
    cross_bound = []
    for run in runs:
        numpy_names = {name for kind, name, _ in run if kind.startswith("numpy")}
        assert not [name for name in numpy_names if name.startswith(("self_", "past_", "cross_", "x_", "y_"))]
        kept_in = {name: pointer for kind, name, pointer in run if kind == "kept in"}
        assert set(kept_in.values()) <= produced  # made by ONNX Runtime, never from a numpy array
        decoder_run = any(name == "top_index" for _, name, _ in run)
        if decoder_run:
            out = {name: size for kind, name, size in run if kind == "numpy out"}
            assert out == {"top_scores": images * 2 * beams * 4, "top_index": images * 2 * beams * 8}
            host_in = sum(size for kind, name, size in run if kind == "numpy in" and name != "image_embeds")
            assert host_in <= images * beams * (8 * (4 + settings.max_new_tokens) + 4) + 16
            if kept_in:
                cross_bound.append({name: p for name, p in kept_in.items() if name.startswith("cross_")})
        else:  # gather_rows: the reordering's row numbers are all that goes in
            assert numpy_names == {"rows"}
        produced |= {pointer for kind, name, pointer in run if kind == "kept out" and not name.startswith("top_")}
    assert len(cross_bound) >= 4 and all(bound == cross_bound[0] for bound in cross_bound)
    assert len(cross_bound[0]) == 2 * decoder.ids.layers
    assert sum(1 for run in runs if not any(name == "top_index" for _, name, _ in run)) == \
        (0 if beams == 1 else 2 + len(cross_bound))  # beams: widen self + cross once, reorder every step


def test_invalid_settings_are_refused():
    for bad in (dict(num_beams=0), dict(max_new_tokens=0), dict(repetition_penalty=0.0), dict(min_new_tokens=50)):
        with pytest.raises(ValueError):
            GenerationSettings(**bad)


def caption_inputs(pixels, module, prompt=None, num_beams=None, max_new_tokens=None):
    tensors = [module.InferInput("pixels", list(pixels.shape), "UINT8")]
    tensors[0].set_data_from_numpy(pixels)
    n = len(pixels)
    for name, value, dtype, numpy_type in (("prompt", prompt, "BYTES", object), ("num_beams", num_beams, "INT32", np.int32),
                                           ("max_new_tokens", max_new_tokens, "INT32", np.int32)):
        if value is not None:
            tensor = module.InferInput(name, [n, 1], dtype)
            data = [[value.encode()]] * n if dtype == "BYTES" else [[value]] * n
            tensor.set_data_from_numpy(np.array(data, dtype=numpy_type))
            tensors.append(tensor)
    return tensors


def test_triton_caption_equals_in_process_loop(triton, captioner, photos):
    decoder, text = captioner
    pixels = photos[1]
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    for prompt, beams in (("", None), ("a photo of", 1), ("a photo of", 3)):
        result = client.infer("blip_caption", caption_inputs(pixels, grpcclient, prompt or None, beams, 12))
        got = [c[0].decode() for c in result.as_numpy("caption")]
        settings = GenerationSettings(max_new_tokens=12, num_beams=beams or GenerationSettings().num_beams)
        assert got == [text.caption(i) for i in decoder.generate(decoder.encode(pixels), text.prompt_ids(prompt), settings)]


def test_concurrent_mixed_requests_are_batched_and_each_gets_its_own_caption(triton, captioner, photos):
    decoder, text = captioner
    pixels = photos[1]
    cases = [(i % len(pixels), ["", "a photo of"][i % 2], [1, 3][(i // 2) % 2]) for i in range(16)]

    async def run():
        client = aioclient.InferenceServerClient(triton.grpc_url)
        try:
            # every request carries the same input set (empty prompt = none): Triton batches only those
            calls = [client.infer("blip_caption", caption_inputs(pixels[i:i + 1], aioclient, p, b, 10),
                                  client_timeout=120) for i, p, b in cases]
            return [r.as_numpy("caption")[0][0].decode() for r in await asyncio.gather(*calls)]
        finally:
            await client.close()

    before = triton_inference_counts(triton.metrics(), "blip_caption")
    got = asyncio.run(run())
    inferences, executions = triton_counts_after(triton, "blip_caption", before, 16)
    embeds = decoder.encode(pixels)
    for (i, prompt, beams), caption in zip(cases, got):
        settings = GenerationSettings(max_new_tokens=10, num_beams=beams)
        alone = text.caption(decoder.generate(embeds[i:i + 1], text.prompt_ids(prompt), settings)[0])
        # the batcher's grouping depends on timing; rows of a whole-group batch are as valid a reference
        grouped = text.caption(decoder.generate(embeds, text.prompt_ids(prompt), settings)[i])
        assert caption in (alone, grouped), f"request {i, prompt, beams}: {caption!r} vs {alone!r}"
    assert inferences == 16 and executions < 16, f"{inferences} in {executions}"


def test_triton_refuses_bad_settings_and_keeps_serving(triton, photos):
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    with pytest.raises(InferenceServerException, match="num_beams must be in 1..16"):
        client.infer("blip_caption", caption_inputs(photos[1][:1], grpcclient, num_beams=0))
    assert client.infer("blip_caption", caption_inputs(photos[1][:1], grpcclient)).as_numpy("caption").shape == (1, 1)


def test_wrong_decoder_export_is_refused(tmp_path, blip_checkpoint, monkeypatch, capsys):
    """Decoder graphs from other weights: the vision check passes, the generated ids do not."""
    wrong = BlipForConditionalGeneration.from_pretrained(build_blip(tmp_path / "other", seed=1)).eval()
    real_graphs = blip_export._graphs
    monkeypatch.setattr(blip_export, "_graphs",
                        lambda model, spec: (real_graphs(model, spec)[0], *real_graphs(wrong, spec)[1:]))
    args = ["blip", "--model", str(blip_checkpoint), "--repository", str(tmp_path / "repo"), "--flavour", "python"]
    assert export_cli.main(args) == 1
    assert re.search(r"blip_caption generated different ids than model.generate for image", capsys.readouterr().err)
    assert not (tmp_path / "repo" / "blip_caption").exists()


def test_a_batch_past_the_memory_budget_decodes_in_several_loops_with_the_same_ids(captioner, photos, blip_folder):
    decoder, text = captioner
    embeds = decoder.encode(photos[1])
    settings = SETTINGS[1]
    row = decoder.ids.kv_bytes * (decoder.ids.patches + 2 * (1 + settings.max_new_tokens))
    small = BlipDecoder.from_folder(blip_folder, memory_mb=2.5 * row * settings.num_beams / 2**20)
    assert small.images_per_loop(0, settings) == 2 < len(embeds)
    loops = []
    small._beam = lambda batch, prompt, s: loops.append(len(batch)) or BlipDecoder._beam(small, batch, prompt, s)
    assert small.generate(embeds, [], settings) == decoder.generate(embeds, [], settings)
    assert sum(loops) == len(embeds) and max(loops) == small.images_per_loop(0, settings) and len(loops) > 1
