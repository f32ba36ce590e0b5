"""Is there a face to animate? A zero-shot question to the resident CLIP ViT-B-32.

LivePortrait's own pipeline finds faces with InsightFace's detector, whose
weights are licensed for non-commercial research only and are not available
here; CLIP is already resident for verification, so the check costs one image
embedding. The actor image counts as a face when the face prompts take at
least `threshold` of the softmax over all prompts.
"""

from __future__ import annotations

import threading

import torch

FACE_PROMPTS = (
    "a close-up portrait photo of a person's face",
    "a portrait of a character's face looking at the camera",
    "a head and shoulders shot of someone talking",
)
OTHER_PROMPTS = (
    "a landscape photo",
    "a photo of an empty room",
    "a photo of an object",
    "a page of text",
    "an abstract pattern",
)
LOGIT_SCALE = 100.0  # CLIP's trained temperature


class FaceCheck:
    def __init__(self, clip, threshold: float) -> None:
        self.clip = clip
        self.threshold = threshold
        self._text: torch.Tensor | None = None
        self._lock = threading.Lock()

    def _prompts(self) -> torch.Tensor:
        with self._lock:
            if self._text is None:
                self._text = torch.stack([self.clip.embed_text(p) for p in (*FACE_PROMPTS, *OTHER_PROMPTS)])
            return self._text

    def probability(self, image: torch.Tensor) -> float:
        """image: (3, H, W) in [0, 1] -> the probability CLIP gives to the face prompts."""
        embedding = self.clip.embed_images(image.unsqueeze(0))[0]
        probs = torch.softmax(LOGIT_SCALE * (self._prompts() @ embedding), dim=0)
        return float(probs[: len(FACE_PROMPTS)].sum())

    def has_face(self, image: torch.Tensor) -> tuple[bool, float]:
        p = self.probability(image)
        return p >= self.threshold, p
