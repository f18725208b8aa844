"""Sphinx configuration for the txflip documentation."""

project = "txflip"
author = "the txflip developers"
copyright = "2026, the txflip developers"
extensions: list[str] = []
master_doc = "index"
exclude_patterns = ["_build"]
html_theme = "alabaster"
