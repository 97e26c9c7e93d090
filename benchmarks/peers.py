"""smoothadv against Foolbox, torchattacks, ART and adv-lib: speed and strength on the same inputs.

Every row of the table is one attack family at one budget on one setting (C4 on MNIST test images,
EfficientNet-Lite0 on foolbox's ImageNet photos). All libraries of a row run in this process on the same
correctly classified images, batch by batch: within each batch the libraries take turns (the order
rotates from batch to batch), so machine load hits them alike. Per batch we divide each library's time by
smoothadv's; the headline is the median of these ratios. Strength is measured the same way for everyone,
here: success = the model's prediction on the returned image differs from the label, L2 over all pixels
of [0, 1] images; D_bar is the mean (and median) L2 over successes only, as in the paper.

Budgets are equal by construction: C&W gets the same binary-search steps, iterations, learning rate,
initial constant and confidence (margin) everywhere; torchattacks' CW has no binary search, so it runs
the same total number of iterations at the initial constant. PGD and FGSM get the same epsilon, steps and
step size, with no random start; DeepFool the same steps, overshoot and candidate classes. smoothadv runs
without 8-bit rounding (peers return floats) in these rows.

The minimal-norm rows (DDN, FMN and ALMA at the same number of iterations) and the APGD rows are
"rounded": every library's output is rounded to 8 bits (nearest) and re-classified before success and
distortion are counted, since a PNG is what a user keeps; smoothadv runs with its 8-bit mode there.

Peers are benchmark-only dependencies: ``pip install -r benchmarks/requirements-peers.txt`` (see that
file; they install with --no-deps next to torch 2.13.0). adv-lib imports torchvision and visdom at module
level for features we do not use; both are stubbed here.

Usage:
    python benchmarks/peers.py [--mnist-images 500] [--rows cw,pgd2,...] [--report docs/peers.md] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import statistics
import sys
import time
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from smoothadv.attacks import FGSM, PGD2, PRESETS, CarliniWagnerL2, DeepFool, SmoothCarliniWagnerL2
from smoothadv.attacks.apgd import APGD2
from smoothadv.attacks.minimum_norm import DDN, FMN
from smoothadv.core.images import quantize_8bit
from smoothadv.data import load_imagenet_samples, load_mnist
from smoothadv.models import load_model, model_info

# An attack runner: (model, images (B, C, H, W) in [0, 1], labels (B,)) -> adversarial images.
Runner = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
PEER_NAMES = ("foolbox", "torchattacks", "art", "adv-lib")


# ---------------------------------------------------------------------------------------------- peers
def import_peers() -> dict[str, object]:
    """Import every peer that is installed; missing ones are reported in the table, not fatal."""
    peers: dict[str, object] = {}
    for name in PEER_NAMES:
        try:
            peers[name] = _import_peer(name)
        except Exception as error:  # noqa: BLE001 - a broken peer must not stop the others
            print(f"[peers] {name} unavailable: {type(error).__name__}: {error}", file=sys.stderr)
    return peers


def _import_peer(name: str):
    if name == "foolbox":
        import foolbox

        return foolbox
    if name == "torchattacks":
        import torchattacks

        return torchattacks
    if name == "art":
        import art.attacks.evasion
        import art.estimators.classification

        return art
    _stub_adv_lib_imports()
    import adv_lib.attacks

    return adv_lib.attacks


def _stub_adv_lib_imports() -> None:
    """adv-lib imports torchvision (LPIPS) and visdom (logging) at module level; we use neither."""
    for module_name in ("torchvision", "torchvision.models", "visdom"):
        if module_name not in sys.modules:
            stub = types.ModuleType(module_name)
            stub.__dict__["__getattr__"] = lambda attribute: None
            sys.modules[module_name] = stub
    sys.modules["torchvision"].models = sys.modules["torchvision.models"]


def art_classifier(art, model: nn.Module, images: torch.Tensor, classes: int):
    return art.estimators.classification.PyTorchClassifier(
        model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(images.shape[1:]), nb_classes=classes,
        clip_values=(0.0, 1.0), device_type="cpu",
    )


def art_generate(attack, images: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    onehot = np.eye(classes, dtype=np.float32)[labels.numpy()]
    return torch.from_numpy(attack.generate(x=images.numpy(), y=onehot)).to(images.dtype)


def foolbox_run(foolbox, attack, model, images, labels, epsilon=None) -> torch.Tensor:
    fmodel = foolbox.PyTorchModel(model, bounds=(0.0, 1.0))
    _, clipped, _ = attack(fmodel, images, labels, epsilons=epsilon)
    return clipped


# ------------------------------------------------------------------------------------ attack families
def cw_runners(peers, budget: dict, classes: int) -> dict[str, Runner]:
    """C&W L2 at ``budget`` (binary_search_steps, steps, learning_rate, initial_constant, margin)."""
    searches, steps = budget["binary_search_steps"], budget["steps"]
    rate, constant, margin = budget["learning_rate"], budget["initial_constant"], budget["margin"]
    ours = dict(binary_search_steps=searches, steps=steps, learning_rate=rate, initial_constant=constant,
                margin=margin, quantize=False)
    runners: dict[str, Runner] = {
        "smoothadv": lambda m, x, y: CarliniWagnerL2(m, **ours).generate(x, y),
        "smoothadv sC&W": lambda m, x, y: SmoothCarliniWagnerL2(
            m, smoothing=budget["smoothing"], **ours).generate(x, y),
    }
    if "foolbox" in peers:
        fb = peers["foolbox"]
        runners["foolbox"] = lambda m, x, y: foolbox_run(fb, fb.attacks.L2CarliniWagnerAttack(
            binary_search_steps=searches, steps=steps, stepsize=rate, confidence=margin,
            initial_const=constant, abort_early=True), m, x, y)
    if "adv-lib" in peers:
        al = peers["adv-lib"]
        runners["adv-lib"] = lambda m, x, y: al.carlini_wagner_l2(
            m, x, y, confidence=margin, learning_rate=rate, initial_const=constant,
            binary_search_steps=searches, max_iterations=steps, abort_early=True)
    if "art" in peers:
        art = peers["art"]
        runners["art"] = lambda m, x, y: art_generate(art.attacks.evasion.CarliniL2Method(
            art_classifier(art, m, x, classes), confidence=margin, learning_rate=rate,
            binary_search_steps=searches, max_iter=steps, initial_const=constant, batch_size=len(x),
            verbose=False), x, y, classes)
    if "torchattacks" in peers:
        ta = peers["torchattacks"]
        runners["torchattacks (no search)"] = lambda m, x, y: ta.CW(
            m, c=constant, kappa=margin, steps=searches * steps, lr=rate)(x, y)
    return runners


def pgd2_runners(peers, epsilon: float, steps: int, step_size: float, classes: int) -> dict[str, Runner]:
    """L2 PGD (normalised-gradient steps, projection on the L2 ball, no random start)."""
    runners: dict[str, Runner] = {
        "smoothadv": lambda m, x, y: PGD2(m, epsilon, steps=steps, step_size=step_size,
                                          quantize=False).generate(x, y),
    }
    if "foolbox" in peers:
        fb = peers["foolbox"]
        runners["foolbox"] = lambda m, x, y: foolbox_run(fb, fb.attacks.L2PGD(
            abs_stepsize=step_size, steps=steps, random_start=False), m, x, y, epsilon)
    if "torchattacks" in peers:
        ta = peers["torchattacks"]
        runners["torchattacks"] = lambda m, x, y: ta.PGDL2(
            m, eps=epsilon, alpha=step_size, steps=steps, random_start=False)(x, y)
    if "art" in peers:
        art = peers["art"]
        runners["art"] = lambda m, x, y: art_generate(art.attacks.evasion.ProjectedGradientDescent(
            art_classifier(art, m, x, classes), norm=2, eps=epsilon, eps_step=step_size, max_iter=steps,
            num_random_init=0, batch_size=len(x), verbose=False), x, y, classes)
    return runners


def fgsm_runners(peers, epsilon: float, classes: int) -> dict[str, Runner]:
    """One L-inf signed-gradient step of size epsilon."""
    runners: dict[str, Runner] = {
        "smoothadv": lambda m, x, y: FGSM(m, epsilon, quantize=False).generate(x, y),
    }
    if "foolbox" in peers:
        fb = peers["foolbox"]
        runners["foolbox"] = lambda m, x, y: foolbox_run(fb, fb.attacks.FGSM(random_start=False), m, x, y,
                                                         epsilon)
    if "torchattacks" in peers:
        ta = peers["torchattacks"]
        runners["torchattacks"] = lambda m, x, y: ta.FGSM(m, eps=epsilon)(x, y)
    if "art" in peers:
        art = peers["art"]
        runners["art"] = lambda m, x, y: art_generate(art.attacks.evasion.FastGradientMethod(
            art_classifier(art, m, x, classes), norm=np.inf, eps=epsilon, batch_size=len(x)), x, y, classes)
    return runners


def deepfool_runners(peers, steps: int, overshoot: float, candidates: int, classes: int) -> dict[str, Runner]:
    """L2 DeepFool over the ``candidates`` most likely classes."""
    runners: dict[str, Runner] = {
        "smoothadv": lambda m, x, y: DeepFool(m, steps=steps, overshoot=overshoot, candidates=candidates,
                                              quantize=False).generate(x, y),
    }
    if "foolbox" in peers:
        fb = peers["foolbox"]
        runners["foolbox"] = lambda m, x, y: foolbox_run(fb, fb.attacks.L2DeepFoolAttack(
            steps=steps, candidates=candidates, overshoot=overshoot), m, x, y)
    if "adv-lib" in peers and candidates >= classes:  # adv-lib's df uses every class
        al = peers["adv-lib"]
        runners["adv-lib"] = lambda m, x, y: al.df(m, x, y, steps=steps, overshoot=overshoot)
    if "art" in peers:
        art = peers["art"]
        runners["art"] = lambda m, x, y: art_generate(art.attacks.evasion.DeepFool(
            art_classifier(art, m, x, classes), max_iter=steps, epsilon=overshoot, nb_grads=candidates,
            batch_size=len(x), verbose=False), x, y, classes)
    if "torchattacks" in peers and candidates >= classes:  # torchattacks' DeepFool uses every class
        ta = peers["torchattacks"]
        runners["torchattacks"] = lambda m, x, y: ta.DeepFool(m, steps=steps, overshoot=overshoot)(x, y)
    return runners


def minimal_norm_runners(peers, steps: int) -> dict[str, Runner]:
    """The strongest minimal-L2 attacks at ``steps`` gradients each, 8-bit outputs (``rounded``):
    smoothadv's DDN and FMN (rounding inside the loop) against adv-lib's DDN (its own 8-bit mode,
    ``levels=256``), FMN and ALMA and Foolbox's DDN."""
    runners: dict[str, Runner] = {
        "smoothadv": lambda m, x, y: DDN(m, steps=steps).generate(x, y),
        "smoothadv FMN": lambda m, x, y: FMN(m, steps=steps).generate(x, y),
    }
    if "adv-lib" in peers:
        al = peers["adv-lib"]
        runners["adv-lib DDN"] = lambda m, x, y: al.ddn(m, x, y, steps=steps, levels=256)
        runners["adv-lib FMN"] = lambda m, x, y: al.fmn(m, x, y, norm=2, steps=steps)
        runners["adv-lib ALMA"] = lambda m, x, y: al.alma(m, x, y, num_steps=steps, distance="l2",
                                                          init_lr_distance=0.1)
    if "foolbox" in peers:
        fb = peers["foolbox"]
        runners["foolbox DDN"] = lambda m, x, y: foolbox_run(fb, fb.attacks.DDNAttack(
            init_epsilon=1.0, steps=steps, gamma=0.05), m, x, y)
    return runners


