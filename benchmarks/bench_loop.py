"""The human-in-the-loop measured: held-out AP@0.5 after 0, 1, 2, 4, 8 corrected images, and the time per round.

Usage::

    python benchmarks/bench_loop.py --data monuseg_train_he --out runs/bench_loop/monuseg [--draws 0 1 2]
        [--counts 0 1 2 4 8] [--minutes M] [--settings JSON] [--model MODEL] [--held-out 4]
    python benchmarks/bench_loop.py --report runs/bench_loop/monuseg --plot docs/images/loop_monuseg.png

Simulates a user of the napari widget on an annotated set (a paired-layout
set under the data root, or a folder). Each draw shuffles the set's pool of
images by its seed; each round "corrects" the next images (their ground
truth replaces the model's prediction: ``Add to training set`` on a
:class:`~nucseg.datasets.project.TrainingProject`), fine-tunes the previous
round's model on all the corrected images so far (:func:`nucseg.training.finetune.fine_tune`,
the widget's ``Train`` with its settings), and scores the
new model on fixed held-out images. Round 0 scores the starting model
(``--model``, by default the registry's default model).

Held-out images: the starting model's own validation and test images of this
set when its split names them (images it never trained on), else
``--held-out`` images drawn by seed 0; they are the same in every draw and
never corrected. Corrected images may be images the starting model trained
on (its split is listed in the output).

Writes ``OUT/rounds.csv`` (one row per draw and round, appended as rounds
finish: an interrupted run continues where it stopped when started again with
the same arguments) and prints the markdown table of the README;
``--report`` prints the table and draws the plot of a finished (or partial) run.
Training time is wall-clock minutes and CPU minutes (the process's CPU time,
all threads) of ``fine_tune``, threshold tuning included.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from nucseg.datasets.layouts import list_dataset, load_dataset
from nucseg.datasets.locations import dataset_path
from nucseg.datasets.project import TrainingProject
from nucseg.evaluation.report import evaluate_model
from nucseg.inference.model import load_model
from nucseg.io.atomic import atomic_write
from nucseg.models.folder import read_model_config
from nucseg.models.registry import DEFAULT_MODEL, resolve_model_path
from nucseg.training.finetune import fine_tune

COLUMNS = [
    "draw",
    "corrected",
    "ap50",
    "dsb_score",
    "ap50_before_correction",
    "train_minutes",
    "cpu_minutes",
    "epochs",
    "best_epoch",
    "images",
]


def held_out_names(root: Path, names: list[str], model: str, count: int) -> tuple[list[str], str]:
    """The fixed held-out images, and where they come from (in words)."""
    config, _ = read_model_config(resolve_model_path(model))
    prefix = f"{root.name}/"
    unseen = sorted(
        {
            n.removeprefix(prefix)
            for side in ("validation", "test")
            for n in config.split.get(side, [])
            if n.startswith(prefix)
        }
        & set(names)
    )
    seen = {n.removeprefix(prefix) for n in config.split.get("train", []) if n.startswith(prefix)} & set(names)
    if unseen:
        return unseen, (
            f"the {len(unseen)} validation and test images of {model} in {root.name} (it trained on "
            f"{len(seen)} of the other {len(names) - len(unseen)})"
        )
    order = np.random.default_rng(0).permutation(len(names))
    chosen = sorted(names[i] for i in order[:count])
    return chosen, (f"{count} images drawn by seed 0 ({model} trained on {len(seen)} images of {root.name})")


def read_rounds(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def write_rounds(path: Path, rows: list[dict]) -> None:
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def run_draw(
    draw: int,
    *,
    root: Path,
    pool: list[str],
    held_out,
    counts: list[int],
    model: str,
    minutes: float,
    out: Path,
    rows: list[dict],
    rounds_csv: Path,
    settings: dict | None = None,
) -> None:
    """The rounds of one draw not yet in ``rows``."""
    order = [pool[i] for i in np.random.default_rng(draw).permutation(len(pool))]
    project = TrainingProject(out / f"draw{draw}" / "project")
    done = {int(r["corrected"]) for r in rows if int(r["draw"]) == draw}
    current = model
    previous_count = 0
    for count in counts:
        if count in done:
            current, previous_count = (str(project.models_dir / f"round{count}") if count else model), count
            continue
        before = float("nan")
        cpu = wall = 0.0
        result = None
        if count:
            new = load_dataset(root, names=order[previous_count:count], progress=False)
            # What the user had to correct: the current model's AP@0.5 on the new images.
            before = evaluate_model(load_model(current), new, by_kind=False).overall.ap50
            for sample in new:
                project.add(sample.image, sample.labels, name=sample.name, overwrite=True)
            cpu_started, wall_started = time.process_time(), time.perf_counter()
            result = fine_tune(
                project,
                base_model=current,
                minutes=minutes,
                name=f"round{count}",
                settings=settings,
                log=lambda message: print(f"  {message}", flush=True),
            )
            cpu, wall = time.process_time() - cpu_started, time.perf_counter() - wall_started
            current = str(result.model_dir)
        scores = evaluate_model(load_model(current), held_out, by_kind=False).overall
        rows.append(
            {
                "draw": draw,
                "corrected": count,
                "ap50": f"{scores.ap50:.4f}",
                "dsb_score": f"{scores.dsb_score:.4f}",
                "ap50_before_correction": f"{before:.4f}",
                "train_minutes": f"{wall / 60:.2f}",
                "cpu_minutes": f"{cpu / 60:.2f}",
                "epochs": result.epochs_run if result else 0,
                "best_epoch": result.best_epoch if result else 0,
                "images": " ".join(order[:count]),
            }
        )
        write_rounds(rounds_csv, rows)
        print(
            f"draw {draw}, {count} corrected: held-out AP@0.5 {scores.ap50:.3f} (training {wall / 60:.1f} min, "
            f"{cpu / 60:.1f} CPU min)",
            flush=True,
        )
        previous_count = count


def table(rows: list[dict[str, str]]) -> str:
    """The README's table: mean held-out AP@0.5 by corrected images, the gain, the time per round."""
    counts = sorted({int(r["corrected"]) for r in rows})
    draws = sorted({int(r["draw"]) for r in rows})
    base = {int(r["draw"]): float(r["ap50"]) for r in rows if int(r["corrected"]) == 0}
    lines = [
        "| corrected images | held-out AP@0.5 (mean) | per draw | gain over 0 (mean) | training min/round "
        "(wall, mean) | CPU min/round (mean) |",
        "|---:|---:|---|---:|---:|---:|",
    ]
    for count in counts:
        part = [r for r in rows if int(r["corrected"]) == count]
        ap = [float(r["ap50"]) for r in part]
        gains = [float(r["ap50"]) - base[int(r["draw"])] for r in part if int(r["draw"]) in base]
        wall = [float(r["train_minutes"]) for r in part]
        cpu = [float(r["cpu_minutes"]) for r in part]
        lines.append(
            f"| {count} | {np.mean(ap):.3f} | {' '.join(f'{a:.3f}' for a in ap)} | "
            f"{np.mean(gains):+.3f} | {np.mean(wall):.1f} | {np.mean(cpu):.1f} |"
            if count
            else f"| 0 | {np.mean(ap):.3f} | {' '.join(f'{a:.3f}' for a in ap)} | | | |"
        )
    lines.append(f"\n{len(draws)} draws ({', '.join(map(str, draws))}).")
    return "\n".join(lines)


