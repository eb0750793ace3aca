"""BLIP captioning on three ONNX graphs with a numpy decode loop (greedy and beam search).

Used as is by the Triton ``blip_caption`` model (the export copies the runtime package beside its
model.py) and by the gateway's in-process backend, so both produce the same captions. Only numpy,
onnxruntime and tokenizers are needed: no PyTorch, no transformers.

Graphs (written by ``python -m export blip``):
- vision:  pixels uint8 (N, S, S, 3) -> image_embeds (N, P, E)
- init:    input_ids (N, T0), image_embeds -> logits (N, V), self_k/v_i (N, H, T0, d), cross_k/v_i (N, H, P, d)
- step:    input_ids (N, 1), past_self_k/v_i, cross_k/v_i -> logits (N, V), self_k/v_i (N, H, T+1, d)
Cross-attention keys and values are computed once per image and reused for every token.

The search follows transformers' ``generate`` (v5) operation for operation: same logits
processors (repetition penalty, minimum new tokens), same greedy padding of finished rows, same
vectorised beam search (2*K candidates, length penalty, the default early-stopping heuristic).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
class TokenIds:
    bos: int  # [DEC]
    eos: int  # [SEP]
    pad: int  # [PAD]
    layers: int


def log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def apply_processors(scores: np.ndarray, sequences: np.ndarray, prompt_len: int, ids: TokenIds,
                     settings: GenerationSettings) -> np.ndarray:
    """transformers' RepetitionPenaltyLogitsProcessor and MinNewTokensLengthLogitsProcessor."""
    if settings.repetition_penalty != 1.0:
        rows = np.arange(len(scores))[:, None]
        seen = scores[rows, sequences]
        scores[rows, sequences] = np.where(seen < 0, seen * settings.repetition_penalty,
                                           seen / settings.repetition_penalty).astype(scores.dtype)
    if sequences.shape[1] - prompt_len < settings.min_new_tokens:
        scores[:, ids.eos] = -np.inf
    return scores


def topk_desc(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values per row, largest first (stable for ties, like torch.topk on CPU)."""
    part = np.argpartition(-x, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(x, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


class BlipDecoder:
    def __init__(self, vision, init, step, ids: TokenIds):
        self.vision, self.init, self.step, self.ids = vision, init, step, ids
        layers = range(ids.layers)
        self.self_names = [f"self_{kv}_{i}" for i in layers for kv in "kv"]
        self.cross_names = [f"cross_{kv}_{i}" for i in layers for kv in "kv"]

    @classmethod
    def from_folder(cls, folder: Path, threads: int = 0, device: Device = "cpu", device_id: int = 0) -> BlipDecoder:
        """From a blip_caption model folder: blip.json beside config.pbtxt, the graphs in 1/."""
        meta = json.loads((Path(folder) / "blip.json").read_text())
        vision, init, step = (create_session(Path(folder) / "1" / f"{name}.onnx", device, device_id, threads)
                              for name in ("vision", "decoder_init", "decoder_step"))
        return cls(vision, init, step, TokenIds(meta["bos"], meta["eos"], meta["pad"], meta["layers"]))

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        return self.vision.run(None, {"pixels": pixels})[0]

    def _start(self, image_embeds: np.ndarray, prompt: list[int]):
        input_ids = np.tile(np.array([[self.ids.bos, *prompt]], np.int64), (len(image_embeds), 1))
        outputs = self.init.run(None, {"input_ids": input_ids, "image_embeds": image_embeds})
        n = len(self.self_names)
        return input_ids, outputs[0], outputs[1:1 + n], outputs[1 + n:]

    def _next(self, tokens: np.ndarray, self_kv: list, cross_kv: list):
        feed = {"input_ids": tokens.reshape(-1, 1).astype(np.int64)}
        feed.update({f"past_{name}": kv for name, kv in zip(self.self_names, self_kv)})
        feed.update(dict(zip(self.cross_names, cross_kv)))
        outputs = self.step.run(None, feed)
        return outputs[0], outputs[1:]

    def generate(self, image_embeds: np.ndarray, prompt: list[int], settings: GenerationSettings) -> list[list[int]]:
        """Token ids ([DEC] + prompt + generated, no padding) for each image, all with one prompt."""
        if settings.num_beams == 1:
            return self._greedy(image_embeds, prompt, settings)
        return self._beam(image_embeds, prompt, settings)

    def _greedy(self, image_embeds, prompt, settings) -> list[list[int]]:
        sequences, logits, self_kv, cross_kv = self._start(image_embeds, prompt)
        prompt_len = sequences.shape[1]
        unfinished = np.ones(len(sequences), bool)
        for step in range(settings.max_new_tokens):
            scores = apply_processors(logits.astype(np.float32), sequences, prompt_len, self.ids, settings)
            tokens = np.where(unfinished, scores.argmax(axis=-1), self.ids.pad)
            sequences = np.concatenate([sequences, tokens[:, None]], axis=1)
            unfinished &= tokens != self.ids.eos
            if not unfinished.any() or step == settings.max_new_tokens - 1:
                break
            logits, self_kv = self._next(tokens, self_kv, cross_kv)
        return [strip_padding(row, self.ids.pad, prompt_len) for row in sequences]

    def _beam(self, image_embeds, prompt, settings) -> list[list[int]]:
        ids, k = self.ids, settings.num_beams
        start_ids, logits, self_kv, cross_kv = self._start(image_embeds, prompt)
        # every image's beams start identical: run the first step once per image and repeat it
        logits = np.repeat(logits, k, axis=0)
        self_kv = [np.repeat(a, k, axis=0) for a in self_kv]
        cross_kv = [np.repeat(a, k, axis=0) for a in cross_kv]
        batch, prompt_len = len(image_embeds), start_ids.shape[1]
        max_length = prompt_len + settings.max_new_tokens
        keep = 2 * k  # candidates per image: (1 eos + 1) * beams
        top_beams = np.arange(keep) < k

        running = np.full((batch, k, max_length), ids.pad, np.int64)
        running[:, :, :prompt_len] = start_ids[:, None, :]
        finished_seqs = running.copy()
        running_scores = np.zeros((batch, k), np.float32)
        running_scores[:, 1:] = NEG
        finished_scores = np.full((batch, k), NEG, np.float32)
        is_finished = np.zeros((batch, k), bool)
        improvable = np.ones((batch, 1), bool)
        cur_len = prompt_len
        while True:
            flat_running = running[:, :, :cur_len].reshape(batch * k, cur_len)
            log_probs = apply_processors(log_softmax(logits.astype(np.float32)), flat_running, prompt_len, ids, settings)
            vocab = log_probs.shape[-1]
            totals = (log_probs.reshape(batch, k, vocab) + running_scores[:, :, None]).reshape(batch, k * vocab)
            top = topk_desc(totals, keep)
            top_scores = np.take_along_axis(totals, top, axis=1)
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
            self_kv = [a[reorder] for a in self_kv]  # cross k/v: beams of one image share them, no reorder
            logits, self_kv = self._next(running[:, :, cur_len - 1].reshape(-1), self_kv, cross_kv)
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