def apgd_runners(peers, epsilon: float, steps: int, loss: str) -> dict[str, Runner]:
    """APGD in L2 at ``epsilon``, ``steps`` iterations, one run from the clean image (no random start)."""
    runners: dict[str, Runner] = {
        "smoothadv": lambda m, x, y: APGD2(m, epsilon, steps=steps, loss=loss).generate(x, y),
    }
    if "adv-lib" in peers:
        al = peers["adv-lib"]
        runners["adv-lib"] = lambda m, x, y: al.apgd(m, x, y, eps=epsilon, norm=2, n_iter=steps,
                                                     loss_function=loss, use_rs=False)
    return runners


# ------------------------------------------------------------------------------------------ the runs
class CountingModel(nn.Module):
    """The model, counting the images it forwards: the work profile of each library (gradient budget)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.images = 0
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.images += len(images)
        return self.model(images)


@dataclass
class Setting:
    """A model and the correctly classified images it is attacked on."""

    name: str
    model: nn.Module
    images: torch.Tensor  # (N, C, H, W)
    labels: torch.Tensor  # (N,)
    batch_size: int
    classes: int
    attempted: int  # images before keeping the correctly classified ones


@dataclass
class Row:
    family: str
    setting: Setting
    budget: str
    runners: dict[str, Runner]
    #: libraries too slow for the whole set run on its first N images only (time ratios are per image)
    limits: dict[str, int] = field(default_factory=dict)
    #: every library's output is rounded to 8 bits before it is re-classified and measured (a PNG is
    #: what a user keeps)
    rounded: bool = False
    results: dict[str, dict] = field(default_factory=dict)


def mnist_setting(count: int, batch_size: int) -> Setting:
    data = load_mnist("test", limit=count)
    return _correct_only("C4 / MNIST", load_model("c4"), data.batch(range(len(data))), batch_size, 10)


def imagenet_setting(batch_size: int, count: int | None = None) -> Setting:
    info = model_info("efficientnet-lite0")
    data = load_imagenet_samples(info.input_size, resize=info.resize).head(count)
    return _correct_only("Lite0 / ImageNet photos", load_model("efficientnet-lite0"),
                         data.batch(range(len(data))), batch_size, 1000)


def _correct_only(name: str, model: nn.Module, batch, batch_size: int, classes: int) -> Setting:
    with torch.no_grad():
        correct = model(batch.images).argmax(1) == batch.labels
    return Setting(name, model, batch.images[correct], batch.labels[correct], batch_size, classes,
                   len(batch.labels))


def run_row(row: Row, *, verbose: bool = True) -> Row:
    """Run every library of ``row`` on every batch, libraries interleaved, and measure them alike."""
    setting = row.setting
    names = list(row.runners)
    times: dict[str, list[float]] = {name: [] for name in names}
    ratios: dict[str, list[float]] = {name: [] for name in names}
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    forwards = dict.fromkeys(names, 0)
    failures: dict[str, str] = {}
    starts = range(0, len(setting.labels), setting.batch_size)
    for index, start in enumerate(starts):
        images = setting.images[start:start + setting.batch_size]
        labels = setting.labels[start:start + setting.batch_size]
        order = names[index % len(names):] + names[:index % len(names)]
        taken: dict[str, int] = {}
        for name in order:
            count = min(len(labels), row.limits.get(name, len(setting.labels)) - start)
            if name in failures or count <= 0:
                continue
            torch.manual_seed(0)
            counting = CountingModel(setting.model)
            begin = time.perf_counter()
            try:
                with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
                    warnings.simplefilter("ignore")
                    adversarial = row.runners[name](counting, images[:count].clone(), labels[:count].clone())
            except Exception as error:  # noqa: BLE001 - report a failing peer, keep the others
                failures[name] = f"{type(error).__name__}: {error}"[:200]
                continue
            times[name].append(time.perf_counter() - begin)
            forwards[name] += counting.images
            taken[name] = count
            outputs[name].append(adversarial.detach().to(images.dtype).reshape(images[:count].shape))
        if "smoothadv" in taken:
            per_image = times["smoothadv"][-1] / taken["smoothadv"]
            for name, count in taken.items():
                ratios[name].append(times[name][-1] / count / per_image)
        if verbose:
            done = min(start + setting.batch_size, len(setting.labels))
            print(f"  [{row.family} {row.budget} on {setting.name}] {done}/{len(setting.labels)} images: "
                  + ", ".join(f"{n} {times[n][-1]:.1f}s" for n in taken), file=sys.stderr, flush=True)
    for name in names:
        if name in failures:
            row.results[name] = {"error": failures[name]}
            continue
        adversarial = torch.cat(outputs[name])
        if row.rounded:
            adversarial = quantize_8bit(adversarial.clamp(0.0, 1.0))
        row.results[name] = strength(setting, adversarial)
        seconds = sum(times[name])
        row.results[name].update(seconds=seconds, images_per_second=len(adversarial) / seconds,
                                 time_ratio=statistics.median(ratios[name]), batches=len(ratios[name]),
                                 forwards_per_image=forwards[name] / len(adversarial),
                                 ms_per_forward=1e3 * seconds / max(forwards[name], 1))
    return row


def strength(setting: Setting, adversarial: torch.Tensor) -> dict:
    """P_suc and D_bar (mean, median L2 over successes) measured by us for every library.

    ``adversarial`` holds the first len(adversarial) images of the setting (all of them, or a limit).
    """
    count = len(adversarial)
    with torch.no_grad():
        predictions = torch.cat([setting.model(adversarial[i:i + setting.batch_size]).argmax(1)
                                 for i in range(0, count, setting.batch_size)])
    success = predictions != setting.labels[:count]
    l2 = (adversarial - setting.images[:count]).flatten(1).norm(dim=1)
    in_range = bool(((adversarial >= 0) & (adversarial <= 1)).all())
    successful = l2[success]
    return {
        "images": len(success), "p_suc": float(success.float().mean()),
        "d_bar": float(successful.mean()) if len(successful) else float("nan"),
        "d_median": float(successful.median()) if len(successful) else float("nan"),
        "in_range": in_range,
        "per_image_l2": [round(float(v), 6) for v in l2], "per_image_success": success.tolist(),
    }


def d_bar_on_first(result: dict, count: int) -> float:
    """D_bar of a library's result over the first ``count`` images only (to compare with a limited peer)."""
    pairs = list(zip(result["per_image_l2"][:count], result["per_image_success"][:count], strict=True))
    successful = [l2 for l2, success in pairs if success]
    return sum(successful) / len(successful) if successful else float("nan")


