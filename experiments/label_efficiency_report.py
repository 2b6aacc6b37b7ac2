"""The label-efficiency experiment's outputs from its cells: results.csv, summary.md, label_efficiency.png."""
from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from utils import atomic_path, atomic_write_text  # noqa: E402

PROTOCOLS = ("probe", "finetune", "baseline")  # the experiment's protocols, in the order of its tables
COLUMNS = ("protocol", "encoder", "labels", "labelled_images", "seed", "settings", "features", "test_acc", "test_auroc",
           "per_class_acc", "seconds", "checkpoint")
METRICS = (("test_auroc", "AUROC"), ("test_acc", "accuracy"))
FIGURE_INCHES = (11.0, 4.5)
DPI = 100
BAND_ALPHA = 0.2  # the spread over seeds, around each line
STRONGEST = "best-untrained"  # the strongest untrained reference's rows (downstream/logistic_regression/strongest.py)


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write_rows(path: Path, rows: list[dict]) -> None:
    write_table(path, rows, COLUMNS)


def write_table(path: Path, rows: list[dict], columns) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def series(rows: list[dict], budgets: list[str]) -> dict[tuple[str, str], dict[str, list[dict]]]:
    """(protocol, encoder) -> budget -> the rows of its seeds; protocols in PROTOCOLS' order, encoders in the
    order the rows first name them."""
    grouped: dict[tuple[str, str], dict[str, list[dict]]] = {}
    for row in sorted(rows, key=lambda row: PROTOCOLS.index(row["protocol"])):  # stable: keeps the encoders' order
        if row["labels"] in budgets:
            grouped.setdefault((row["protocol"], row["encoder"]), {}).setdefault(row["labels"], []).append(row)
    return grouped


def summary_markdown(rows: list[dict], budgets: list[str], title: str) -> str:
    """One table per metric: a row per protocol and encoder, a column per label budget, mean ± std over seeds."""
    grouped = series(rows, budgets)
    lines = [f"# {title}", "", f"Test split; mean ± standard deviation over seeds (label draws); {len(rows)} cells.", ""]
    for key, name in METRICS:
        lines += [f"## Test {name}", "", "| protocol | encoder | " + " | ".join(f"{b} labels" for b in budgets) + " |",
                  "|---|---|" + "---|" * len(budgets)]
        for (protocol, encoder), cells in grouped.items():
            texts = []
            for budget in budgets:
                values = [float(r[key]) for r in cells.get(budget, [])]
                mean, std = spread(values) if values else (math.nan, math.nan)
                texts.append(f"{mean:.3f} ± {std:.3f} (n={len(values)})" if values else "-")
            lines.append(f"| {protocol} | {encoder} | " + " | ".join(texts) + " |")
        lines.append("")
    chosen = [r for r in rows if r.get("features") and r["encoder"] == STRONGEST and r["labels"] in budgets]
    if chosen:
        lines += [f"## What {STRONGEST} chose (on the validation split)", ""]
        for budget in budgets:
            picks = [r["features"].split(" (val")[0] for r in chosen if r["labels"] == budget]
            if picks:
                counts = {pick: picks.count(pick) for pick in dict.fromkeys(picks)}
                lines.append(f"- {budget} labels: " + ", ".join(f"{pick} x{n}" for pick, n in counts.items()))
        lines.append("")
    return "\n".join(lines)


def plot(rows: list[dict], budgets: list[str], title: str):
    """AUROC and accuracy against the number of labelled images (log scale): a line per protocol and encoder,
    a band for mean ± std over seeds. Returns the figure."""
    grouped = series(rows, budgets)
    ticks = {statistics.mean(float(r["labelled_images"]) for r in rows if r["labels"] == budget): budget
             for budget in budgets if any(r["labels"] == budget for r in rows)}
    fig, axes = plt.subplots(1, len(METRICS), figsize=FIGURE_INCHES, dpi=DPI)
    for ax, (key, name) in zip(axes, METRICS):
        for (protocol, encoder), cells in grouped.items():
            points = sorted((statistics.mean(float(r["labelled_images"]) for r in seeds),
                             *spread([float(r[key]) for r in seeds])) for seeds in cells.values())
            x, mean, std = zip(*points)
            line, = ax.plot(x, mean, marker="o", label=f"{protocol}: {encoder}")
            ax.fill_between(x, [max(m - s, 0.0) for m, s in zip(mean, std)],  # both metrics lie in [0, 1]
                            [min(m + s, 1.0) for m, s in zip(mean, std)], color=line.get_color(), alpha=BAND_ALPHA)
        ax.set(xscale="log", xlabel="labelled training images", ylabel=f"test {name}", title=f"test {name}")
        ax.set_xticks(list(ticks), [f"{n:g}\n({budget})" for n, budget in ticks.items()])  # each budget, as run
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def write_reports(folder: Path, rows: list[dict], budgets: list[str], title: str) -> tuple[Path, Path]:
    summary, figure = folder / "summary.md", folder / "label_efficiency.png"
    atomic_write_text(summary, summary_markdown(rows, budgets, title) + "\n")
    fig = plot(rows, budgets, title)
    try:
        with atomic_path(figure) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(fig)
    return summary, figure
