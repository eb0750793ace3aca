"""Bytes per image the gateway puts on the wire to Triton, measured on the gateway's own client.

    python -m bench.wire_bytes --repository model_repository --triton 127.0.0.1:8001

Runs the gateway's TritonInference against a live Triton and records the serialised size of every
gRPC ModelInferRequest it sends (the protobuf the channel carries, before HTTP/2 framing), per
model, for one image, a batch of 8, and one text query.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import numpy as np


async def measure(repository: Path, triton_url: str) -> dict:
    from bench.payloads import photo_jpeg
    from gateway.backends.triton import TritonInference
    from gateway.runtime.preprocess import decode_image, to_pixels
    from gateway.settings import Settings
    from gateway.wiring import build_inference

    inference = build_inference(Settings(_env_file=None, inference_mode="triton", triton_url=triton_url,
                                         model_repository=repository, captions=True, caption_beams=1))
    assert isinstance(inference, TritonInference)
    sizes: list[tuple[str, int]] = []
    stub = inference.client._client_stub
    send = stub.ModelInfer

    def recording(request, *args, **kwargs):
        sizes.append((request.model_name, request.ByteSize()))
        return send(request, *args, **kwargs)

    stub.ModelInfer = recording
    info = inference.info
    image = decode_image(photo_jpeg(0))
    result = {}
    try:
        for batch in (1, 8):
            clip = np.stack([to_pixels(image, info.clip_pixels)] * batch)
            blip = np.stack([to_pixels(image, info.blip_pixels)] * batch)
            sizes.clear()
            await inference.embed_images(clip)
            await inference.caption(blip)
            per_model = {model: size / batch for model, size in sizes}
            result[f"batch {batch}"] = {**{m: round(b) for m, b in per_model.items()},
                                        "per image, search (clip_image)": round(per_model["clip_image"]),
                                        "per image, index or /embed-image/ (clip_image + blip_caption)":
                                            round(sum(per_model.values()))}
        sizes.clear()
        await inference.embed_texts(["a man in a red jacket"])
        result["text query (clip_text)"] = sizes[0][1]
    finally:
        await inference.close()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--triton", default="127.0.0.1:8001")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(measure(args.repository, args.triton)), indent=2))


if __name__ == "__main__":
    main()
