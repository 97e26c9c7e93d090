"""The paper's Tables 1-3 as data (Zhang et al. 2020), and what re-running each of them needs.

Our stand-ins:

* MNIST: C4 trained by us (``c4``) and its FGSM adversarially trained twin (``c4-adv``), MNIST test set.
* ImageNet: EfficientNet-Lite0 and Lite2 on the 20 ImageNet photos foolbox ships, in place of InceptionV3
  and ResNetV2-50 on the 1000 NIPS 2017 images (neither is available offline). No adversarially trained
  ImageNet network is available offline either, so Table 2 (ImageNet) and the "adv. training" column of
  Table 3 (ImageNet) cannot be re-run; we say so in the output.
* Table 3 (transferability) attacks the plain network once per attack at the preset's epsilon (no grid)
  and classifies the adversarial images with the bilateral-filter variant ``<model>+bilateral`` and with
  the adversarially trained one. The paper ran it on ImageNet only; on MNIST we attack ``c4`` and
  transfer to ``c4+bilateral`` and ``c4-adv``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from smoothadv.core.errors import ConfigError

PAPER_ATTACKS = ("fgsm", "ifgsm", "pgd2", "cw", "qpgd2", "scw")


def _column(*pairs: tuple[float, float]) -> dict[str, tuple[float, float]]:
    return dict(zip(PAPER_ATTACKS, pairs, strict=True))


#: (P_suc, D_bar) per attack, as printed in the paper. Keys: table -> dataset -> column.
PAPER_TABLES: dict[str, dict[str, dict[str, dict[str, tuple[float, float]]]]] = {
    "table1": {
        "mnist": {
            "C4": _column((0.89, 5.02), (1.00, 2.69), (1.00, 1.71), (1.00, 2.49), (0.97, 3.36), (1.00, 1.97))
        },
        "imagenet": {
            "InceptionV3": _column(
                (0.97, 5.92), (1.00, 5.54), (1.00, 1.80), (0.99, 4.91), (0.96, 2.10), (0.99, 3.00)
            ),
            "ResNetV2-50": _column(
                (0.92, 8.20), (0.99, 7.58), (1.00, 3.63), (0.99, 9.84), (0.93, 4.80), (0.98, 5.99)
            ),
        },
    },
    "table2": {
        "mnist": {
            "C4 (adv. trained)": _column(
                (0.15, 4.53), (1.00, 3.48), (1.00, 2.52), (0.93, 3.03), (0.99, 2.94), (0.99, 2.39)
            )
        },
        "imagenet": {
            "InceptionV3 (adv. trained)": _column(
                (0.06, 6.40), (0.97, 29.94), (1.00, 3.89), (0.95, 6.43), (0.69, 7.86), (0.75, 6.22)
            )
        },
    },
    "table3": {
        "imagenet": {
            "Bilateral filter": _column(
                (0.77, 5.13), (0.82, 5.12), (1.00, 5.14), (0.82, 4.75), (0.95, 5.13), (0.68, 2.91)
            ),
            "Adv. training": _column(
                (0.04, 10.20), (0.02, 10.10), (0.12, 10.26), (0.02, 10.21), (0.01, 10.17), (0.01, 4.63)
            ),
        },
    },
}
#: Paper accuracies (section 5.2 and 5.4).
PAPER_ACCURACY = {
    "C4": 0.99,
    "C4 (adv. trained)": 0.99,
    "InceptionV3": 0.96,
    "ResNetV2-50": 0.93,
    "InceptionV3 (adv. trained)": 0.94,
}

FIGURES = {
    ("table1", "mnist"): "fig5_mnist.png",
    ("table1", "imagenet"): "fig6_imagenet.png",
    ("table2", "mnist"): "oc_table2_mnist.png",
    ("table3", "mnist"): "fig7_transfer_mnist.png",
    ("table3", "imagenet"): "fig7_transfer_imagenet.png",
}
QUICK = {
    "mnist": {"limit": 100, "cw": {"binary_search_steps": 5, "steps": 50}},
    "imagenet": {"limit": 2, "cw": {"binary_search_steps": 3, "steps": 30}},
}


@dataclass
class Column:
    """One column of a reproduced table: the paper's network and data vs. ours."""

    paper: str
    model: str | None  # our model measured (None: not available)
    source: str | None = None  # the attacked model when it differs (transfer)
    unavailable: str | None = None


@dataclass
class Plan:
    """What a table needs: runs (attacked model -> transfer targets) and the columns to compare."""

    runs: dict[str, list[str]]
    columns: list[Column]
    notes: list[str] = field(default_factory=list)
    fixed_epsilon: bool = False


def plan(table: str, dataset: str) -> Plan:
    """The runs and columns of ``table`` on ``dataset``.

    Raises:
        ConfigError: unknown table or dataset.
    """
    if table not in PAPER_TABLES:
        raise ConfigError(f"unknown table {table!r}; choose table1, table2 or table3.")
    if dataset not in ("mnist", "imagenet"):
        raise ConfigError(f"unknown dataset {dataset!r}; choose mnist or imagenet.")
    stand_in = (
        "EfficientNet-Lite0/Lite2 on the 20 foolbox ImageNet photos stand in for the paper's "
        "InceptionV3/ResNetV2-50 on 1000 NIPS 2017 images (not available offline)."
    )
    no_adv = (
        "No adversarially trained ImageNet network is available offline, so this part of the paper "
        "cannot be re-run; only the paper's values are shown."
    )
    if table == "table1" and dataset == "mnist":
        return Plan({"c4": []}, [Column("C4", "c4")])
    if table == "table1":
        return Plan(
            {"efficientnet-lite0": [], "efficientnet-lite2": []},
            [Column("InceptionV3", "efficientnet-lite0"), Column("ResNetV2-50", "efficientnet-lite2")],
            [stand_in],
        )
    if table == "table2" and dataset == "mnist":
        return Plan({"c4-adv": []}, [Column("C4 (adv. trained)", "c4-adv")])
    if table == "table2":
        return Plan({}, [Column("InceptionV3 (adv. trained)", None, unavailable=no_adv)], [no_adv])
    transfer = (
        "Transferability: the plain network is attacked once per attack at the preset's epsilon "
        "(no epsilon grid); the adversarial images are then classified by the defended networks."
    )
    if dataset == "mnist":
        return Plan(
            {"c4": ["c4+bilateral", "c4-adv"]},
            [Column("Bilateral filter", "c4+bilateral", "c4"), Column("Adv. training", "c4-adv", "c4")],
            [
                transfer,
                "The paper reports Table 3 on ImageNet (InceptionV3) only; its values are "
                "shown for reference next to our MNIST run.",
            ],
            fixed_epsilon=True,
        )
    return Plan(
        {"efficientnet-lite0": ["efficientnet-lite0+bilateral"]},
        [
            Column("Bilateral filter", "efficientnet-lite0+bilateral", "efficientnet-lite0"),
            Column("Adv. training", None, unavailable=no_adv),
        ],
        [transfer, stand_in, no_adv],
        fixed_epsilon=True,
    )
