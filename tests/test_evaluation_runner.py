"""The evaluation runner on a tiny model: records, epsilon grids, transfer, resuming after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from attack_fixtures import blocky_images, tiny_classifier
from smoothadv.core.errors import ConfigError
from smoothadv.evaluation import RecordStore, evaluate, read_records
from smoothadv.evaluation.records import batch_key

TESTS = Path(__file__).resolve().parent
FAST_CW = {"binary_search_steps": 2, "steps": 10}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models run far faster on one thread, above all on a shared, loaded machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_data(n=10):
    model = tiny_classifier()
    images = blocky_images(batch=n)
    with torch.no_grad():
        labels = model(images).argmax(dim=1)
    labels[:2] = (labels[:2] + 1) % 5  # two misclassified images
    return model, images, labels


def comparable(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def evaluate_tiny(model, images, labels, out):
    """The evaluation every test of the shared run uses (three attacks, small grids, fast C&W)."""
    return evaluate(
        model,
        (images, labels),
        "fgsm,pgd2,cw",
        out,
        batch_size=4,
        progress=False,
        epsilons={"fgsm": [0.05, 0.2], "pgd2": [0.5, 2.0]},
        attack_options={"cw": FAST_CW},
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    model, images, labels = tiny_data()
    out = tmp_path_factory.mktemp("eval")
    return evaluate_tiny(model, images, labels, out), model, images, labels, out


def test_records_cover_correct_images_only(run):
    result, _, _, labels, out = run
    clean = [r for r in result.records if r["kind"] == "clean"]
    assert len(clean) == 10 and sum(r["correct"] for r in clean) == 8
    attacked = {r["image_id"] for r in result.records if r["kind"] == "attack"}
    assert attacked == {r["image_id"] for r in clean if r["correct"]}
    per_attack = {}
    for r in result.records:
        if r["kind"] == "attack":
            per_attack.setdefault((r["attack"], r["epsilon"]), []).append(r)
    assert sorted(per_attack, key=str) == sorted(
        [("fgsm", 0.05), ("fgsm", 0.2), ("pgd2", 0.5), ("pgd2", 2.0), ("cw", None)], key=str
    )
    assert all(len(v) == 8 for v in per_attack.values())
    for r in per_attack[("fgsm", 0.05)]:
        assert r["linf"] <= 0.05 + 1e-6 and r["parameters"]["epsilon"] == 0.05
    for r in per_attack[("pgd2", 0.5)]:
        assert r["l2"] <= 0.5 + 1e-5
    assert comparable(read_records(out)) == comparable(result.records)


def test_table_derives_from_records(run):
    result = run[0]
    rows = {row.attack: row for row in result.table}
    assert list(rows) == ["fgsm", "pgd2", "cw"]
    for row in rows.values():
        assert (row.n_total, row.n_correct, row.n) == (10, 8, 8)
    pgd = [r for r in result.records if r["kind"] == "attack" and r["attack"] == "pgd2"]
    best = {}
    for r in pgd:
        if r["success"]:
            best[r["image_id"]] = min(best.get(r["image_id"], float("inf")), r["l2"])
    assert rows["pgd2"].n_success == len(best)
    if best:
        assert rows["pgd2"].mean_l2 == pytest.approx(sum(best.values()) / len(best))


def test_rerun_resumes_without_duplicates(run):
    result, model, images, labels, out = run
    again = evaluate_tiny(model, images, labels, out)
    assert again.ran_batches == 0 and again.resumed_batches == result.resumed_batches + result.ran_batches
    assert comparable(again.records) == comparable(result.records)


def test_different_configuration_is_refused(run, tmp_path):
    _, model, images, labels, out = run
    with pytest.raises(ConfigError, match="--restart"):
        evaluate(model, (images, labels), "fgsm", out, batch_size=4, progress=False)
    fresh = evaluate(
        model, (images, labels), "fgsm", tmp_path, batch_size=4, progress=False, epsilons={"fgsm": [0.1]}
    )
    with pytest.raises(ConfigError, match="epsilons"):
        evaluate(
            model, (images, labels), "fgsm", tmp_path, batch_size=4, progress=False, epsilons={"fgsm": [0.2]}
        )
    restarted = evaluate(
        model,
        (images, labels),
        "fgsm",
        tmp_path,
        batch_size=4,
        progress=False,
        epsilons={"fgsm": [0.2]},
        restart=True,
    )
    assert restarted.resumed_batches == 0 and restarted.ran_batches == fresh.ran_batches
    assert {r["epsilon"] for r in restarted.records if r["kind"] == "attack"} == {0.2}


def test_torn_tail_is_trimmed_and_redone(tmp_path):
    model, images, labels = tiny_data(6)
    kwargs = dict(batch_size=2, progress=False, epsilons={"fgsm": [0.1, 0.3]})
    reference = evaluate(model, (images, labels), "fgsm", tmp_path / "ref", **kwargs)
    path = tmp_path / "ref" / "records.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    # Keep up to the third batch marker, then an unfinished batch: one record and half a line.
    markers = [i for i, line in enumerate(lines) if b'"kind": "batch"' in line]
    torn = tmp_path / "torn"
    torn.mkdir()
    (torn / "config.json").write_bytes((tmp_path / "ref" / "config.json").read_bytes())
    (torn / "records.jsonl").write_bytes(b"".join(lines[: markers[2] + 2]) + lines[markers[2] + 2][:25])
    store = RecordStore(torn / "records.jsonl")
    assert store.trimmed_bytes > 0 and len(store.finished) == 3
    resumed = evaluate(model, (images, labels), "fgsm", torn, **kwargs)
    assert resumed.resumed_batches == 3 and resumed.trimmed_bytes == 0
    assert comparable(resumed.records) == comparable(reference.records)


def test_record_store_refuses_duplicate_batches(tmp_path):
    store = RecordStore(tmp_path / "r.jsonl")
    key = batch_key("attack", "m", "fgsm", 0.1, ["a", "b"])
    store.append_batch(key, [{"kind": "clean", "image_id": "a"}])
    with pytest.raises(ConfigError):
        store.append_batch(key, [])
    assert RecordStore(tmp_path / "r.jsonl").finished == {key}


def test_transfer_targets_get_their_own_records(tmp_path):
    model, images, labels = tiny_data(6)
    other = tiny_classifier(seed=1)
    result = evaluate(
        model,
        (images, labels),
        "fgsm",
        tmp_path,
        batch_size=3,
        progress=False,
        epsilons={"fgsm": [0.3]},
        transfer_to={"other": other},
    )
    models = {(r["kind"], r["model"]) for r in result.records}
    assert models == {("clean", "model"), ("clean", "other"), ("attack", "model"), ("attack", "other")}
    adv = [r for r in result.records if r["kind"] == "attack"]
    # Both models see the same adversarial images: identical distortions, success judged per model.
    by_model = {m: {r["image_id"]: r["l2"] for r in adv if r["model"] == m} for m in ("model", "other")}
    assert by_model["model"] == by_model["other"]
    assert {row.model for row in result.table} == {"model", "other"}


def test_bad_arguments(tmp_path):
    model, images, labels = tiny_data(4)
    with pytest.raises(ConfigError, match="unknown attack"):
        evaluate(model, (images, labels), "fgsm,nope", tmp_path, progress=False)
    with pytest.raises(ConfigError, match="epsilon"):
        evaluate(model, (images, labels), "cw", tmp_path, progress=False, epsilons={"cw": [1.0]})
    with pytest.raises(ConfigError, match="limit"):
        evaluate(model, (images, labels), "fgsm", tmp_path, progress=False, limit=0)


SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    # a test suite started as a background job ignores SIGINT, and its children inherit that: take Ctrl-C
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.path.insert(0, {tests!r})
    import torch
    torch.set_num_threads(1)
    from attack_fixtures import blocky_images, tiny_classifier
    from smoothadv.evaluation import evaluate

    class Slow(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = tiny_classifier()
        def forward(self, x):
            time.sleep(float(os.environ.get("SLOW", "0")))
            return self.net(x)

    model = Slow().eval()
    images = blocky_images(batch=8)
    with torch.no_grad():
        labels = model.net(images).argmax(dim=1)
    evaluate(model, (images, labels), "fgsm,pgd2", sys.argv[1], batch_size=2, progress=False,
             epsilons={{"fgsm": [0.1, 0.3], "pgd2": [0.5, 1.0]}})
""")


