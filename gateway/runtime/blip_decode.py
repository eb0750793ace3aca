"""BLIP captioning on three ONNX graphs with a host-side decode loop (greedy and beam search) that
keeps every key/value tensor on the device.

Used as is by the Triton ``blip_caption`` model (the export copies the runtime package beside its
model.py) and by the gateway's in-process backend, so both produce the same captions. Only numpy,
onnxruntime and tokenizers are needed: no PyTorch, no transformers.

Graphs (written by ``python -m export blip``), N images, B beams, R = N*B rows:
- vision:  pixels uint8 (N, S, S, 3) -> image_embeds (N, P, E)
- init:    input_ids (N, T0), image_embeds, search inputs -> top_scores/top_index (N, 2B),
           self_k/v_i (N, H, T0, d), cross_k/v_i (N, H, P, d)
- step:    input_ids (R, 1), sequences (R, T), search inputs, past_self_k/v_i, cross_k/v_i
           -> top_scores/top_index (N, 2B), self_k/v_i (R, H, T+1, d)
- gather_rows: rows (M,), x_i -> y_i = x_i[rows] (beam search only: one row per beam after init,
           each step's reordering of the self k/v)
Search inputs: running_scores (N, B), penalty (1,), log_probs (1,) bool, eos_allowed (1,) bool.
The graphs do the per-token search work (log-softmax, repetition penalty, minimum length, each
beam's score added, top 2B per image), so the keys and values live in ONNX Runtime values on the
session's device (IOBinding): cross-attention keys/values are computed once per image and never
copied back, self-attention ones are fed back as the previous step's outputs, and per token only
the token ids, the sequences (and for beams the reordering) go in and (N, 2B) candidates come out.

The search follows transformers' ``generate`` (v5) operation for operation: same logits
processors (repetition penalty, minimum new tokens), same greedy padding of finished rows, same
vectorised beam search (2*K candidates, length penalty, the default early-stopping heuristic).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .onnx_session import Device, create_session

NEG = -1.0e9


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 20
    num_beams: int = 3
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0
    min_new_tokens: int = 0

    def __post_init__(self):
        if not 1 <= self.max_new_tokens <= 128:
            raise ValueError("max_new_tokens must be in 1..128")
        if not 1 <= self.num_beams <= 16:
            raise ValueError("num_beams must be in 1..16")
        if not 0.5 <= self.repetition_penalty <= 5.0:
            raise ValueError("repetition_penalty must be in 0.5..5")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError("min_new_tokens must be in 0..max_new_tokens")


@dataclass(frozen=True)
class DecoderSpec:
    bos: int  # [DEC]
    eos: int  # [SEP]
    pad: int  # [PAD]
    layers: int
    vocab: int
    kv_bytes: int  # bytes of keys + values one row holds per position (all layers, fp32)
    patches: int  # cross-attention positions (image patches + 1)


def topk_desc(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values per row, largest first (stable for ties, like torch.topk on CPU)."""
    part = np.argpartition(-x, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(x, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


# The keys/values one decode loop may hold on its device, unless configured (export --decode-memory-mb,
# GATEWAY_CAPTION_MEMORY_MB): BLIP base holds ~43 MB per image and beam, so ~32 images at 3 beams.
# Larger batches decode in several loops.
DECODE_MEMORY_MB = 4096


class BlipDecoder:
    def __init__(self, vision, init, step, gather_rows, ids: DecoderSpec, device: Device = "cpu", device_id: int = 0,
                 memory_mb: float = DECODE_MEMORY_MB):
        self.vision, self.init, self.step, self.gather_rows, self.ids = vision, init, step, gather_rows, ids
        self.memory_bytes = int(memory_mb * 2**20)  # keys/values one decode loop may hold on its device
        self.device, self.device_id = device, device_id
        self.self_names = [f"self_{kv}_{i}" for i in range(ids.layers) for kv in "kv"]
        self.cross_names = [f"cross_{kv}_{i}" for i in range(ids.layers) for kv in "kv"]

    @classmethod
    def from_folder(cls, folder: Path, threads: int = 0, device: Device = "cpu", device_id: int = 0,
                    memory_mb: float = DECODE_MEMORY_MB) -> BlipDecoder:
        """From a blip_caption model folder: blip.json beside config.pbtxt, the graphs in 1/."""
        meta = json.loads((Path(folder) / "blip.json").read_text())
        if "kv_bytes" not in meta:
            raise ValueError(f"{folder} was exported for an older decode loop (before export format 3): export it again"
                             " (python -m export blip --force, or make serve / make triton)")
        vision, init, step, gather_rows = (create_session(Path(folder) / "1" / f"{name}.onnx", device, device_id, threads)
                                           for name in ("vision", "decoder_init", "decoder_step", "gather_rows"))
        fields = ("bos", "eos", "pad", "layers", "vocab", "kv_bytes", "patches")
        return cls(vision, init, step, gather_rows, DecoderSpec(**{f: meta[f] for f in fields}), device, device_id, memory_mb)

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        return self.vision.run(None, {"pixels": pixels})[0]

    def _bound_run(self, session, host: dict[str, np.ndarray], kept: dict[str, ort.OrtValue], host_out: list[str],
                   kept_out: list[str]) -> tuple[list[np.ndarray], list[ort.OrtValue]]:
        """One graph run on IOBinding: ``host`` arrays are bound as inputs (ONNX Runtime copies them to the
        device), ``kept`` values are already there and bound as they are; ``host_out`` come back to the
        host, the ``kept_out`` outputs stay on the device for the next run."""
        binding = session.io_binding()
        for name, array in host.items():
            binding.bind_cpu_input(name, array)
        for name, value in kept.items():
            binding.bind_ortvalue_input(name, value)
        for name in host_out:
            binding.bind_output(name, "cpu")
        for name in kept_out:
            binding.bind_output(name, self.device, self.device_id)
        session.run_with_iobinding(binding)
        values = binding.get_outputs()
        return [value.numpy() for value in values[:len(host_out)]], values[len(host_out):]

    def _run(self, session, host: dict[str, np.ndarray], kept: dict[str, ort.OrtValue], kept_out: list[str]
             ) -> tuple[np.ndarray, np.ndarray, list[ort.OrtValue]]:
        """A decoder graph: its candidates to the host, its keys/values kept on the device."""
        (top_scores, top_index), kept_values = self._bound_run(session, host, kept, ["top_scores", "top_index"],
                                                               kept_out)
        return top_scores, top_index, kept_values

    def _rows(self, values: list[ort.OrtValue], rows: np.ndarray) -> list[ort.OrtValue]:
        """values[i][rows] for each, on the device."""
        _, picked = self._bound_run(self.gather_rows, {"rows": rows.astype(np.int64)},
                                    {f"x_{i}": value for i, value in enumerate(values)}, [],
                                    [f"y_{i}" for i in range(len(values))])
        return picked

    @staticmethod
    def _search_inputs(running_scores: np.ndarray, log_probs: bool, eos_allowed: bool,
                       settings: GenerationSettings) -> dict[str, np.ndarray]:
        return {"running_scores": np.ascontiguousarray(running_scores, np.float32),
                "penalty": np.array([settings.repetition_penalty], np.float32),
                "log_probs": np.array([log_probs]), "eos_allowed": np.array([eos_allowed])}

    def _start(self, image_embeds: np.ndarray, prompt: list[int], running_scores: np.ndarray, log_probs: bool,
               settings: GenerationSettings):
        """The prompt through the decoder: the first candidates, the self k/v and the cross k/v (on the device)."""
        input_ids = np.tile(np.array([[self.ids.bos, *prompt]], np.int64), (len(image_embeds), 1))
        host = {"input_ids": input_ids, "image_embeds": np.ascontiguousarray(image_embeds),
                **self._search_inputs(running_scores, log_probs, settings.min_new_tokens == 0, settings)}
        scores, index, kv = self._run(self.init, host, {}, self.self_names + self.cross_names)
        n = len(self.self_names)
        return input_ids, scores, index, kv[:n], dict(zip(self.cross_names, kv[n:]))

    def _next(self, tokens: np.ndarray, sequences: np.ndarray, running_scores: np.ndarray, log_probs: bool,
              prompt_len: int, settings: GenerationSettings, self_kv: list, cross_kv: dict):
        host = {"input_ids": tokens.reshape(-1, 1).astype(np.int64),
                "sequences": np.ascontiguousarray(sequences, np.int64),
                **self._search_inputs(running_scores, log_probs,
                                      sequences.shape[1] - prompt_len >= settings.min_new_tokens, settings)}
        kept = {**{f"past_{name}": value for name, value in zip(self.self_names, self_kv)}, **cross_kv}
        return self._run(self.step, host, kept, self.self_names)

    def images_per_loop(self, prompt_len: int, settings: GenerationSettings) -> int:
        """How many images one decode loop takes within the memory budget: per beam row the cross k/v, and
        the self k/v at full length twice (a step's input and output are alive together); at least one."""
        row = self.ids.kv_bytes * (self.ids.patches + 2 * (1 + prompt_len + settings.max_new_tokens))
        return max(1, self.memory_bytes // (row * settings.num_beams))

    def generate(self, image_embeds: np.ndarray, prompt: list[int], settings: GenerationSettings) -> list[list[int]]:
        """Token ids ([DEC] + prompt + generated, no padding) for each image, all with one prompt; in as
        many decode loops as the memory budget needs."""
        run = self._greedy if settings.num_beams == 1 else self._beam
        size = self.images_per_loop(len(prompt), settings)
        return [ids for start in range(0, len(image_embeds), size)
                for ids in run(image_embeds[start:start + size], prompt, settings)]

    def _greedy(self, image_embeds, prompt, settings) -> list[list[int]]:
        batch = len(image_embeds)
        no_scores = np.zeros((batch, 1), np.float32)
        sequences, _, index, self_kv, cross_kv = self._start(image_embeds, prompt, no_scores, False, settings)
        prompt_len = sequences.shape[1]
        unfinished = np.ones(batch, bool)
        for step in range(settings.max_new_tokens):
            tokens = np.where(unfinished, index[:, 0], self.ids.pad)  # the best candidate is the argmax
            sequences = np.concatenate([sequences, tokens[:, None]], axis=1)
            unfinished &= tokens != self.ids.eos
            if not unfinished.any() or step == settings.max_new_tokens - 1:
                break
            _, index, self_kv = self._next(tokens, sequences, no_scores, False, prompt_len, settings, self_kv, cross_kv)
        return [strip_padding(row, self.ids.pad, prompt_len) for row in sequences]

    def _beam(self, image_embeds, prompt, settings) -> list[list[int]]:
        ids, k, vocab = self.ids, settings.num_beams, self.ids.vocab
        batch = len(image_embeds)
        running_scores = np.zeros((batch, k), np.float32)
        running_scores[:, 1:] = NEG  # the beams start identical: only the first one's candidates count
        start_ids, top_scores, top, self_kv, cross_kv = self._start(image_embeds, prompt, running_scores, True,
                                                                    settings)
        # one row per beam from here on, widened on the device: the beams of an image share its cross k/v
        # (never reordered), the self k/v follow their beam
        widen = np.repeat(np.arange(batch), k)
        self_kv = self._rows(self_kv, widen)
        cross_kv = dict(zip(cross_kv, self._rows(list(cross_kv.values()), widen)))
        prompt_len = start_ids.shape[1]
        max_length = prompt_len + settings.max_new_tokens
        top_beams = np.arange(2 * k) < k  # candidates per image: (1 eos + 1) * beams

        running = np.full((batch, k, max_length), ids.pad, np.int64)
        running[:, :, :prompt_len] = start_ids[:, None, :]
        finished_seqs = running.copy()
        finished_scores = np.full((batch, k), NEG, np.float32)
        is_finished = np.zeros((batch, k), bool)
        improvable = np.ones((batch, 1), bool)
        cur_len = prompt_len
        while True:
            source_beam, token = top // vocab, top % vocab
            candidates = np.take_along_axis(running, source_beam[:, :, None], axis=1)
            candidates[:, :, cur_len] = token
            hits = (token == ids.eos) | (cur_len + 1 >= max_length)

            # the best K candidates that did not stop carry on
            alive_scores = top_scores + hits.astype(np.float32) * NEG
            pick = topk_desc(alive_scores, k)
            running = np.take_along_axis(candidates, pick[:, :, None], axis=1)
            running_scores = np.take_along_axis(alive_scores, pick, axis=1)
            reorder = (np.take_along_axis(source_beam, pick, axis=1) + np.arange(batch)[:, None] * k).reshape(-1)

            # stopped candidates among the top K compete for the finished slots, length-normalised
            just_finished = hits & top_beams[None, :]
            normalised = top_scores / np.float32((cur_len + 1 - prompt_len) ** settings.length_penalty)
            normalised = normalised + (~improvable).astype(np.float32) * NEG + (~just_finished).astype(np.float32) * NEG
            merged_scores = np.concatenate([finished_scores, normalised], axis=1)
            best = topk_desc(merged_scores, k)
            finished_seqs = np.take_along_axis(np.concatenate([finished_seqs, candidates], axis=1), best[:, :, None], axis=1)
            finished_scores = np.take_along_axis(merged_scores, best, axis=1)
            is_finished = np.take_along_axis(np.concatenate([is_finished, just_finished], axis=1), best, axis=1)

            cur_len += 1
            best_running = running_scores[:, :1] / np.float32((cur_len - prompt_len) ** settings.length_penalty)
            worst_finished = np.where(is_finished, finished_scores.min(axis=1, keepdims=True), NEG)
            improvable &= np.any(best_running > worst_finished, axis=-1, keepdims=True)
            if not improvable.any() or hits.all():
                break
            top_scores, top, self_kv = self._next(running[:, :, cur_len - 1].reshape(-1),
                                                  running[:, :, :cur_len].reshape(batch * k, cur_len), running_scores,
                                                  True, prompt_len, settings, self._rows(self_kv, reorder), cross_kv)
        return [strip_padding(row, ids.pad, prompt_len) for row in finished_seqs[:, 0]]


def strip_padding(row: np.ndarray, pad: int, prompt_len: int) -> list[int]:
    """Drop the padding after the end of a sequence (pad ids inside the prompt are kept)."""
    generated = [int(t) for t in row[prompt_len:]]
    while generated and generated[-1] == pad:
        generated.pop()
    return [int(t) for t in row[:prompt_len]] + generated


class CaptionText:
    """Prompt -> ids and ids -> caption with the tokenizer files shipped beside the model."""

    def __init__(self, folder: Path):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
        config = json.loads((Path(folder) / "tokenizer_config.json").read_text())
        self.clean_up_spaces = bool(config.get("clean_up_tokenization_spaces", False))

    def prompt_ids(self, prompt: str) -> list[int]:
        return self.tokenizer.encode(prompt, add_special_tokens=False).ids if prompt else []

    def caption(self, ids: list[int]) -> str:
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        if self.clean_up_spaces:  # transformers' clean_up_tokenization
            for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                                  (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
                text = text.replace(before, after)
        return text.strip()


def caption_requests(decoder: BlipDecoder, text: CaptionText,
                     requests: list[tuple[np.ndarray, str, GenerationSettings]]) -> list[list[str]]:
    """Caption several requests (pixels, prompt, settings) at once: one vision run for every image,
    one decode loop per distinct (prompt, settings). Returns one list of captions per request."""
    embeds = decoder.encode(np.concatenate([pixels for pixels, _, _ in requests]))
    groups: dict[tuple[str, GenerationSettings], list[tuple[int, int, int]]] = {}
    start = 0
    for index, (pixels, prompt, settings) in enumerate(requests):
        groups.setdefault((prompt, settings), []).append((index, start, start + len(pixels)))
        start += len(pixels)
    results: list[list[str]] = [[] for _ in requests]
    for (prompt, settings), members in groups.items():
        rows = np.concatenate([np.arange(first, last) for _, first, last in members])
        captions = [text.caption(ids) for ids in decoder.generate(embeds[rows], text.prompt_ids(prompt), settings)]
        offset = 0
        for index, first, last in members:
            results[index] = captions[offset:offset + last - first]
            offset += last - first
    return results
