"""Prices: CSV/Parquet files -> validated series -> leak-free windows (``PriceDataModule``, ``PriceSpec``)."""

from .datamodule import PriceDataModule, PriceSpec

__all__ = ["PriceDataModule", "PriceSpec"]
