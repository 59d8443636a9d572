"""Disk, Hub and pandas I/O: model folders, model cards, safe output folders, provenance, loading, frames."""
