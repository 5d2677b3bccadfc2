"""Scores: metrics, folder evaluation, per-kind reports, post-processing threshold tuning."""
