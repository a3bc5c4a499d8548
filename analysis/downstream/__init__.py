"""Downstream accuracy: ``flame eval``'s per-run lm-eval results, the accuracy-vs-loss ladder
(``ladder.py``), ``downstream.json`` (``summary.py``) and its figure (``plots.py``)."""
