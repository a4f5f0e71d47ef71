"""Transactions: the handbook-style simulator (embedded default and test data) and loaders.

    df = simulate(SimConfig(n_customers=5000, n_terminals=10000, n_days=183), seed=0)
    df = load_transactions("../shared/data/fraud_handbook")          # Parquet/CSV file or folder
    df = load_transactions("mine.csv", columns={"tx_id": "TRANSACTION_ID", ...})

The simulator follows the generator of the Fraud Detection Handbook (Le Borgne et al., ch. 3):
customers and terminals uniform on a 100x100 grid, each customer using the terminals within
radius r, a spending profile (mean amount U(5,100), std mean/2, U(0,4) transactions a day),
Poisson daily counts, times of day ~ N(12h, 20000 s), and three fraud scenarios: (1) every
amount > 220 is fraud; (2) each day 2 terminals are compromised for 28 days, all their
transactions are fraud; (3) each day 3 customers are compromised for 14 days, a third of their
transactions have 5x the amount and are fraud. Written with numpy only (no loop per row).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from common.errors import InvalidInput

__all__ = ["SimConfig", "simulate", "load_transactions", "SCHEMA", "REQUIRED", "validate"]

# The handbook schema. REQUIRED is what features and scoring need; TX_FRAUD is needed to train.
SCHEMA = {
    "TRANSACTION_ID": "int64",
    "TX_DATETIME": "datetime64[ns]",
    "CUSTOMER_ID": "int64",
    "TERMINAL_ID": "int64",
    "TX_AMOUNT": "float64",
    "TX_FRAUD": "int64",
}
REQUIRED = ("TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT")


@dataclass(frozen=True)
class SimConfig:
    n_customers: int = 5000
    n_terminals: int = 10000
    n_days: int = 183
    radius: float = 5.0
    start_date: str = "2018-04-01"
    compromised_terminals_per_day: int = 2
    terminal_days: int = 28
    compromised_customers_per_day: int = 3
    customer_days: int = 14


def _terminals_in_reach(cust_xy: np.ndarray, term_xy: np.ndarray, r: float):
    """CSR lists of the terminals within radius r of each customer (blocked to bound memory)."""
    counts, members = [], []
    for s in range(0, len(cust_xy), 512):
        d2 = ((cust_xy[s : s + 512, None, :] - term_xy[None, :, :]) ** 2).sum(-1)
        rows, cols = np.nonzero(d2 < r * r)
        counts.append(np.bincount(rows, minlength=len(d2)))
        members.append(cols)
    counts_a = np.concatenate(counts)
    offsets = np.concatenate([[0], np.cumsum(counts_a)[:-1]])
    return counts_a, offsets, np.concatenate(members)


def simulate(cfg: SimConfig | None = None, seed: int = 0) -> pd.DataFrame:
    """Seeded handbook-style transactions, sorted by time, in the handbook schema."""
    cfg = cfg or SimConfig()
    rng = np.random.default_rng(seed)
    nc, nt = cfg.n_customers, cfg.n_terminals
    cust_xy = rng.uniform(0, 100, (nc, 2))
    mean_amt = rng.uniform(5, 100, nc)
    std_amt = mean_amt / 2
    mean_nb = rng.uniform(0, 4, nc)
    term_xy = rng.uniform(0, 100, (nt, 2))
    n_reach, offset, members = _terminals_in_reach(cust_xy, term_xy, cfg.radius)

    counts = rng.poisson(np.repeat(mean_nb[None, :], cfg.n_days, 0))  # (days, customers)
    counts[:, n_reach == 0] = 0  # customers with no terminal in reach never transact
    day_idx, cust_idx = np.nonzero(counts)
    reps = counts[day_idx, cust_idx]
    day = np.repeat(day_idx, reps)
    cust = np.repeat(cust_idx, reps)
    n = len(day)
    tod = np.rint(rng.normal(86400 / 2, 20000, n)).astype(np.int64)
    keep = (tod > 0) & (tod < 86400)  # the handbook drops times outside the day
    day, cust, tod = day[keep], cust[keep], tod[keep]
    n = len(day)
    amount = rng.normal(mean_amt[cust], std_amt[cust])
    neg = amount < 0
    amount[neg] = rng.uniform(0, 2 * mean_amt[cust[neg]])
    amount = np.round(amount, 2)
    pick = (rng.uniform(size=n) * n_reach[cust]).astype(np.int64)
    term = members[offset[cust] + pick]

    secs = day.astype(np.int64) * 86400 + tod
    order = np.lexsort((term, cust, secs))
    day, cust, term, amount, secs = day[order], cust[order], term[order], amount[order], secs[order]

    scenario = np.zeros(n, dtype=np.int64)
    scenario[amount > 220] = 1
    comp_t = np.zeros((nt, cfg.n_days), dtype=bool)
    comp_c = np.zeros((nc, cfg.n_days), dtype=bool)
    for d in range(cfg.n_days):  # per day, not per row: which terminals/customers fall
        comp_t[rng.choice(nt, cfg.compromised_terminals_per_day, replace=False),
               d : d + cfg.terminal_days] = True
        comp_c[rng.choice(nc, cfg.compromised_customers_per_day, replace=False),
               d : d + cfg.customer_days] = True
    scenario[comp_t[term, day]] = 2
    hit = comp_c[cust, day] & (rng.uniform(size=n) < 1 / 3)
    amount[hit] = np.round(amount[hit] * 5, 2)
    scenario[hit] = 3

    start = pd.Timestamp(cfg.start_date)
    return pd.DataFrame(
        {
            "TRANSACTION_ID": np.arange(n, dtype=np.int64),
            "TX_DATETIME": start + pd.to_timedelta(secs, unit="s"),
            "CUSTOMER_ID": cust.astype(np.int64),
            "TERMINAL_ID": term.astype(np.int64),
            "TX_AMOUNT": amount,
            "TX_TIME_SECONDS": secs,
            "TX_TIME_DAYS": day.astype(np.int64),
            "TX_FRAUD": (scenario > 0).astype(np.int64),
            "TX_FRAUD_SCENARIO": scenario,
        }
    )


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".parquet", ".pq", ".csv"))
        if not files:
            raise InvalidInput("data", f"folder {path} holds no Parquet or CSV files")
        return files
    if not path.exists():
        raise InvalidInput("data", f"{path} does not exist")
    return [path]


def _read(path: Path) -> pd.DataFrame:
    if path.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if path.suffix.lower() == ".csv":
        return pd.read_csv(path)
    raise InvalidInput("data", f"{path.name}: use Parquet or CSV")


def validate(df: pd.DataFrame, need_label: bool = False) -> pd.DataFrame:
    """Coerce to the handbook schema; errors name the offending column."""
    cols = [*REQUIRED, "TX_FRAUD"] if need_label else list(REQUIRED)
    for c in cols:
        if c not in df.columns:
            have = ", ".join(map(str, df.columns))
            raise InvalidInput(c, f"column {c} is missing (have: {have})")
    out = df.copy()
    try:
        with warnings.catch_warnings():  # mixed formats fall back to dateutil: fine here
            warnings.simplefilter("ignore", UserWarning)
            out["TX_DATETIME"] = pd.to_datetime(out["TX_DATETIME"]).astype("datetime64[ns]")
    except (ValueError, TypeError) as e:
        raise InvalidInput("TX_DATETIME", f"not a timestamp column ({e})") from None
    for c in ("TRANSACTION_ID", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT", "TX_FRAUD"):
        if c not in out.columns:
            continue
        if out[c].isna().any():
            raise InvalidInput(c, f"column {c} has {int(out[c].isna().sum())} missing values")
        try:
            out[c] = out[c].astype(SCHEMA[c])
        except (ValueError, TypeError) as e:
            raise InvalidInput(c, f"column {c} is not {SCHEMA[c]} ({e})") from None
    if (out["TX_AMOUNT"] < 0).any():
        raise InvalidInput("TX_AMOUNT", "column TX_AMOUNT has negative amounts")
    if "TX_FRAUD" in out.columns and not out["TX_FRAUD"].isin([0, 1]).all():
        raise InvalidInput("TX_FRAUD", "column TX_FRAUD must be 0/1")
    return out.sort_values(["TX_DATETIME", "TRANSACTION_ID"], kind="stable").reset_index(drop=True)


def load_transactions(
    path: str | Path, columns: dict[str, str] | None = None, need_label: bool = False
) -> pd.DataFrame:
    """Read a Parquet/CSV file or a folder of them; `columns` maps your names to the handbook's
    (e.g. {"ts": "TX_DATETIME"}). Returns validated rows sorted by (time, id)."""
    frames = [_read(f) for f in _files(Path(path))]
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if columns:
        missing = [src for src in columns if src not in df.columns]
        if missing:
            raise InvalidInput(missing[0], f"mapped column {missing[0]} is not in the data")
        df = df.rename(columns=columns)
    return validate(df, need_label=need_label)
