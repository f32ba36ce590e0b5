"""What every Kokoro-82M source shares: voices, emotions, sentences, timings, the slot cut.

A source (`KokoroOnnx`, `KokoroTorch`) only says how one sentence's phonemes
become audio, and, when its model reports them, how many samples each input
token took. Everything else, the seed's `synthesize` contract included, lives
here once. Emotions change the delivery in two documented ways: speaking rate,
and the prosody half of the style vector (its last 128 values, which drive
pitch and energy prediction) scaled up for livelier or down for flatter speech.
Everything is deterministic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import torch

from generation.errors import VortexError
from generation.models.cancel import cancel_point

SAMPLE_RATE = 24000
MAX_TOKENS = 510  # the voice packs hold one style vector per input length up to this
SENTENCE_GAP_SEC = 0.25


@dataclass(frozen=True)
class Emotion:
    rate: float  # multiplies the recipe's speed
    prosody: float  # scales the prosody half of the style vector


EMOTIONS: dict[str, Emotion] = {
    "neutral": Emotion(rate=1.0, prosody=1.0),
    "excited": Emotion(rate=1.1, prosody=1.25),
    "sad": Emotion(rate=0.88, prosody=0.75),
    "angry": Emotion(rate=1.05, prosody=1.4),
    "manic": Emotion(rate=1.22, prosody=1.5),
}

_VOWELS = set("aeiouæɑɐɒɔəɛɜɪʊʌAIOWYᵊᵻi")
_PAUSES = {",": 4.0, ".": 6.0, "!": 6.0, "?": 6.0, ";": 5.0, ":": 5.0, "—": 5.0}


class SpeechError(VortexError, ValueError):
    """The script cannot be spoken (empty, unpronounceable) or a setting is out of range."""


@dataclass(frozen=True)
class PhonemeTiming:
    phoneme: str
    start: int  # sample index, inclusive
    end: int  # sample index, exclusive


@dataclass(frozen=True)
class WordTiming:
    word: str
    start: int
    end: int


@dataclass
class SpeechResult:
    audio: torch.Tensor  # (num_samples,) float32 in [-1, 1], at SAMPLE_RATE
    sample_rate: int
    phonemes: list[PhonemeTiming] = field(default_factory=list)
    words: list[WordTiming] = field(default_factory=list)
    sentences_spoken: int = 0
    sentences_total: int = 0
    truncated: bool = False  # the script was longer than the slot and was cut


class Utterance:
    """One sentence between planning and audio.

    `num_samples` is its whole length and `durations` the samples each input
    token (BOS, phonemes, EOS) takes, where the source knows them. Splitting the
    two lets the slot stop before rendering a sentence that would not fit, and
    `render(max_samples)` make only the part that does: a source that predicts
    durations first (the torch Kokoro) does no work past the limit.
    """

    def __init__(self, audio: np.ndarray, durations: list[int] | None = None) -> None:
        self._audio = audio
        self.num_samples = len(audio)
        self.durations = durations

    def render(self, max_samples: int | None = None) -> np.ndarray:
        return self._audio if max_samples is None else self._audio[:max_samples]


def split_sentences(text: str) -> list[str]:
    parts = re.split(r"(?<=[.!?])\s+|\n+", text.strip())
    return [p.strip() for p in parts if p.strip()]


def halve(sentence: str) -> tuple[str, str] | None:
    """Two non-empty halves of a sentence, cut after the clause mark (, ; : —) nearest its middle,
    else at the space nearest it; None for a single word."""
    middle = len(sentence) / 2
    for pattern in (r"[,;:—]\s+", r"\s+"):
        cuts = [
            m.end()
            for m in re.finditer(pattern, sentence)
            if sentence[: m.start()].strip() and sentence[m.end() :].strip()
        ]
        if cuts:
            cut = min(cuts, key=lambda c: abs(c - middle))
            return sentence[:cut].strip(), sentence[cut:].strip()
    return None


def _weight(phoneme: str) -> float:
    if phoneme in _PAUSES:
        return _PAUSES[phoneme]
    if phoneme.isspace():
        return 0.5
    if phoneme in "ˈˌː":
        return 0.0
    return 1.6 if phoneme in _VOWELS else 1.0


class KokoroSpeech:
    """The seed's speech API over one source's `_infer`; thread-safe for concurrent synthesis."""

    voices: dict[str, dict[str, float]]
    packs: dict[str, np.ndarray]  # pack name -> (MAX_TOKENS, 1, 256) style vectors
    vocab: dict[str, int]

    def _prepare(self, phonemes: str, voice_id: str, emotion: str, speed: float) -> Utterance:
        """One sentence, ready to render: its length is known before any audio is made where the source can."""
        raise NotImplementedError

    # -- helpers --
    def style(self, voice_id: str, emotion: str, num_tokens: int) -> np.ndarray:
        if voice_id not in self.voices:
            raise SpeechError(f"unknown voice {voice_id!r} (known: {', '.join(self.voices)})")
        blend = self.voices[voice_id]
        total = sum(blend.values())
        index = min(max(num_tokens, 1), MAX_TOKENS) - 1
        ref = sum(self.packs[p][index, 0] * (w / total) for p, w in blend.items())
        ref = np.array(ref, dtype=np.float32)
        ref[128:] *= EMOTIONS[emotion].prosody
        return ref.reshape(1, 256)

    def phonemize(self, sentence: str) -> tuple[str, list[tuple[str, str]]]:
        """Phonemes the model knows, and (word, phonemes) pairs."""
        phonemes, tokens = self.g2p(sentence)
        known = "".join(c for c in phonemes if c in self.vocab)
        words = [
            (t.text, "".join(c for c in (t.phonemes or "") if c in self.vocab))
            for t in tokens
            if any(ch.isalnum() for ch in t.text)
        ]
        return known, words

    def phonemize_chunks(self, sentence: str) -> list[tuple[str, list[tuple[str, str]]]]:
        """`phonemize`, in pieces that fit the model's context (MAX_TOKENS phonemes).

        A sentence too long for one call is halved at the clause mark nearest its
        middle, else at the word nearest it, until every piece fits: nothing of
        the script is dropped silently. Only a single word longer than the context
        is cut.
        """
        phonemes, words = self.phonemize(sentence)
        if len(phonemes) <= MAX_TOKENS:
            return [(phonemes, words)]
        halves = halve(sentence)
        if halves is None:
            return [(phonemes[:MAX_TOKENS], words)]
        return [*self.phonemize_chunks(halves[0]), *self.phonemize_chunks(halves[1])]

    # -- the seed's API --
    def synthesize(
        self,
        text: str,
        voice_id: str = "rick_c137",
        speed: float = 1.0,
        emotion: str = "neutral",
        *,
        max_duration_sec: float | None = None,
        output: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Speech for `text` as a (num_samples,) tensor at 24 kHz (written into `output` if given)."""
        return self.synthesize_with_timings(
            text, voice_id, speed, emotion, max_duration_sec=max_duration_sec, output=output
        ).audio

    def synthesize_with_timings(
        self,
        text: str,
        voice_id: str = "rick_c137",
        speed: float = 1.0,
        emotion: str = "neutral",
        *,
        max_duration_sec: float | None = None,
        output: torch.Tensor | None = None,
    ) -> SpeechResult:
        if not 0.8 <= speed <= 1.2:
            raise SpeechError(f"speed must be within 0.8..1.2, got {speed}")
        if emotion not in EMOTIONS:
            raise SpeechError(f"unknown emotion {emotion!r} (known: {', '.join(EMOTIONS)})")
        if voice_id not in self.voices:
            raise SpeechError(f"unknown voice {voice_id!r} (known: {', '.join(self.voices)})")
        sentences = split_sentences(text)
        if not sentences:
            raise SpeechError("the script is empty")
        limit = None
        if max_duration_sec is not None:
            limit = int(max_duration_sec * SAMPLE_RATE)
        if output is not None:
            limit = min(limit, output.numel()) if limit is not None else output.numel()
        rate = speed * EMOTIONS[emotion].rate
        gap = np.zeros(int(SENTENCE_GAP_SEC * SAMPLE_RATE), np.float32)
        pieces: list[np.ndarray] = []
        result = SpeechResult(torch.empty(0), SAMPLE_RATE, sentences_total=len(sentences))
        cursor = 0
        chunks = (piece for sentence in sentences for piece in enumerate(self.phonemize_chunks(sentence)))
        for piece, (phonemes, words) in chunks:
            cancel_point()
            if piece:  # a sentence too long for the context: each further piece counts as one
                result.sentences_total += 1
            if not any(c.isalpha() for c in phonemes):  # punctuation alone is not speech
                continue
            utterance = self._prepare(phonemes, voice_id, emotion, rate)
            start = cursor + (len(gap) if pieces else 0)
            if limit is not None and start + utterance.num_samples > limit:
                result.truncated = True
                if not pieces:  # not even the first sentence fits: cut it at the slot's end
                    audio = utterance.render(limit)
                    self._time(result, phonemes, words, 0, len(audio), utterance.durations)
                    pieces.append(audio)
                    result.sentences_spoken += 1
                break
            audio = utterance.render()
            if pieces:
                pieces.append(gap)
            pieces.append(audio)
            self._time(result, phonemes, words, start, start + len(audio), utterance.durations)
            cursor = start + len(audio)
            result.sentences_spoken += 1
        if not pieces:
            raise SpeechError("nothing in the script is pronounceable")
        waveform = torch.from_numpy(np.concatenate(pieces))
        if output is not None:
            output[: len(waveform)].copy_(waveform.to(output.dtype))
            result.audio = output[: len(waveform)]
        else:
            result.audio = waveform
        return result

    @staticmethod
    def _time(
        result: SpeechResult,
        phonemes: str,
        words: list[tuple[str, str]],
        start: int,
        end: int,
        durations: list[int] | None = None,
    ) -> None:
        """Phoneme and word sample ranges: the model's own durations when it gives them, else derived.

        Derived: the sentence's range shared among its phonemes in proportion to a
        per-phoneme weight (vowels longer than consonants, pauses for punctuation).
        """
        if durations is not None and len(durations) == len(phonemes) + 2:
            edges = [start + sum(durations[:1])]
            for d in durations[1:-1]:
                edges.append(edges[-1] + d)
            edges = [min(e, end) for e in edges]
        else:
            weights = [_weight(p) for p in phonemes]
            total = sum(weights) or 1.0
            span = end - start
            edges = [start]
            acc = 0.0
            for w in weights:
                acc += w
                edges.append(start + round(span * acc / total))
        for i, p in enumerate(phonemes):
            if not p.isspace() and edges[i + 1] > edges[i]:
                result.phonemes.append(PhonemeTiming(p, edges[i], edges[i + 1]))
        # words: walk the phoneme string in order, matching each word's phonemes
        pos = 0
        for word, ph in words:
            if not ph:
                continue
            found = phonemes.find(ph, pos)
            if found < 0:
                continue
            result.words.append(WordTiming(word, edges[found], edges[found + len(ph)]))
            pos = found + len(ph)
