"""The embedding families `python -m export clip` exports, and what tells them apart.

clip:   OpenAI CLIP (CLIPModel): projections over the pooled outputs; the text tower is causal and
        pools at the end-of-text token, so texts are padded to buckets under a mask; softmax-trained.
siglip: SigLIP and SigLIP 2 at fixed resolution (SiglipModel: google/siglip-*, google/siglip2-*-patchNN-RES;
        SigLIP 2's checkpoints carry Gemma's multilingual tokenizer): no projections (the heads are in
        the towers), the text tower attends to every one of its 64 positions and pools the last, so texts
        are always padded to the whole context; trained on lowercased text with a sigmoid loss, whose
        scale and bias say how likely a text matches an image at a given cosine.
SigLIP 2's NaFlex checkpoints (Siglip2Model: variable resolution and aspect ratio) are refused: their
image tower takes patch sequences and masks, not one fixed-size image.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.runtime.text import TextSpec


class UnsupportedCheckpoint(ValueError):
    """A checkpoint of no family this export knows."""


@dataclass(frozen=True)
class Family:
    name: str
    model_class: str  # the transformers class holding both towers
    padding: str  # TextSpec.padding
    lowercase: bool

    def load(self, source: str):
        import transformers

        return getattr(transformers, self.model_class).from_pretrained(source, attn_implementation="eager").eval()

    def image_features(self, model, pixel_values):
        """The image tower's embedding before L2 normalisation."""
        pooled = model.vision_model(pixel_values=pixel_values).pooler_output
        return model.visual_projection(pooled) if self.name == "clip" else pooled

    def text_features(self, model, input_ids, attention_mask=None):
        """The text tower's embedding before L2 normalisation (SigLIP's mask is all ones or None: the same)."""
        pooled = model.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return model.text_projection(pooled) if self.name == "clip" else pooled

    def embedding_dim(self, model) -> int:
        return model.config.projection_dim if self.name == "clip" else model.config.text_config.projection_size

    def text_spec(self, model, tokenizer) -> TextSpec:
        return TextSpec(model.config.text_config.max_position_embeddings, tokenizer.pad_token, self.padding,
                        self.lowercase)

    def match_logit(self, model) -> tuple[float, float] | None:
        """SigLIP: (scale, bias) of the sigmoid that gives the chance a text matches an image from their cosine."""
        if self.name == "clip":
            return None
        return float(model.logit_scale.detach().exp()), float(model.logit_bias.detach())


FAMILIES = {
    "clip": Family("clip", "CLIPModel", padding="bucketed", lowercase=False),
    "siglip": Family("siglip", "SiglipModel", padding="fixed", lowercase=True),
}


def family_of(config) -> Family:
    """The family of a checkpoint's config (transformers' model_type)."""
    model_type = getattr(config, "model_type", None)
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    if model_type == "siglip2":
        raise UnsupportedCheckpoint("SigLIP 2 NaFlex checkpoints (Siglip2Model, variable resolution) are not exported:"
                                    " use a fixed-resolution SigLIP 2 checkpoint (google/siglip2-base-patch16-224 and"
                                    " the other -patchNN-RES ones, model_type siglip)")
    raise UnsupportedCheckpoint(f"model_type {model_type!r} is not an embedding family this export knows"
                                f" ({', '.join(sorted(FAMILIES))})")
