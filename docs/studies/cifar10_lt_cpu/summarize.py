"""Prints the README table of the CPU-scale study from the committed results.json files.

    python docs/studies/cifar10_lt_cpu/summarize.py

Per run (every committed seed): the last step reached, test top-1 (median of the last 4 evaluations, as the
experiment reports it; logit-adjusted in brackets), head / medium / tail test accuracy of the
last evaluation (classes 0-2 / 3-6 / 7-9), and from the training windows of results.json
(every unlabeled sample's pseudo-label, before the confidence mask): the recall of the
minority classes 7-9, the share of the selected (masked-in) pseudo-labels that are right, and
the mask rate of the window ending at the warm-up's end and of the last window.
"""

import json
import pathlib

import numpy as np

STUDY = pathlib.Path(__file__).resolve().parent
SETTINGS = ("cifar10_lt_n1500", "cifar10_lt_n1500_reversed")
LEARNERS = ("supervised", "fixmatch", "daso")
MINORITY = slice(7, 10)


def window_at(training, step):
    return next((window for window in training if window["step"] == step), None)


def row(setting, learner, results):
    last = results["history"][-1]["test"]
    warmup = results["config"]["algorithm"].get("warmup_steps") or 1000
    cells = [setting, learner, str(results["step"]) + ("" if results["finished"] else " (stopped)"),
             f"{results['test_top1_median4']:.1f} ({results['test_top1_la_median4']:.1f})",
             f"{last['head']:.1f} / {last['medium']:.1f} / {last['tail']:.1f}"]
    windows = [w for w in results.get("training", []) if w.get("pseudo_labels")]
    if learner == "supervised" or not windows:
        return cells + ["-", "-", "-"]
    labels = windows[-1]["pseudo_labels"]
    correct, true = np.asarray(labels["correct_all"]), np.asarray(labels["by_true_class_all"])
    recall = correct[MINORITY].sum() / max(true[MINORITY].sum(), 1)
    selected = sum(labels["selected"])
    right = sum(labels["correct"]) / selected if selected else float("nan")
    before = window_at(windows, warmup)
    masks = f"{before['mask'] * 100:.0f} -> " if before else ""
    return cells + [f"{recall * 100:.1f}", f"{right * 100:.0f}" if selected else "-",
                    masks + f"{windows[-1]['mask'] * 100:.0f}"]


def seeds_of(setting, learner):
    """The seeds with a committed results.json, ascending."""
    return sorted(int(path.parent.name.rsplit("_seed", 1)[1])
                  for path in (STUDY / setting).glob(f"{learner}_seed*/results.json"))


def main():
    header = ["setting", "learner", "seed", "steps", "test top-1 median-4 (LA)", "head / medium / tail",
              "pseudo-label recall, classes 7-9", "selected pseudo-labels right %", "mask % (step 1000 -> last)"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for setting in SETTINGS:
        for learner in LEARNERS:
            for seed in seeds_of(setting, learner):
                results = json.loads((STUDY / setting / f"{learner}_seed{seed}" / "results.json").read_text())
                cells = row(setting, learner, results)
                print("| " + " | ".join(cells[:2] + [str(seed)] + cells[2:]) + " |")


if __name__ == "__main__":
    main()
