"""Interaction data: loaders (MovieLens formats, any CSV/Parquet), implicit thresholding, the
seeded synthetic generator, id encoding to a sparse user×item matrix, and the two evaluation
splits (MS Recommenders' stratified split and leave-last-out).

Every loader returns one canonical frame: columns `user_id`, `item_id` (strings), `rating`
(float, 1.0 for implicit data) and `timestamp` (int64 seconds, 0 when unknown).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from common.errors import InvalidInput

__all__ = [
    "COLUMNS",
    "load_interactions",
    "load_titles",
    "to_implicit",
    "synthetic_interactions",
    "Encoded",
    "encode",
    "stratified_split",
    "leave_last_out_split",
]

COLUMNS = ["user_id", "item_id", "rating", "timestamp"]
_USER = ("user_id", "userid", "user", "uid", "customer_id", "visitorid")
_ITEM = ("item_id", "itemid", "movieid", "movie_id", "item", "product_id", "iid")
_RATING = ("rating", "score", "value", "weight")
_TIME = ("timestamp", "time", "ts", "datetime", "date")


def _pick(df: pd.DataFrame, wanted: str | None, names: tuple[str, ...], what: str) -> str | None:
    if wanted:
        if wanted not in df.columns:
            raise InvalidInput(f"{what}_col", f"no column {wanted!r}; have {list(df.columns)}")
        return wanted
    lower = {str(c).lower().replace(" ", "_"): c for c in df.columns}
    return next((lower[n] for n in names if n in lower), None)


def _canonical(
    df: pd.DataFrame,
    user_col: str | None = None,
    item_col: str | None = None,
    rating_col: str | None = None,
    time_col: str | None = None,
) -> pd.DataFrame:
    u, i = _pick(df, user_col, _USER, "user"), _pick(df, item_col, _ITEM, "item")
    if u is None or i is None:
        raise InvalidInput("data", f"need user and item columns; have {list(df.columns)}")
    r, t = _pick(df, rating_col, _RATING, "rating"), _pick(df, time_col, _TIME, "timestamp")
    out = pd.DataFrame({"user_id": df[u].astype(str), "item_id": df[i].astype(str)})
    out["rating"] = pd.to_numeric(df[r], errors="coerce").astype(float) if r else 1.0
    if t is None:
        out["timestamp"] = np.zeros(len(df), dtype=np.int64)
    elif pd.api.types.is_numeric_dtype(df[t]):
        out["timestamp"] = df[t].fillna(0).astype(np.int64)
    else:  # datetime strings → epoch seconds
        ts = pd.to_datetime(df[t], errors="coerce", utc=True)
        secs = (ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
        out["timestamp"] = secs.fillna(0).astype(np.int64)
    bad = out["user_id"].isin(["", "nan", "None"]) | out["item_id"].isin(["", "nan", "None"])
    return out[~bad].reset_index(drop=True)


def _movielens_file(path: Path) -> Path:
    for name in ("u.data", "ratings.dat", "ratings.csv", "ratings.parquet"):
        if (path / name).is_file():
            return path / name
    found = sorted(p for p in path.iterdir() if p.suffix.lower() in (".csv", ".parquet", ".pq"))
    if len(found) == 1:
        return found[0]
    raise InvalidInput("data", f"{path}: no u.data, ratings.dat, ratings.csv or single CSV/Parquet")


def load_interactions(
    path: str | Path,
    user_col: str | None = None,
    item_col: str | None = None,
    rating_col: str | None = None,
    time_col: str | None = None,
) -> pd.DataFrame:
    """Read interactions from a MovieLens folder or file (`u.data` tab-separated, `ratings.dat`
    `::`-separated, `ratings.csv` with header) or any CSV / TSV / Parquet / JSONL whose columns are
    named (or found among common names: userId, movieId, rating, timestamp, ...)."""
    path = Path(path)
    if not path.exists():
        raise InvalidInput("data", f"{path} does not exist")
    if path.is_dir():
        path = _movielens_file(path)
    name, suffix = path.name.lower(), path.suffix.lower()
    if name == "u.data" or name.endswith((".base", ".test")):
        df = pd.read_csv(path, sep="\t", header=None, names=COLUMNS)
    elif suffix == ".dat":
        df = pd.read_csv(path, sep="::", header=None, names=COLUMNS, engine="python")
    elif suffix in (".csv", ".tsv"):
        df = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    elif suffix in (".parquet", ".pq"):
        df = pd.read_parquet(path)
    elif suffix in (".jsonl", ".ndjson"):
        df = pd.read_json(path, lines=True, dtype=False)
    else:
        raise InvalidInput("data", f"{path.name}: unsupported interaction format")
    return _canonical(df, user_col, item_col, rating_col, time_col)


def load_titles(path: str | Path) -> dict[str, str]:
    """Item titles when the dataset has them (`u.item`, `movies.dat`, `movies.csv`), else {}."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if (folder / "u.item").is_file():
        df = pd.read_csv(folder / "u.item", sep="|", header=None, encoding="latin-1",
                         usecols=[0, 1], names=["item_id", "title"])
    elif (folder / "movies.dat").is_file():
        df = pd.read_csv(folder / "movies.dat", sep="::", header=None, engine="python",
                         encoding="latin-1", usecols=[0, 1], names=["item_id", "title"])
    elif (folder / "movies.csv").is_file():
        df = pd.read_csv(folder / "movies.csv").rename(columns={"movieId": "item_id"})
    else:
        return {}
    return dict(zip(df["item_id"].astype(str), df["title"].astype(str), strict=True))