def _attack_batches_on_disk(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(
        1 for line in path.read_bytes().splitlines() if b'"kind": "batch"' in line and b"attack|" in line
    )


def test_kill_and_resume_equals_uninterrupted_run(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=str(TESTS)))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    subprocess.run(
        [sys.executable, str(script), str(reference)], check=True, env={**env, "SLOW": "0"}, timeout=120
    )
    process = subprocess.Popen([sys.executable, str(script), str(killed)], env={**env, "SLOW": "0.05"})
    try:
        deadline = time.monotonic() + 60
        while _attack_batches_on_disk(killed / "records.jsonl") < 1:
            assert process.poll() is None, "the run finished before it could be killed"
            assert time.monotonic() < deadline, "no batch reached the disk in 60 s"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    partial = _attack_batches_on_disk(killed / "records.jsonl")
    total = _attack_batches_on_disk(reference / "records.jsonl")
    assert 1 <= partial < total
    subprocess.run(
        [sys.executable, str(script), str(killed)], check=True, env={**env, "SLOW": "0"}, timeout=120
    )
    assert comparable(read_records(killed)) == comparable(read_records(reference))
    keys = [
        json.loads(line)["key"]
        for line in (killed / "records.jsonl").read_text().splitlines()
        if '"kind": "batch"' in line
    ]
    assert len(keys) == len(set(keys))


