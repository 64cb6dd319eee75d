"""Experiments: loading (template format, overlays), expansion, concurrent runs, evaluation, gate, reports."""