def to_implicit(df: pd.DataFrame, threshold: float | None = None) -> pd.DataFrame:
    """Keep interactions with rating >= threshold (None keeps all) and drop duplicate
    (user, item) events, keeping the latest: implicit feedback is 'did interact', once."""
    if threshold is not None:
        df = df[df["rating"] >= threshold]
    df = df.sort_values(["user_id", "item_id", "timestamp"], kind="stable")
    return df.drop_duplicates(["user_id", "item_id"], keep="last").reset_index(drop=True)


def synthetic_interactions(
    n_users: int = 300, n_items: int = 200, per_user: int = 30, dim: int = 8, seed: int = 0
) -> pd.DataFrame:
    """Seeded implicit data with structure a recommender can learn: users and items have latent
    tastes, item popularity is long-tailed (Zipf-like), each user picks items by softmax of
    taste·item + log-popularity, and timestamps increase along each user's history (so the
    last event is a meaningful leave-last-out target)."""
    rng = np.random.default_rng(seed)
    users = rng.normal(size=(n_users, dim))
    items = rng.normal(size=(n_items, dim))
    log_pop = -1.0 * np.log1p(rng.permutation(n_items))  # long tail
    rows = []
    for u in range(n_users):
        n = int(np.clip(rng.poisson(per_user), 5, n_items // 2))
        logits = users[u] @ items.T / np.sqrt(dim) * 2.0 + log_pop
        p = np.exp(logits - logits.max())
        chosen = rng.choice(n_items, size=n, replace=False, p=p / p.sum())
        start = 1_000_000 + int(rng.integers(0, 86_400 * 30))
        times = start + np.cumsum(rng.integers(60, 86_400, size=n))
        rows.append(pd.DataFrame({"user_id": [f"u{u}"] * n, "item_id": [f"i{i}" for i in chosen],
                                  "rating": rng.integers(1, 6, size=n).astype(float),
                                  "timestamp": times.astype(np.int64)}))
    return pd.concat(rows, ignore_index=True)


@dataclass
class Encoded:
    """Contiguous indices for ids: `users[k]`/`items[k]` is the id of row/column k."""

    users: np.ndarray
    items: np.ndarray

    def __post_init__(self) -> None:
        self.user_index = {u: k for k, u in enumerate(self.users)}
        self.item_index = {i: k for k, i in enumerate(self.items)}

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def matrix(self, df: pd.DataFrame) -> sp.csr_matrix:
        """Binary user×item CSR of the (known-id) interactions in df; duplicates count once."""
        u = df["user_id"].map(self.user_index)
        i = df["item_id"].map(self.item_index)
        ok = u.notna() & i.notna()
        m = sp.csr_matrix(
            (np.ones(int(ok.sum()), dtype=np.float32),
             (u[ok].astype(np.int64).to_numpy(), i[ok].astype(np.int64).to_numpy())),
            shape=(self.n_users, self.n_items),
        )
        m.data[:] = 1.0  # duplicate (user, item) pairs were summed: back to binary
        return m

    def times(self, df: pd.DataFrame) -> sp.csr_matrix:
        """User×item CSR of interaction timestamps (seconds + 1 after the earliest, so no
        stored value is 0; the latest event of duplicate pairs), same pattern as `matrix`.
        Time-aware models read only differences within a user."""
        d = df.sort_values("timestamp", kind="stable").drop_duplicates(
            ["user_id", "item_id"], keep="last")
        u = d["user_id"].map(self.user_index)
        i = d["item_id"].map(self.item_index)
        ok = (u.notna() & i.notna()).to_numpy()
        t = d["timestamp"].to_numpy(dtype=np.float64)[ok]
        t = t - (t.min() if len(t) else 0.0) + 1.0
        return sp.csr_matrix((t, (u[ok].astype(np.int64).to_numpy(),
                                  i[ok].astype(np.int64).to_numpy())),
                             shape=(self.n_users, self.n_items))


def encode(df: pd.DataFrame) -> Encoded:
    """Index every user and item of df (sorted, so the encoding is deterministic)."""
    return Encoded(np.array(sorted(df["user_id"].unique()), dtype=object),
                   np.array(sorted(df["item_id"].unique()), dtype=object))


def stratified_split(
    df: pd.DataFrame, ratio: float = 0.75, filter_by: str = "item", seed: int = 42
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """MS Recommenders' `python_stratified_split`: within each item (or user) group, rows in a
    random order (numpy legacy seed, one uniform per row) go to train while rank/count <= ratio.
    Same draws and thresholds as theirs, so on the same frame order the split is the same."""
    key = "item_id" if filter_by == "item" else "user_id"
    rs = np.random.RandomState(seed)
    d = df.assign(_r=rs.rand(len(df)))
    d = d.sort_values([key, "_r"])
    g = d.groupby(key, sort=False)
    rank = (g.cumcount() + 1) / g[key].transform("count")
    train = d[rank <= ratio].drop(columns="_r")
    test = d[rank > ratio].drop(columns="_r")
    return train, test


def leave_last_out_split(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each user's latest interaction (ties: the last row) is the test item; users with a
    single interaction stay wholly in train (nothing to learn from otherwise)."""
    d = df.reset_index(drop=True)
    d = d.assign(_o=np.arange(len(d))).sort_values(["user_id", "timestamp", "_o"], kind="stable")
    last = ~d["user_id"].duplicated(keep="last")
    many = d.groupby("user_id")["item_id"].transform("size") > 1
    test_mask = last & many
    return d[~test_mask].drop(columns="_o"), d[test_mask].drop(columns="_o")