def test_perceptual_scores_successes_after_upsampling(tmp_path):
    model, images, labels = tiny_data(4)
    result = evaluate(
        model,
        (images, labels),
        "pgd2",
        tmp_path,
        batch_size=4,
        progress=False,
        perceptual=True,
        epsilons={"pgd2": [0.05, 2.0]},
    )
    assert result.config["perceptual"]["upsample_to"] == 48  # 12x12 is below MAD's 34-pixel minimum
    attacked = [r for r in result.records if r["kind"] == "attack"]
    assert any(r["success"] for r in attacked)
    for r in attacked:
        assert (r["mad"] is not None) == r["success"]
        if r["success"]:
            assert r["mad"] > 0
    row = result.table[0]
    assert row.mean_mad is not None and row.mean_mad > 0


def test_a_second_run_on_the_same_folder_is_refused(tmp_path):
    from smoothadv.evaluation.records import FolderLock

    model, images, labels = tiny_data(4)
    with FolderLock(tmp_path), pytest.raises(ConfigError, match="another evaluation"):
        evaluate(model, (images, labels), "fgsm", tmp_path, progress=False)
    # Released: the run goes ahead now.
    assert evaluate(
        model, (images, labels), "fgsm", tmp_path, progress=False, epsilons={"fgsm": [0.3]}
    ).records


def test_ctrl_c_keeps_finished_batches_and_resumes(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=str(TESTS)))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    out = tmp_path / "out"
    # A new session: SIGINT is delivered like a Ctrl-C, not ignored as in a background job.
    process = subprocess.Popen(
        [sys.executable, str(script), str(out)],
        env={**env, "SLOW": "0.3"},  # the rest of the run takes about 30 s: ample margin for the signal
        start_new_session=True,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while _attack_batches_on_disk(out / "records.jsonl") < 1:
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0 and "KeyboardInterrupt" in stderr
    partial = _attack_batches_on_disk(out / "records.jsonl")
    subprocess.run([sys.executable, str(script), str(out)], check=True, env={**env, "SLOW": "0"}, timeout=120)
    keys = [
        json.loads(line)["key"]
        for line in (out / "records.jsonl").read_text().splitlines()
        if '"kind": "batch"' in line
    ]
    assert len(keys) == len(set(keys)) and _attack_batches_on_disk(out / "records.jsonl") > partial
