"""The seed-style baseline: what the original one-file service does, for side-by-side load tests.

transformers BLIP + CLIP in PyTorch, loaded once, run per request with no batching (synchronous
FastAPI handlers in the thread pool), the Hugging Face processors for preprocessing, and a FAISS
flat inner-product index in memory, as the starter kit's build_index.py / query_search.py did.
Same routes and form fields as the gateway for the benchmarked calls:

    POST /embed-image/       file                 -> {"description", "embedding_vector"}
    POST /v1/images          files (one or many)  -> indexes them (to seed the search benchmarks)
    POST /v1/search/image    file, k              -> {"results": [{"id", "score"}]}
    GET  /v1/search/text     q, k                 -> {"results": [{"id", "score"}]}

    python -m bench.baseline_service --clip .cache/clip-base --blip .cache/blip-base --port 8100
"""

from __future__ import annotations

import argparse
import hashlib
import io
import threading
from typing import Annotated

import numpy as np
import torch
from fastapi import FastAPI, File, Form, UploadFile
from PIL import Image


def features(output) -> torch.Tensor:
    """get_*_features gives a tensor in transformers 4 and an output with pooler_output in 5."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def create_app(clip: str, blip: str, max_new_tokens: int = 20, num_beams: int = 1) -> FastAPI:
    import faiss
    from transformers import BlipForConditionalGeneration, BlipProcessor, CLIPModel, CLIPProcessor

    clip_model, clip_processor = CLIPModel.from_pretrained(clip).eval(), CLIPProcessor.from_pretrained(clip)
    blip_model, blip_processor = BlipForConditionalGeneration.from_pretrained(blip).eval(), BlipProcessor.from_pretrained(blip)
    index = faiss.IndexFlatIP(clip_model.config.projection_dim)
    ids: list[str] = []
    lock = threading.Lock()
    app = FastAPI(title="seed-style baseline")

    def embed(image: Image.Image) -> np.ndarray:
        with torch.no_grad():
            vector = features(clip_model.get_image_features(**clip_processor(images=image, return_tensors="pt")))[0]
        return (vector / vector.norm()).numpy()

    def caption(image: Image.Image) -> str:
        with torch.no_grad():
            out = blip_model.generate(**blip_processor(images=image, return_tensors="pt"), max_new_tokens=max_new_tokens,
                                      num_beams=num_beams)
        return blip_processor.decode(out[0], skip_special_tokens=True)

    def search(vector: np.ndarray, k: int) -> dict:
        with lock:
            scores, rows = index.search(vector[None].astype(np.float32), min(k, max(len(ids), 1)))
        return {"results": [{"id": ids[r], "score": float(s)} for r, s in zip(rows[0], scores[0]) if r >= 0]}

    @app.get("/readyz")
    def readyz():
        return {"status": "ready"}

    @app.post("/embed-image/")
    def embed_image(file: Annotated[UploadFile, File()]):
        image = Image.open(io.BytesIO(file.file.read())).convert("RGB")
        return {"description": caption(image), "embedding_vector": embed(image).tolist()}

    @app.post("/v1/images")
    def index_images(files: Annotated[list[UploadFile], File()]):
        done = []
        for upload in files:
            data = upload.file.read()
            image = Image.open(io.BytesIO(data)).convert("RGB")
            vector, text = embed(image), caption(image)
            with lock:
                index.add(vector[None].astype(np.float32))
                ids.append(hashlib.sha256(data).hexdigest()[:32])
            done.append({"id": ids[-1], "caption": text})
        return {"images": done}

    @app.post("/v1/search/image")
    def search_image(file: Annotated[UploadFile, File()], k: Annotated[int, Form()] = 10):
        return search(embed(Image.open(io.BytesIO(file.file.read())).convert("RGB")), k)

    @app.get("/v1/search/text")
    def search_text(q: str, k: int = 10):
        with torch.no_grad():
            vector = features(clip_model.get_text_features(**clip_processor(text=[q], return_tensors="pt", padding=True)))[0]
        return search((vector / vector.norm()).numpy(), k)

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", required=True, help="CLIP hub id or folder")
    parser.add_argument("--blip", required=True, help="BLIP captioning hub id or folder")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--num-beams", type=int, default=1)
    args = parser.parse_args(argv)
    app = create_app(args.clip, args.blip, args.max_new_tokens, args.num_beams)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
