"""Validation-only: how far one threshold set is from each dataset's own, for a model trained on several datasets.

For every dataset of the model's stored validation split, the thresholds that are best for that
dataset alone (the others weigh 0), and, with ``--network-frame``, a coarse grid where
``min_size`` and ``min_marker_size`` are given at the network's scale (divided by each image's
automatic-sizing factor squared), scored as the mean over datasets. The exploration that led to
``nucseg tune --by-kind --size-frame network`` (README, "Thresholds by image kind"); run on a model
tuned that way it starts from its general settings::

    python benchmarks/thresholds_by_dataset.py src/nucseg/data/models/nuclei --network-frame
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys

import numpy as np

from nucseg.datasets.mixture import split_qualified
from nucseg.evaluation.metrics import dsb_score
from nucseg.evaluation.report import load_validation_samples
from nucseg.evaluation.tuning import search_thresholds
from nucseg.inference.model import load_model
from nucseg.postprocess.watershed import instances_from_probabilities


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="model folder trained on several datasets")
    parser.add_argument("--network-frame", action="store_true", help="also the coarse network-frame grid")
    args = parser.parse_args(argv)
    model = load_model(args.model)
    samples = load_validation_samples(args.model)
    groups = [split_qualified(s.name)[0] for s in samples]
    results = [model.segment(s.image) for s in samples]
    maps, labels = [r.probabilities for r in results], [s.labels for s in samples]
    for group in dict.fromkeys(groups):
        weights = [1.0 if g == group else 0.0 for g in groups]
        found = search_thresholds(
            maps, labels, initial=model.postprocess_config, weights=weights, scales=[r.scale for r in results]
        )
        print(
            f"{group}: DSB {found.initial_score:.4f} with the model's thresholds, {found.score:.4f} with its own "
            f"{found.changed}",
            flush=True,
        )
    if not args.network_frame:
        return 0
    base = model.postprocess_config

    def mean_over_datasets(config_of) -> tuple[float, dict]:
        per: dict[str, list[float]] = {}
        for sample, result, group in zip(samples, results, groups):
            predicted = instances_from_probabilities(result.probabilities, config_of(result.scale))
            per.setdefault(group, []).append(dsb_score(sample.labels, predicted))
        return float(np.mean([np.mean(v) for v in per.values()])), {
            g: round(float(np.mean(v)), 3) for g, v in per.items()
        }

    print("model's thresholds:", mean_over_datasets(base.at_scale))
    best = None
    for fg, marker, min_marker, min_size in itertools.product((0.55, 0.65), (0.75, 0.85), (16, 48), (40, 80, 160)):

        def config_of(factor, fg=fg, marker=marker, min_marker=min_marker, min_size=min_size):
            return dataclasses.replace(
                base,
                size_frame="image",
                foreground_threshold=fg,
                marker_threshold=marker,
                min_marker_size=max(1, round(min_marker / factor**2)),
                min_size=round(min_size / factor**2),
            )

        value, parts = mean_over_datasets(config_of)
        if best is None or value > best[0]:
            best = (value, (fg, marker, min_marker, min_size), parts)
    print("best network-frame setting (foreground, marker, min marker, min size at network scale):", best)
    return 0


if __name__ == "__main__":
    sys.exit(main())
