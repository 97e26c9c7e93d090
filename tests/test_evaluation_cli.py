"""``smoothadv evaluate`` and ``smoothadv reproduce``: argument handling, JSON output, paper tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from smoothadv.cli import main
from smoothadv.cli.cmd_evaluate import parse_epsilons
from smoothadv.core.errors import ConfigError, ModelError
from smoothadv.experiments.paper import PAPER_ATTACKS, PAPER_TABLES, plan
from smoothadv.experiments.reproduce import reproduce


def test_parse_epsilons():
    assert parse_epsilons(["pgd2=1,2.5", "FGSM=0.1"]) == {"pgd2": [1.0, 2.5], "fgsm": [0.1]}
    assert parse_epsilons([]) is None
    for bad in (["pgd2"], ["pgd2=a,b"], ["pgd2="]):
        with pytest.raises(ConfigError):
            parse_epsilons(bad)


def test_bad_epsilons_exit_with_status_2(capsys, tmp_path):
    code = main(
        [
            "evaluate",
            "--model",
            "c4",
            "--data",
            "mnist",
            "--attacks",
            "fgsm",
            "--out",
            str(tmp_path),
            "--epsilons",
            "fgsm",
        ]
    )
    assert code == 2
    assert "smoothadv evaluate: error:" in capsys.readouterr().err


def test_paper_tables_are_complete():
    for table, datasets in PAPER_TABLES.items():
        for columns in datasets.values():
            for values in columns.values():
                assert tuple(values) == PAPER_ATTACKS, table
                assert all(0.0 <= p <= 1.0 and d > 0 for p, d in values.values())
    # Spot checks against the paper's text.
    assert PAPER_TABLES["table1"]["mnist"]["C4"]["scw"] == (1.00, 1.97)
    assert PAPER_TABLES["table2"]["imagenet"]["InceptionV3 (adv. trained)"]["ifgsm"] == (0.97, 29.94)
    assert PAPER_TABLES["table3"]["imagenet"]["Bilateral filter"]["scw"] == (0.68, 2.91)


def test_plans():
    assert plan("table1", "imagenet").runs == {"efficientnet-lite0": [], "efficientnet-lite2": []}
    transfer = plan("table3", "mnist")
    assert transfer.fixed_epsilon and transfer.runs == {"c4": ["c4+bilateral", "c4-adv"]}
    assert plan("table2", "imagenet").runs == {}
    with pytest.raises(ConfigError):
        plan("table4", "mnist")
    with pytest.raises(ConfigError):
        plan("table1", "cifar")


def test_table2_imagenet_says_nothing_is_available(tmp_path):
    summary = reproduce("table2", dataset="imagenet", out_dir=tmp_path, progress=False)
    assert all(row["p_success"] is None and row["note"] for row in summary["rows"])
    assert "No adversarially trained ImageNet network" in summary["text"]
    assert "0.97" in summary["text"] and "29.94" in summary["text"]  # the paper's values are shown
    assert (tmp_path / "report.html").is_file()


def test_reproduce_cli_json(capsys, tmp_path):
    code = main(["reproduce", "table2", "--dataset", "imagenet", "--out", str(tmp_path), "--json"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["table"] == "table2" and len(payload["rows"]) == len(PAPER_ATTACKS)
    code = main(["reproduce", "table2", "--dataset", "imagenet", "--out", str(tmp_path / "more"),
                 "--attacks", "ddn,apgd2", "--smoothing", "dct", "--json"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    extra = [row for row in payload["rows"] if row["attack"] not in PAPER_ATTACKS]
    assert [row["attack"] for row in extra] == ["ddn+dct", "apgd2+dct"]
    assert all(row["paper_p_success"] is None for row in extra)
    assert any("beside the paper's attacks: ddn+dct, apgd2+dct" in note for note in payload["notes"])


def test_evaluate_cli_on_c4(capsys, tmp_path):
    from smoothadv.models import load_model

    try:
        load_model("c4")
    except ModelError as error:
        pytest.skip(f"C4 weights unavailable: {error}")
    argv = [
        "evaluate",
        "--model",
        "c4",
        "--data",
        "mnist",
        "--attacks",
        "fgsm,pgd2",
        "--limit",
        "4",
        "--epsilons",
        "fgsm=0.3",
        "--epsilons",
        "pgd2=1,2",
        "--out",
        str(tmp_path),
        "--no-progress",
        "--json",
    ]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(argv) == 0
        payload = json.loads(capsys.readouterr().out)
        assert [row["attack"] for row in payload["table"]] == ["fgsm", "pgd2"]
        assert payload["table"][1]["epsilons"] == [1.0, 2.0]
        assert payload["config"]["preset"] == "mnist"  # picked from the model
        assert (tmp_path / "report.html").is_file() and payload["files"]["report"].endswith("report.html")
        assert main(argv) == 0  # the same command again resumes: nothing left to run
        assert json.loads(capsys.readouterr().out)["ran_batches"] == 0
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_quick_demo_writes_a_report(tmp_path):
    from smoothadv.experiments import run_quick_demo

    summary = run_quick_demo(tmp_path, images=8, progress=False)
    assert [row["attack"] for row in summary["table"]] == list(PAPER_ATTACKS)
    assert summary["report"].endswith("report.html")
    text = Path(summary["report"]).read_text(encoding="utf-8")
    assert "data:image/png;base64," in text and "binary-search steps" in text
    assert all(row["n_total"] == 8 for row in summary["table"])


def test_evaluate_smoothing_runs_the_smooth_forms(capsys, tmp_path):
    """--smoothing dct evaluates the DCT forms of the named attacks, their epsilon grids included."""
    argv = ["evaluate", "--model", "c4", "--data", "mnist", "--attacks", "apgd2,pgd2", "--smoothing", "dct",
            "--limit", "3", "--epsilons", "apgd2=2,4", "--out", str(tmp_path), "--no-progress", "--json"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    payload = json.loads(capsys.readouterr().out)
    assert [row["attack"] for row in payload["table"]] == ["apgd2+dct", "pgd2+dct"]
    assert payload["table"][0]["epsilons"] == [2.0, 4.0]
    assert payload["config"]["attack_parameters"]["apgd2+dct"][0]["smoothing"]["operator"] == "dct"
