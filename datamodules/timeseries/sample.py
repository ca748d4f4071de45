"""Offline sample prices: several symbols with trend, weekly and monthly seasonality and noise.

Written as a long CSV (``symbol,date,price``, business days), the format many price exports have, so that a
trained model can be seen to beat the naive last-value forecast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

SYMBOLS = {"ALPHA": 100.0, "BRAVO": 42.0, "CHARLIE": 7.5, "DELTA": 250.0, "ECHO": 18.0}


def write_sample(out_dir: Path, seed: int = 0, days: int = 750) -> Path:
    """Write ``prices.csv`` under ``out_dir`` and return its path."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2021-01-04", periods=days)
    t = np.arange(days)
    frames = []
    for symbol, base in SYMBOLS.items():
        trend = rng.uniform(-0.0004, 0.0008) * t
        weekly = rng.uniform(0.015, 0.03) * np.sin(2 * np.pi * t / 5 + rng.uniform(0, 2 * np.pi))
        monthly = rng.uniform(0.02, 0.05) * np.sin(2 * np.pi * t / 21 + rng.uniform(0, 2 * np.pi))
        noise = np.zeros(days)
        shocks = rng.normal(0, 0.004, days)
        for k in range(1, days):  # AR(1) noise: prices wander a little, as real ones do
            noise[k] = 0.9 * noise[k - 1] + shocks[k]
        price = base * np.exp(trend + weekly + monthly + noise)
        frames.append(pd.DataFrame({"symbol": symbol, "date": dates.strftime("%Y-%m-%d"), "price": price.round(4)}))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "prices.csv"
    pd.concat(frames).to_csv(path, index=False)
    return path