def build_rows(names: list[str], peers, mnist: Setting | None, imagenet: Setting | None,
               imagenet_cw: tuple[int, int], minimal_steps: tuple[int, int], art_limits: tuple[int, int]
               ) -> list[Row]:
    rows: list[Row] = []
    for setting, preset in ((mnist, "mnist"), (imagenet, "imagenet")):
        if setting is None:
            continue
        cw = dict(PRESETS[preset]["cw"], smoothing=PRESETS[preset]["smoothing"])
        if preset == "imagenet":
            cw.update(binary_search_steps=imagenet_cw[0], steps=imagenet_cw[1])
        budget = f"{cw['binary_search_steps']}x{cw['steps']}"
        if "cw" in names:
            rows.append(Row("C&W L2", setting, budget, cw_runners(peers, cw, setting.classes),
                            limits={"art": art_limits[0 if preset == "mnist" else 1]}))
        if "minimal" in names:
            steps = minimal_steps[0 if preset == "mnist" else 1]
            rows.append(Row("minimal L2", setting, f"{steps} grads, 8-bit",
                            minimal_norm_runners(peers, steps), rounded=True))
        if "apgd2" in names:
            for epsilon in ([1.5] if preset == "mnist" else [0.5]):
                for loss in ("ce", "dlr"):
                    rows.append(Row("APGD L2", setting, f"eps {epsilon:g}, 100 steps, {loss}, 8-bit",
                                    apgd_runners(peers, epsilon, 100, loss), rounded=True))
        epsilons = [1.0, 2.0] if preset == "mnist" else [0.5, 1.0]
        if "pgd2" in names:
            for epsilon in epsilons:
                rows.append(Row("PGD L2", setting, f"eps {epsilon:g}, 10 x {epsilon / 4:g}",
                                pgd2_runners(peers, epsilon, 10, epsilon / 4, setting.classes)))
        if "fgsm" in names:
            for epsilon in ([0.1, 0.2] if preset == "mnist" else [1 / 255, 4 / 255]):
                rows.append(Row("FGSM", setting, f"eps {epsilon:.3g}",
                                fgsm_runners(peers, epsilon, setting.classes)))
        if "deepfool" in names:
            candidates = setting.classes if preset == "mnist" else 10
            # ART's DeepFool takes the gradients of the union of every image's candidates, for the whole
            # batch, at every step: with 1000 classes that is minutes per photo
            rows.append(Row("DeepFool", setting, f"50 steps, {candidates} classes",
                            deepfool_runners(peers, 50, 0.02, candidates, setting.classes),
                            limits={} if preset == "mnist" else {"art": art_limits[1]}))
    return rows


