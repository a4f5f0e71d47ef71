"""Translation model pieces: a joint BPE tokenizer trained with `tokenizers`, a Marian
transformer built from a config (from scratch), or any seq2seq checkpoint (e.g. opus-mt)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nlp.hf import offline

__all__ = ["MarianSize", "SIZES", "train_bpe", "marian_from_scratch", "load_checkpoint"]


@dataclass(frozen=True)
class MarianSize:
    d_model: int
    layers: int
    heads: int
    ffn: int
    dropout: float
    vocab: int


SIZES = {
    "test": MarianSize(d_model=32, layers=1, heads=2, ffn=64, dropout=0.0, vocab=300),
    "demo": MarianSize(d_model=128, layers=2, heads=4, ffn=256, dropout=0.1, vocab=600),
    "quick": MarianSize(d_model=256, layers=2, heads=4, ffn=512, dropout=0.1, vocab=5000),
    # full: sized so 10 epochs fit in about an hour on 2 CPU cores (0.5 s per 64-pair step)
    "full": MarianSize(d_model=256, layers=3, heads=4, ffn=1024, dropout=0.2, vocab=8000),
}


def train_bpe(texts: Sequence[str], vocab_size: int) -> Any:
    """A byte-level BPE shared by source and target, trained with `tokenizers`; every encoded
    sequence ends with </s> (Marian's convention). Byte level: no unknown characters, and
    decoding restores the exact spacing (detokenised output for sacreBLEU)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from tokenizers.normalizers import NFC
    from tokenizers.trainers import BpeTrainer
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    special = ["<pad>", "</s>", "<unk>"]
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )


def marian_from_scratch(tokenizer: Any, size: MarianSize, max_positions: int = 256) -> Any:
    """A Marian encoder-decoder with shared, tied embeddings, sized by `size`."""
    from transformers import MarianConfig, MarianMTModel

    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    cfg = MarianConfig(
        vocab_size=len(tokenizer),
        d_model=size.d_model,
        encoder_layers=size.layers,
        decoder_layers=size.layers,
        encoder_attention_heads=size.heads,
        decoder_attention_heads=size.heads,
        encoder_ffn_dim=size.ffn,
        decoder_ffn_dim=size.ffn,
        dropout=size.dropout,
        attention_dropout=size.dropout / 3,
        activation_function="relu",
        max_position_embeddings=max_positions,
        scale_embedding=True,
        pad_token_id=pad,
        eos_token_id=eos,
        forced_eos_token_id=eos,
        decoder_start_token_id=pad,  # Marian starts decoding from <pad>
        share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True,
    )
    return MarianMTModel(cfg)


def load_checkpoint(path: str) -> tuple[Any, Any]:
    """Any local seq2seq checkpoint folder or a hub id already in the user's cache."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    offline()
    return AutoModelForSeq2SeqLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)  # nosec B615  # local folder, hub access off


def decoder_inputs(model: Any, labels: torch.Tensor) -> torch.Tensor:
    """Teacher-forcing inputs: labels shifted right behind the decoder start token."""
    start = model.config.decoder_start_token_id
    pad = model.config.pad_token_id
    shifted = labels.new_full(labels.shape, pad)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = start
    return shifted.masked_fill(shifted == -100, pad)
