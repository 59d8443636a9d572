"""Readers for the benchmark file formats; each returns data_prep.series.Series objects or plain arrays and
raises DataFormatError('FILE:LINE: reason') on malformed input."""
from data_prep.readers.errors import DataFormatError

__all__ = ["DataFormatError"]
