"""python -m export {clip,blip,decode} [--model HUB_ID_OR_FOLDER] [--repository model_repository] [--flavour ...]

Writes a Triton model repository from Hugging Face checkpoints. Exits 1, naming the model and the
figures, when an export fails its parity gate (or the gate's --parity-device cannot run); nothing is
installed then. ``decode`` (after clip, and blip when captioning) adds decoding on the inference tier
(GATEWAY_DECODE=inference): image_decode and clip_image_bytes, gated on fidelity to the gateway's decode.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from gateway.runtime.blip_decode import DECODE_MEMORY_MB
from gateway.runtime.checkpoints import DEFAULT_BLIP_MODEL, DEFAULT_CLIP_MODEL
from gateway.runtime.onnx_session import ProviderUnavailable

from .families import UnsupportedCheckpoint
from .parity import PARITY_DEVICES, ParityError
from .progress import say
from .triton_repo import FLAVOURS, TritonOptions

FAMILIES = {"clip": ("export.clip", "export_clip", DEFAULT_CLIP_MODEL),
            "blip": ("export.blip", "export_blip", DEFAULT_BLIP_MODEL)}
DEFAULTS = ", ".join(f"{family}: {default}" for family, (_, _, default) in FAMILIES.items())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__.split("\n\n")[1])
    parser.add_argument("family", choices=sorted([*FAMILIES, "decode"]),
                        help="what to export: clip (the embedding towers: CLIP, SigLIP or SigLIP 2, told apart by the"
                             " checkpoint), blip (captions), decode (JPEG decoding on the inference tier)")
    parser.add_argument("--model", help=f"hub id or local checkpoint folder (default: {DEFAULTS})")
    parser.add_argument("--text-model", help="clip: the text tower from this sentence-transformers checkpoint instead, in"
                        " the CLIP's embedding space (e.g. sentence-transformers/clip-ViT-B-32-multilingual-v1 with"
                        " openai/clip-vit-base-patch32: queries in 50+ languages; the image vectors do not change)")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"), help="default: %(default)s")
    parser.add_argument("--flavour", choices=FLAVOURS, default="onnxruntime",
                        help="onnxruntime: Triton's native backend (production); python: python backend + onnxruntime")
    parser.add_argument("--cpu", action="store_true", help="KIND_CPU instances instead of KIND_GPU")
    parser.add_argument("--fp16", action="store_true", help="fp16 weights (GPU serving; parity gate at cosine 0.999)")
    parser.add_argument("--precision", choices=["fp32", "fp16", "int8"],
                        help="fp16: as --fp16; int8: CLIP quantized for CPU serving (with --cpu), gated on fidelity to"
                             " fp32 (cosine mean >= 0.99, min >= 0.98, top-10 agreement >= 0.9); default fp32")
    parser.add_argument("--tensorrt", action="store_true", help="TensorRT execution accelerator (native flavour, GPU)")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--preferred-batch-sizes", type=int, nargs="*", default=())
    parser.add_argument("--queue-delay-us", type=int, default=2000, help="dynamic batcher max queue delay")
    parser.add_argument("--instances", type=int, default=1, help="model instances per device")
    parser.add_argument("--threads", type=int, default=0, help="python flavour: onnxruntime threads per instance")
    parser.add_argument("--decode-memory-mb", type=int, default=DECODE_MEMORY_MB,
                        help="blip_caption: keys/values one decode loop may hold per instance (bigger batches decode in"
                             " several loops)")
    parser.add_argument("--parity-device", choices=PARITY_DEVICES, default="cpu",
                        help="where the parity gate runs the exported graphs: on a GPU host, cuda (or tensorrt for a"
                             " --tensorrt export) checks what will serve (TF32 and fp16 arithmetic, TensorRT's engine)")
    parser.add_argument("--force", action="store_true", help="re-export even when the repository is up to date")
    args = parser.parse_args(argv)
    if args.precision == "fp16":
        args.fp16 = True
    if args.precision == "int8" and args.family != "clip":
        parser.error(f"--precision int8 is offered for CLIP only; {args.family} is exported in fp32 (docs/deployment.md)")
    if args.precision == "int8" and not args.cpu:
        parser.error("--precision int8 is for CPU serving: add --cpu")
    if args.precision == "int8" and (args.fp16 or args.tensorrt):
        parser.error("--precision int8 goes without --fp16 and --tensorrt")
    if args.text_model and args.family != "clip":
        parser.error("--text-model replaces CLIP's text tower: it goes with clip")
    if args.parity_device != "cpu" and args.cpu:
        parser.error(f"--parity-device {args.parity_device} checks a GPU deployment; this one is --cpu")
    if args.parity_device == "tensorrt" and not args.tensorrt:
        parser.error("--parity-device tensorrt checks TensorRT's engine: export with --tensorrt")
    return args


def hub_failure(source: str, why: str) -> str:
    return (f"error: {source} cannot be loaded from the Hugging Face hub ({why}). Without hub access: `make random-models`,"
            f" then `make serve CLIP_MODEL=.cache/clip-base BLIP_MODEL=.cache/blip-base` (README: Without access to the"
            f" Hugging Face hub); or give a local checkpoint folder with --model")


def hub_unreachable(source: str) -> str | None:
    """Why a hub id cannot be loaded, found at once (the hub's name does not resolve and the checkpoint is
    not in the local cache), rather than after transformers' retries; None when it may load."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants, try_to_load_from_cache

    if Path(source).is_dir() or constants.HF_HUB_OFFLINE or isinstance(try_to_load_from_cache(source, "config.json"), str):
        return None
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError as exc:
        return f"{host} does not resolve: {exc.strerror or exc}"
    return None


def export_tier_decode(repository: Path, serving: TritonOptions, start: float) -> int:
    from .decode import export_decode

    try:
        export_decode(repository, serving)
    except ParityError as exc:
        say(f"error: {exc}")
        return 1
    say(f"export finished in {time.perf_counter() - start:.1f}s")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    serving = TritonOptions(flavour=args.flavour, max_batch_size=args.max_batch_size,
                      preferred_batch_sizes=tuple(args.preferred_batch_sizes), queue_delay_us=args.queue_delay_us,
                      instances=args.instances, gpu=not args.cpu, tensorrt=args.tensorrt, fp16=args.fp16,
                      int8=args.precision == "int8",
                      threads=args.threads, decode_memory_mb=args.decode_memory_mb)
    start = time.perf_counter()
    if args.family == "decode":
        return export_tier_decode(args.repository, serving, start)
    module, function, default_model = FAMILIES[args.family]
    source = args.model or default_model
    for checkpoint in filter(None, (source, args.text_model)):
        if (unreachable := hub_unreachable(checkpoint)) is not None:
            say(hub_failure(checkpoint, unreachable))
            return 1
    try:
        export = getattr(importlib.import_module(module), function)
        extra = {"text_source": args.text_model} if args.text_model else {}
        export(source, args.repository, serving, force=args.force, parity_device=args.parity_device, **extra)
    except (ParityError, ProviderUnavailable, UnsupportedCheckpoint) as exc:  # nothing was installed
        say(f"error: {exc}")
        return 1
    except OSError as exc:
        if Path(source).is_dir() or "huggingface" not in f"{type(exc).__module__} {exc}".lower():
            raise
        say(hub_failure(source, str(exc).splitlines()[0]))
        return 1
    say(f"export finished in {time.perf_counter() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