# ------------------------------------------------------------------------------------------ reporting
def as_records(rows: list[Row]) -> list[dict]:
    return [{"family": row.family, "setting": row.setting.name, "budget": row.budget, "library": name,
             "n": len(row.setting.labels), "n_attempted": row.setting.attempted, **result}
            for row in rows for name, result in row.results.items()]


def markdown(rows: list[Row], machine: str, command: str) -> str:
    lines = [
        "# smoothadv against its peers", "",
        f"Made by `{command}` on {machine}. Time ratio: median over batches of (library time / smoothadv",
        "time on the same batch, same process); below 1 means faster than smoothadv. P_suc and D_bar",
        "(mean and median L2 of successes) are measured by the benchmark, identically for all libraries,",
        "on the correctly classified images only. passes/image: images the library forwarded through the",
        "model per attacked image (its gradient budget actually spent); ms/pass: wall time per forwarded",
        "image, i.e. the cost of one iteration per image including backward passes and overhead.", "",
        "| attack | setting | budget | library | N | images/s | time ratio | passes/image | ms/pass "
        "| P_suc | D_bar | D median |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        for name, r in row.results.items():
            head = f"| {row.family} | {row.setting.name} | {row.budget} | {name} |"
            if "error" in r:
                lines.append(f"{head} | failed: {r['error']} | | | | | | |")
                continue
            lines.append(f"{head} {r['images']} | {r['images_per_second']:.2f} | {r['time_ratio']:.2f} | "
                         f"{r['forwards_per_image']:.0f} | {r['ms_per_forward']:.2f} | {r['p_suc']:.3f} | "
                         f"{r['d_bar']:.3f} | {r['d_median']:.3f} |")
    lines += ["", "## Targets", ""] + [f"- {line}" for line in target_lines(rows)]
    return "\n".join(lines) + "\n"


def target_lines(rows: list[Row]) -> list[str]:
    """The issue's targets, checked on this run's numbers."""
    lines = []
    for row in rows:
        results = {n: r for n, r in row.results.items() if "error" not in r}
        ours = results.get("smoothadv")
        if ours is None:
            continue
        peers = {n: r for n, r in results.items() if not n.startswith("smoothadv")}
        where = f"{row.family} {row.budget} on {row.setting.name}"
        if row.family == "C&W L2" and peers:
            searching = {n: r for n, r in peers.items() if "no search" not in n}
            fastest = min(searching or peers, key=lambda n: peers[n]["time_ratio"])
            # D_bar compared on the same images: a peer limited to the first N is compared with ours there
            ours_on = {n: d_bar_on_first(ours, r["images"]) for n, r in peers.items()}
            best = min(searching or peers, key=lambda n: peers[n]["d_bar"] / ours_on[n])
            speedup = peers[fastest]["time_ratio"]
            worse = ours_on[best] / peers[best]["d_bar"] - 1
            lines.append(f"{where}: {speedup:.2f}x faster than the fastest peer with a binary search "
                         f"({fastest}) (target >= 2: {'met' if speedup >= 2 else 'MISSED'}); D_bar "
                         f"{ours_on[best]:.3f} vs best peer {best} {peers[best]['d_bar']:.3f} on the same "
                         f"{peers[best]['images']} images ({100 * worse:+.1f}%, target <= +2%: "
                         f"{'met' if worse <= 0.02 else 'MISSED'})")
            smooth = results.get("smoothadv sC&W")
            if smooth:
                ratio = smooth["time_ratio"]
                lines.append(f"{where}: sC&W / C&W time {ratio:.2f} (target <= 1.2: "
                             f"{'met' if ratio <= 1.2 else 'MISSED'}; the paper: 4.4)")
        elif row.family == "minimal L2" and peers:
            best_peer = min(peers, key=lambda n: peers[n]["d_bar"] if peers[n]["p_suc"] >= 0.99 else math.inf)
            for name in ("smoothadv", "smoothadv FMN"):
                if name not in results:
                    continue
                mine = results[name]
                gap = mine["d_bar"] / peers[best_peer]["d_bar"] - 1
                slower = mine["seconds"] / peers[best_peer]["seconds"]
                label = "DDN" if name == "smoothadv" else "FMN"
                lines.append(
                    f"{where}: our {label} P_suc {mine['p_suc']:.3f} (target >= 0.99: "
                    f"{'met' if mine['p_suc'] >= 0.99 else 'MISSED'}); D_bar {mine['d_bar']:.3f} vs best "
                    f"peer {best_peer} {peers[best_peer]['d_bar']:.3f} ({100 * gap:+.1f}%, target <= +1%: "
                    f"{'met' if gap <= 0.01 else 'MISSED'}) in {slower:.3f}x its time (target <= 1: "
                    f"{'met' if slower <= 1 else 'MISSED'})")
            ours_best = min((n for n in results if n.startswith("smoothadv")),
                            key=lambda n: results[n]["d_bar"])
            lowest = min(results,
                         key=lambda n: results[n]["d_bar"] if results[n]["p_suc"] >= 0.99 else math.inf)
            lines.append(f"{where}: lowest D_bar among attacks with P_suc >= 0.99: {lowest} "
                         f"{results[lowest]['d_bar']:.3f}; best smoothadv {ours_best} "
                         f"{results[ours_best]['d_bar']:.3f} (target: smoothadv lowest: "
                         f"{'met' if lowest.startswith('smoothadv') else 'MISSED'})")
        elif row.family in ("PGD L2", "FGSM") and peers:
            fastest = min(peers, key=lambda n: peers[n]["time_ratio"])
            speedup = peers[fastest]["time_ratio"]
            lines.append(f"{where}: fastest peer {fastest} takes {speedup:.2f}x smoothadv's time "
                         f"(target >= 1: {'met' if speedup >= 1 else 'MISSED'})")
    return lines


def cpu_model() -> str:
    """The CPU's model name (Linux), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="cw,minimal,apgd2,pgd2,fgsm,deepfool",
                        help="comma-separated families: cw, minimal, apgd2, pgd2, fgsm, deepfool")
    parser.add_argument("--settings", default="mnist,imagenet", help="mnist, imagenet or both")
    parser.add_argument("--mnist-images", type=int, default=500, help="first N MNIST test images")
    parser.add_argument("--mnist-batch", type=int, default=100)
    parser.add_argument("--imagenet-batch", type=int, default=6)
    parser.add_argument("--imagenet-images", type=int, default=None, help="first N photos (default all 20)")
    parser.add_argument("--imagenet-cw", default="5x50",
                        help="binary-search steps x iterations of C&W on ImageNet (MNIST: the preset, 9x100)")
    parser.add_argument("--minimal-steps", default="1000,100",
                        help="MNIST,ImageNet iterations of every DDN/FMN/ALMA (C&W 9x100 spends at most 900)")
    parser.add_argument("--art-images", default="20,2",
                        help="MNIST,ImageNet images for ART's C&W and ImageNet DeepFool (10-20x slower)")
    parser.add_argument("--peers", default=",".join(PEER_NAMES))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 is the most stable on a shared machine)")
    parser.add_argument("--report", type=Path, default=Path("out/peers/peers.md"),
                        help="markdown report (rewritten after each row; records beside it as .json)")
    parser.add_argument("--json", action="store_true", help="print the per-library records as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    wanted = args.peers.split(",") if args.peers else []
    peers = {name: module for name, module in import_peers().items() if name in wanted}
    settings = args.settings.split(",")
    mnist = mnist_setting(args.mnist_images, args.mnist_batch) if "mnist" in settings else None
    imagenet = imagenet_setting(args.imagenet_batch, args.imagenet_images) if "imagenet" in settings else None
    searches, steps = (int(v) for v in args.imagenet_cw.split("x"))
    art_limits = tuple(int(v) for v in args.art_images.split(","))
    minimal_steps = tuple(int(v) for v in args.minimal_steps.split(","))
    rows = build_rows(args.rows.split(","), peers, mnist, imagenet, (searches, steps), minimal_steps,
                      art_limits)
    machine = (f"{cpu_model()} ({os.cpu_count()} CPUs, shared), {torch.get_num_threads()} torch thread(s), "
               f"torch {torch.__version__}")
    command = ("python benchmarks/peers.py " + " ".join(sys.argv[1:])).strip()
    args.report.parent.mkdir(parents=True, exist_ok=True)
    for done in range(1, len(rows) + 1):
        run_row(rows[done - 1])
        # rewritten after every row, so an interrupted run keeps what it measured
        report = markdown(rows[:done], machine, command)
        if done < len(rows):
            report += f"\n(partial: {done} of {len(rows)} rows)\n"
        args.report.write_text(report)
        args.report.with_suffix(".json").write_text(json.dumps(
            {"machine": machine, "command": command, "records": as_records(rows[:done]),
             "targets": target_lines(rows[:done])}, indent=2))
    if args.json:
        print(args.report.with_suffix(".json").read_text())
    else:
        print(report)
        print(f"report written to {args.report} (records: {args.report.with_suffix('.json')})")


if __name__ == "__main__":
    main()
