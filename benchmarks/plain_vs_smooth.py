"""Plain vs smooth: does a smooth attack keep the success and distortion of its plain version?

Reads the records of a ``smoothadv evaluate`` run (or runs the ImageNet one first) and prints, per pair
(plain, smooth): P_suc, D_bar, median L2, gradients per image and run, attack time per image, and, where
MAD was computed, the share of images (successful for both) on which the smooth version has the lower MAD.
The paper's claim (smoothness at no cost in distortion) holds for a pair when the smooth version keeps
P_suc within 0.01 and D_bar within 5% of the plain one.

    # MNIST, 1000 test images (the README table):
    smoothadv evaluate --model c4 --data mnist --limit 1000 --threads 1 --out out/mnist-plain-smooth \
        --attacks cw,scw,ddn,sddn,fmn,sfmn,pgd2,qpgd2,spgd2,cw+lowpass,cw+dct
    python benchmarks/plain_vs_smooth.py out/mnist-plain-smooth
    # ImageNet photos with CPU budgets (C&W 5x50, DDN/FMN 100 steps), MAD included:
    python benchmarks/plain_vs_smooth.py out/lite0-plain-smooth --run efficientnet-lite0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from smoothadv.attacks import ATTACKS
from smoothadv.evaluation.metrics import attack_statistics, image_outcomes
from smoothadv.evaluation.records import read_records

PAIRS = [("cw", "scw"), ("ddn", "sddn"), ("fmn", "sfmn"), ("pgd2", "qpgd2"), ("pgd2", "spgd2"),
         ("apgd2", "sapgd2"), ("scw", "cw+lowpass"), ("scw", "cw+dct"), ("sddn", "ddn+lowpass"),
         ("sddn", "ddn+dct")]
IMAGENET_ATTACKS = "cw,scw,ddn,sddn,fmn,sfmn,pgd2,qpgd2,spgd2,cw+lowpass,cw+dct"
#: CPU budgets of the ImageNet run (the presets are 9x100 for C&W).
IMAGENET_OPTIONS = {name: {"binary_search_steps": 5, "steps": 50}
                    for name in ("cw", "scw", "cw+lowpass", "cw+dct")}


def lower_mad_share(records, model: str, plain: str, smooth: str) -> tuple[float | None, int]:
    """Share of the images successful for both attacks with MAD for both where ``smooth`` scores lower."""
    first = {o.image_id: o for o in image_outcomes(records, model, plain) if o.success and o.mad is not None}
    second = {o.image_id: o for o in image_outcomes(records, model, smooth)
              if o.success and o.mad is not None}
    both = sorted(set(first) & set(second))
    if not both:
        return None, 0
    return sum(second[i].mad < first[i].mad for i in both) / len(both), len(both)


def compare(records, model: str, plain: str, smooth: str) -> dict:
    """Both attacks' statistics on the images both have records for (a run cut short may hold fewer
    images of its last attacks), the claim's verdict and the MAD share."""
    ids = [{r["image_id"] for r in records if r.get("kind") == "attack" and r["attack"] == name}
           for name in (plain, smooth)]
    shared = ids[0] & ids[1]
    records = [r for r in records if r.get("kind") != "attack" or r["image_id"] in shared]
    a, b = attack_statistics(records, model, plain), attack_statistics(records, model, smooth)
    share, shared = lower_mad_share(records, model, plain, smooth)
    row = {"plain": plain, "smooth": smooth, "n": a.n}
    for label, stats in (("plain", a), ("smooth", b)):
        row[label + "_stats"] = {"p_suc": stats.p_success, "d_bar": stats.mean_l2,
                                 "median": stats.median_l2,
                                 "gradients": stats.mean_gradient_evaluations,
                                 "runs_per_image": (stats.epsilons and len(stats.epsilons)) or 1,
                                 "seconds_per_image": stats.seconds / max(stats.n, 1), "mad": stats.mean_mad}
    if a.p_success is not None and b.p_success is not None and a.mean_l2 and b.mean_l2:
        row["p_suc_change"] = b.p_success - a.p_success
        row["d_bar_change"] = b.mean_l2 / a.mean_l2 - 1
        row["claim_holds"] = row["p_suc_change"] >= -0.01 and row["d_bar_change"] <= 0.05
    row["smooth_lower_mad_share"], row["mad_images"] = share, shared
    return row


def markdown(rows: list[dict], title: str) -> str:
    lines = [f"### {title}", "",
             "| attack | P_suc | D_bar | median | gradients / image | s / image | lower MAD | claim |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        for label in ("plain", "smooth"):
            s = row[label + "_stats"]
            if s["p_suc"] is None:
                continue
            gradients = s["gradients"] * s["runs_per_image"]
            cells = [ATTACKS.label(row[label]), f"{s['p_suc']:.3f}", f"{s['d_bar']:.3f}",
                     f"{s['median']:.3f}", f"{gradients:.0f}", f"{s['seconds_per_image']:.3f}"]
            if label == "plain":
                cells += ["", ""]
            else:
                share = row["smooth_lower_mad_share"]
                cells.append("-" if share is None else f"{share:.2f} of {row['mad_images']}")
                holds = row.get("claim_holds")
                cells.append("-" if holds is None else (
                    f"{'holds' if holds else 'fails'} (P_suc {row['p_suc_change']:+.3f}, "
                    f"D_bar {100 * row['d_bar_change']:+.1f}%)"))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_imagenet(out: Path, model: str, limit: int | None, attacks: str) -> None:
    from smoothadv.experiments.jobs import run_evaluation

    torch.set_num_threads(1)
    names = attacks.split(",")
    run_evaluation(model=model, data="imagenet-samples", attacks=attacks, out_dir=out, limit=limit,
                   attack_options={k: v for k, v in IMAGENET_OPTIONS.items() if k in names}, perceptual=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="output folder of a smoothadv evaluate run")
    parser.add_argument("--run", dest="model", help="first run the ImageNet evaluation of this model there")
    parser.add_argument("--limit", type=int, help="with --run: the first N photos")
    parser.add_argument("--attacks", default=IMAGENET_ATTACKS,
                        help=f"with --run: the attacks (default {IMAGENET_ATTACKS})")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.model:
        run_imagenet(args.run, args.model, args.limit, args.attacks)
    records = read_records(args.run / "records.jsonl")
    config = json.loads((args.run / "config.json").read_text())
    model, attacks = config["model"], set(config["attacks"])
    rows = [compare(records, model, plain, smooth) for plain, smooth in PAIRS if {plain, smooth} <= attacks]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(markdown(rows, f"{model} on {config['data']['source']} ({config['data']['size']} images)"))


if __name__ == "__main__":
    main()
