"""Reports: tables in three formats, the OC plot, the worst-case panel, and a self-contained HTML file."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from attack_fixtures import blocky_images, tiny_classifier
from smoothadv.evaluation import evaluate
from smoothadv.report import plot_operating_characteristics, table_markdown, table_text, write_report
from smoothadv.report.html import Section, render_html
from smoothadv.report.plots import distortion_axis_limit

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = tiny_classifier()
        images = blocky_images(batch=8)
        with torch.no_grad():
            labels = model(images).argmax(dim=1)
        labels[0] = (labels[0] + 1) % 5
        out = tmp_path_factory.mktemp("report")
        result = evaluate(
            model,
            (images, labels),
            "fgsm,pgd2,cw",
            out,
            batch_size=4,
            progress=False,
            model_name="tiny",
            epsilons={"fgsm": [0.1, 0.3], "pgd2": [0.5, 1.5]},
            attack_options={"cw": {"binary_search_steps": 2, "steps": 10}},
        )
        files = write_report(result, notes=["a note <with> markup & symbols"])
    finally:
        torch.set_num_threads(threads)
    return result, files


class _Checker(HTMLParser):
    """Collects tags and checks that every non-void element is closed in order."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.images, self.errors, self.text = [], [], [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def test_files_are_written(report):
    _, files = report
    for key in ("report", "plot", "panel", "csv", "json", "markdown"):
        assert Path(files[key]).is_file(), key
    assert Path(files["plot"]).read_bytes().startswith(PNG_SIGNATURE)
    assert Path(files["panel"]).read_bytes().startswith(PNG_SIGNATURE)


def test_html_is_well_formed_and_self_contained(report):
    result, files = report
    text = Path(files["report"]).read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    checker = _Checker()
    checker.feed(text)
    checker.close()
    assert checker.errors == [] and checker.stack == []
    # No external resources: every image is a data URI; no src/href pointing to files or the network.
    assert checker.images and all(img["src"].startswith("data:image/png;base64,") for img in checker.images)
    assert not re.search(r'(src|href)="(?!data:)', text)
    embedded = [base64.b64decode(img["src"].split(",", 1)[1]) for img in checker.images]
    assert Path(files["plot"]).read_bytes() in embedded
    assert Path(files["panel"]).read_bytes() in embedded
    body = "".join(checker.text)
    assert "a note <with> markup & symbols" in body  # escaped in the file, intact once parsed
    assert "<with>" not in text
    for row in result.table:
        assert f"{row.p_success:.3f}" in body


def test_tables_agree(report):
    result, files = report
    rows = list(csv.DictReader(io.StringIO(Path(files["csv"]).read_text())))
    data = json.loads(Path(files["json"]).read_text())
    assert [r["attack"] for r in rows] == [d["attack"] for d in data] == [r.attack for r in result.table]
    for row, item, stats in zip(rows, data, result.table, strict=True):
        assert float(row["p_success"]) == pytest.approx(stats.p_success)
        assert item["mean_l2"] == pytest.approx(stats.mean_l2)
    markdown = table_markdown(result.table).splitlines()
    assert len(markdown) == 2 + len(result.table)
    assert markdown[0].startswith("| attack |") and "P_suc" in markdown[0]
    assert len(table_text(result.table).splitlines()) == 1 + len(result.table)


def test_plot_of_hand_made_records(tmp_path):
    records = [{"kind": "clean", "model": "m", "image_id": i, "correct": True} for i in "abc"]
    records += [
        {
            "kind": "attack",
            "model": "m",
            "attack": "cw",
            "image_id": i,
            "success": s,
            "l2": d,
            "linf": 0.1,
            "epsilon": None,
            "batch": None,
            "mad": None,
        }
        for i, s, d in (("a", True, 1.0), ("b", True, 2.0), ("c", False, 5.0))
    ]
    data = plot_operating_characteristics(records, tmp_path / "oc.png", title="t")
    assert data.startswith(PNG_SIGNATURE) and (tmp_path / "oc.png").read_bytes() == data


def test_distortion_axis_is_cut_only_for_outliers():
    assert distortion_axis_limit([0.5, 1.0, 2.0]) == (2.0, False)
    right, cut = distortion_axis_limit([0.01 * i for i in range(1, 101)] + [34.0])
    assert cut and right == pytest.approx(1.15 * 0.99)
    assert distortion_axis_limit([]) == (1e-9, False)


def test_render_html_escapes_everything():
    page = render_html(
        "a <b>", [Section("h & h", paragraphs=["<script>x</script>"], tables=[(["k", "v"], [["<i>", "1"]])])]
    )
    assert "<script>" not in page and "&lt;script&gt;" in page and "<title>a &lt;b&gt;</title>" in page


@pytest.mark.slow
def test_report_renders_in_headless_chromium(report, tmp_path):
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    _, files = report
    shot = tmp_path / "shot.png"
    command = [
        CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1200,2400",
        f"--screenshot={shot}",
        Path(files["report"]).resolve().as_uri(),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    data = shot.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("L")
    assert image.size == (1200, 2400)
    # A rendered report is not a blank page: text, tables and plots put many dark pixels on it.
    histogram = image.histogram()
    assert sum(histogram[:128]) > 0.005 * image.size[0] * image.size[1]
