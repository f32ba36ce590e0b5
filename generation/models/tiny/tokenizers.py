"""Tokenizers for the tiny models, built offline.

The CLIP tokenizer is the real one: open_clip ships CLIP's BPE merges, from
which the Hugging Face `vocab.json`/`merges.txt` pair is derived exactly as
CLIP defines it (byte symbols, their end-of-word forms, one token per merge,
then the two specials): 49,408 tokens, the same ids as the hub's files. The T5
tokenizer is a small character-level Unigram model with T5's special tokens and
conventions (`</s>` appended, `<pad>` = 0), enough for a toy text encoder.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

_CLIP_MERGES = 49152 - 256 - 2  # CLIP keeps this many merges of the BPE file


def write_clip_tokenizer(dest: Path) -> None:
    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    from transformers import CLIPTokenizer

    with gzip.open(default_bpe()) as fh:
        lines = fh.read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : _CLIP_MERGES + 1]]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False))
    (dest / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    CLIPTokenizer(str(dest / "vocab.json"), str(dest / "merges.txt"), model_max_length=77).save_pretrained(
        dest
    )


def write_t5_tokenizer(dest: Path) -> int:
    """Write a tiny T5-style tokenizer to `dest`; return its vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    chars = [chr(c) for c in range(32, 127)]
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(c, -3.0) for c in chars] + [("\u2581" + c, -2.5) for c in chars]
    tok = Tokenizer(models.Unigram(pieces, unk_id=2))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = T5TokenizerFast(
        tokenizer_object=tok,
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_ids=0,
        model_max_length=512,
    )
    fast.save_pretrained(dest)
    return len(fast)
