"""Stages: plain functions `(config, layout, iteration) -> None` that read and write the artifact layout."""
