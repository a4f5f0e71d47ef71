"""Sentiment model pieces: backbones (pretrained or a tiny one from a config), tokenisation with
token counts, and batched logits that do not depend on which other texts share the batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from nlp.hf import offline, resolve_backbone

__all__ = [
    "train_wordpiece",
    "tiny_bert",
    "load_backbone",
    "encode",
    "bucket_length",
    "batched_logits",
    "batched_outputs",
]


def train_wordpiece(texts: Sequence[str], vocab_size: int = 2000) -> Any:
    """A BERT-style WordPiece tokenizer trained with `tokenizers` (for the tiny test backbone)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import WordPieceTrainer
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(texts, WordPieceTrainer(vocab_size=vocab_size, special_tokens=special))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )


def tiny_bert(vocab_size: int, num_labels: int, id2label: dict[int, str]) -> torch.nn.Module:
    """A 2-layer, 64-wide BERT built from a config (tests and the `test` preset)."""
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=128,
        num_labels=num_labels,
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    return BertForSequenceClassification(cfg)


def load_backbone(
    backbone: str, labels: Sequence[str], texts: Sequence[str]
) -> tuple[torch.nn.Module, Any]:
    """(model, tokenizer): 'tiny' builds both from scratch on `texts`; anything else is a
    Hugging Face checkpoint folder or hub id ('minilm' = the packaged all-MiniLM-L6-v2)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    offline()
    id2label = dict(enumerate(labels))
    if backbone == "tiny":
        tok = train_wordpiece(texts)
        return tiny_bert(len(tok), len(labels), id2label), tok
    path = resolve_backbone(backbone)
    tok = AutoTokenizer.from_pretrained(path)  # nosec B615  # local folder, hub access off
    model = AutoModelForSequenceClassification.from_pretrained(  # nosec B615  # local folder, hub access off
        path,
        num_labels=len(labels),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        ignore_mismatched_sizes=True,  # a checkpoint with its own head gets a fresh one
    )
    return model, tok


def encode(tokenizer: Any, texts: Sequence[str], max_length: int) -> tuple[list, list[int]]:
    """Token ids truncated to `max_length`, and each text's full token count (with specials),
    so callers can say `truncated` instead of cutting silently."""
    full = tokenizer(list(texts), truncation=False, add_special_tokens=True)["input_ids"]
    counts = [len(ids) for ids in full]
    ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    return ids, counts


def bucket_length(n: int, step: int = 16) -> int:
    """Padded length for a sequence of `n` tokens: the next multiple of `step`. A text is
    always padded to the same length whatever else is in the batch, so its scores are the same
    alone or batched (the batch dimension does not change per-row arithmetic)."""
    return ((n + step - 1) // step) * step


def batched_logits(
    model: torch.nn.Module,
    tokenizer: Any,
    ids: Sequence[Sequence[int]],
    device: torch.device,
    batch_size: int = 64,
) -> np.ndarray:
    """Logits (N, C) for pre-tokenised inputs, run in length buckets."""
    return batched_outputs(model, tokenizer, ids, device, batch_size, pooled=False)[0]


@torch.no_grad()
def batched_outputs(
    model: torch.nn.Module,
    tokenizer: Any,
    ids: Sequence[Sequence[int]],
    device: torch.device,
    batch_size: int = 64,
    pooled: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Logits (N, C) and, with `pooled`, the mean of the last hidden states over each text's
    tokens (N, H): monitoring's embedding, from the same forward pass (no extra compute)."""
    model.eval()
    out = np.zeros((len(ids), model.config.num_labels), dtype=np.float32)
    emb: np.ndarray | None = None
    buckets: dict[int, list[int]] = {}
    for i, seq in enumerate(ids):
        buckets.setdefault(bucket_length(len(seq)), []).append(i)
    for length, members in sorted(buckets.items()):
        for s in range(0, len(members), batch_size):
            idx = members[s : s + batch_size]
            batch = tokenizer.pad(
                {"input_ids": [list(ids[i]) for i in idx]},
                padding="max_length",
                max_length=length,
                return_tensors="pt",
            )
            mask = batch["attention_mask"].to(device)
            res = model(input_ids=batch["input_ids"].to(device), attention_mask=mask,
                        output_hidden_states=pooled)
            out[idx] = res.logits.float().cpu().numpy()
            if pooled:
                h = res.hidden_states[-1].float()
                m = mask.unsqueeze(-1).float()
                mean = ((h * m).sum(1) / m.sum(1).clamp(min=1)).cpu().numpy()
                if emb is None:
                    emb = np.zeros((len(ids), mean.shape[1]), dtype=np.float32)
                emb[idx] = mean
    return out, emb