def plot(rows: list[dict[str, str]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for draw in sorted({int(r["draw"]) for r in rows}):
        part = sorted((int(r["corrected"]), float(r["ap50"])) for r in rows if int(r["draw"]) == draw)
        ax.plot(*zip(*part), color="0.7", marker=".", lw=1, label="a draw" if draw == 0 else None)
    counts = sorted({int(r["corrected"]) for r in rows})
    means = [np.mean([float(r["ap50"]) for r in rows if int(r["corrected"]) == c]) for c in counts]
    ax.plot(counts, means, color="C0", marker="o", lw=2, label="mean")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xticks(counts, [str(c) for c in counts])
    ax.set_xlabel("corrected images")
    ax.set_ylabel("held-out AP@0.5")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="monuseg_train_he", help="dataset name under the data root, or a folder")
    parser.add_argument("--out", type=Path, help="output folder (continued if it holds rounds.csv)")
    parser.add_argument("--draws", type=int, nargs="+", default=[0, 1, 2], help="seeds of the draws")
    parser.add_argument(
        "--counts",
        type=int,
        nargs="+",
        default=[0, 1, 2, 4, 8],
        help="corrected images after each round (0: the starting model)",
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="wall-clock budget of a round's fine-tuning (default none: the epochs of the widget's "
        "settings, so that a shared CPU changes the time, not the result)",
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the starting model (default: the default model)")
    parser.add_argument(
        "--held-out",
        type=int,
        default=4,
        help="held-out images when the starting model names none of this set as unseen",
    )
    parser.add_argument(
        "--settings",
        type=json.loads,
        default=None,
        help="JSON of TrainConfig settings over the widget's, e.g. '{\"crop_size\": 128}'",
    )
    parser.add_argument("--report", type=Path, help="print the table of this output folder (and --plot it)")
    parser.add_argument("--plot", type=Path, help="with --report: draw the plot here")
    args = parser.parse_args(argv)

    if args.report:
        rows = read_rounds(args.report / "rounds.csv")
        about = json.loads((args.report / "about.json").read_text())
        print(about["description"] + "\n")
        print(table(rows))
        if args.plot:
            plot(rows, args.plot, about["title"])
        return 0
    if args.out is None:
        parser.error("--out is required (or --report)")
    root = Path(args.data) if Path(args.data).is_dir() else dataset_path(args.data)
    names = [f.name for f in list_dataset(root)]
    held_names, origin = held_out_names(root, names, args.model, args.held_out)
    pool = [n for n in names if n not in set(held_names)]
    counts = sorted(set(args.counts) | {0})
    if counts[-1] > len(pool):
        raise SystemExit(f"bench_loop: {root} has {len(pool)} images to correct, fewer than {counts[-1]}")
    held_out = load_dataset(root, names=held_names, progress=False)
    args.out.mkdir(parents=True, exist_ok=True)
    budget = "the widget's epochs" if args.minutes is None else f"at most {args.minutes:g} min"
    about = {
        "description": f"{root.name}: starting model {args.model}; held out: {origin}; each round fine-tunes "
        f"for {budget}; command: python benchmarks/bench_loop.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "title": f"{root.name}, from {args.model}",
        "held_out": held_names,
    }
    with atomic_write(args.out / "about.json") as tmp:
        tmp.write_text(json.dumps(about, indent=1) + "\n")
    rounds_csv = args.out / "rounds.csv"
    rows = read_rounds(rounds_csv)
    for draw in args.draws:
        run_draw(
            draw,
            root=root,
            pool=pool,
            held_out=held_out,
            counts=counts,
            model=args.model,
            minutes=args.minutes,
            out=args.out,
            rows=rows,
            rounds_csv=rounds_csv,
            settings=args.settings,
        )
    print(about["description"] + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
