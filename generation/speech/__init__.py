"""Speech for the slot: Kokoro-82M text-to-speech (see kokoro_onnx.py for the sources available)."""

from generation.speech.kokoro_onnx import EMOTIONS, KokoroOnnx, SpeechError, SpeechResult, load_kokoro

__all__ = ["EMOTIONS", "KokoroOnnx", "SpeechError", "SpeechResult", "load_kokoro"]
