"""The checkpoints exported and served when nobody names others: the original service's models."""

DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"
DEFAULT_BLIP_MODEL = "Salesforce/blip-image-captioning-base"
