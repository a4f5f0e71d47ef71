"""Bundle layout of a recommender model (no pickle anywhere):
- model.safetensors: the model's tensors under `model.*`, the seen-filter as CSR arrays
  (`seen.indptr`, `seen.indices`) and training popularity counts (`popularity`);
- ids.json: {"users": [...], "items": [...]} (index k ↔ id);
- titles.json: {item_id: title} when the dataset has titles;
- manifest model config: {"kind", "config", "selected", "validation"}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from common.artifacts import Bundle, BundleWriter
from common.monitoring.profile import PROFILE_FILE
from recommender.data import Encoded
from recommender.models import Recommender, load_model
from recommender.monitoring import build_profile

__all__ = ["write_bundle", "read_bundle"]


def write_bundle(root: str | Path, model: Recommender, enc: Encoded, X: sp.csr_matrix,
                 titles: dict[str, str], metrics: dict[str, Any], fingerprint: str,
                 extra_config: dict[str, Any] | None = None) -> Bundle:
    w = BundleWriter(root, "recommender", f"recommender-{model.kind}")
    try:
        X = X.tocsr()
        tensors = {f"model.{k}": v for k, v in model.to_tensors().items()}
        tensors["seen.indptr"] = torch.from_numpy(X.indptr.astype(np.int64))
        tensors["seen.indices"] = torch.from_numpy(X.indices.astype(np.int64))
        tensors["popularity"] = torch.from_numpy(np.asarray(X.sum(axis=0)).ravel()
                                                 .astype(np.float32))
        w.save_weights(tensors)
        w.add_json("ids.json", {"users": [str(u) for u in enc.users],
                                "items": [str(i) for i in enc.items]})
        known = {str(i) for i in enc.items}
        w.add_json("titles.json", {i: t for i, t in titles.items() if i in known})
        w.add_json(PROFILE_FILE, build_profile(
            model, X, {k.removeprefix("val_"): v for k, v in metrics.items()
                       if k.startswith("val_") and isinstance(v, int | float)}))
        config = {"kind": model.kind, "config": model.get_config(), **(extra_config or {})}
        return w.publish(f"recommender.models.{type(model).__name__}", config, metrics,
                         data_fingerprint=fingerprint)
    except BaseException:
        w.abort()
        raise


def read_bundle(bundle: Bundle) -> tuple[Recommender, Encoded, sp.csr_matrix, torch.Tensor,
                                         dict[str, str]]:
    """(model, encoding, seen CSR, popularity counts, titles) of a verified bundle."""
    t = bundle.state_dict()
    cfg = bundle.model_config
    model = load_model(cfg["kind"], cfg.get("config", {}),
                       {k[6:]: v for k, v in t.items() if k.startswith("model.")})
    ids = bundle.read_json("ids.json")
    enc = Encoded(np.array(ids["users"], dtype=object), np.array(ids["items"], dtype=object))
    indptr, indices = t["seen.indptr"].numpy(), t["seen.indices"].numpy()
    seen = sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr),
                         shape=(enc.n_users, enc.n_items))
    titles = bundle.read_json("titles.json") if (bundle.path / "titles.json").exists() else {}
    return model, enc, seen, t["popularity"].float(), titles
