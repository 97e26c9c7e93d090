"""The Ray engine (issue 17): a run moves between engines with records equal to a local run's, a killed
driver resumes, a killed worker's batch is retried, a failing batch is reported, workers read shared data,
and (slow) a node that joins mid-run gets work.

Every Ray here runs in a network namespace whose only address is 127.0.0.1 (see ``ray_cluster``), with a
bounded time, and is killed with its namespace at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from ray_cluster import (
    RAY_CLI,
    SMOOTHADV,
    attack_batches,
    environment,
    json_output,
    loopback_process,
    needs_loopback_namespace,
    records_without_timing,
    run_in_loopback,
    worker_running_a_unit,
)
from smoothadv.core.errors import ConfigError
from smoothadv.evaluation import evaluate
from smoothadv.evaluation.ray_engine import RayEngine, pack_model, unpack_model

# Three attacks, one of them over an epsilon grid, one minimising (C&W: batches of a few seconds).
ARGS = ["evaluate", "--model", "c4", "--data", "mnist", "--attacks", "fgsm,pgd2,cw",
        "--epsilons", "fgsm=0.1,0.3", "--limit", "8", "--batch-size", "4", "--no-progress", "--json"]
RAY_ARGS = ["--engine", "ray", "--workers", "2"]
RECORDS = "records.jsonl"
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
starts_ray = needs_loopback_namespace()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> Path:
    """The reference: the same evaluation on the local engine, one torch thread like a Ray worker."""
    out = tmp_path_factory.mktemp("local") / "run"
    subprocess.run([*SMOOTHADV, *ARGS, "--out", str(out), "--threads", "1"], check=True, timeout=300,
                   env=environment(), capture_output=True)
    return out


@starts_ray
def test_a_run_moves_between_engines(local_run, tmp_path):
    """A quarter of the local run's batches, finished on Ray; then all but the last batch of that (Ray's
    batches among them), finished locally: the records are the local run's each time."""
    out, log = tmp_path / "moved", tmp_path / "log"
    shutil.copytree(local_run, out)
    markers = _keep_batches(out / RECORDS, 0.25)
    status = run_in_loopback([*SMOOTHADV, *ARGS, *RAY_ARGS, "--out", str(out)], log=log, timeout=300)
    assert status == 0, log.read_text()[-3000:]
    summary = json_output(log)
    engine = summary["engine"]
    assert engine["name"] == "ray" and engine["workers"] == 2 and not engine["failed"], engine
    assert len(engine["units_by_worker"]) == 2, engine  # both workers did some of the work
    assert summary["resumed_batches"] == len(markers) // 4 + 1
    assert summary["ran_batches"] == len(markers) - summary["resumed_batches"]
    assert same_records(out, local_run) and (out / "report.html").is_file()
    _keep_batches(out / RECORDS, 0.85)  # all but the last batch Ray wrote
    back = subprocess.run([*SMOOTHADV, *ARGS, "--out", str(out), "--threads", "1"], timeout=300,
                          env=environment(), capture_output=True, text=True)
    assert back.returncode == 0, back.stderr[-3000:]
    assert json.loads(back.stdout)["resumed_batches"] > summary["resumed_batches"]
    assert same_records(out, local_run)


@starts_ray
def test_a_killed_driver_resumes_and_a_killed_worker_loses_nothing(local_run, tmp_path):
    """The driver killed by SIGKILL after two attack batches; the same command again, during which a worker
    is killed by SIGKILL in the middle of a C&W batch: every record once, equal to the local run's."""
    out, log = tmp_path / "ray", tmp_path / "log"
    command = [*SMOOTHADV, *ARGS, *RAY_ARGS, "--out", str(out)]
    with loopback_process(command, log=log) as driver:
        deadline = time.monotonic() + 240
        while attack_batches(out / RECORDS) < 2 and driver.poll() is None:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.02)
        driver.send_signal(signal.SIGKILL)  # the driver only; its namespace (Ray) is killed on leaving
        driver.wait(timeout=30)
    partial = attack_batches(out / RECORDS)
    assert partial >= 2
    with loopback_process(command, log=log) as driver:
        deadline, victim = time.monotonic() + 240, None
        while victim is None and driver.poll() is None and time.monotonic() < deadline:
            if attack_batches(out / RECORDS) >= 6:  # into the C&W batches, which last seconds
                victim = worker_running_a_unit()
            time.sleep(0.02)
        assert victim is not None, f"no worker was seen running a batch:\n{log.read_text()[-3000:]}"
        os.kill(victim, signal.SIGKILL)
        assert driver.wait(timeout=240) == 0, log.read_text()[-3000:]
    summary = json_output(log)
    engine = summary["engine"]
    assert engine["workers_lost"] >= 1 and engine["retried"] >= 1 and not engine["failed"], engine
    assert summary["resumed_batches"] >= partial and summary["ran_batches"] > 0
    assert same_records(out, local_run)


@starts_ray
@pytest.mark.slow
def test_a_node_that_joins_mid_run_gets_work(local_run, tmp_path):
    """A head node with one CPU, then a second node (a second raylet on this machine) started once the run
    has finished some batches: the pool grows onto it."""
    out, log, port = tmp_path / "ray", tmp_path / "log", "6391"
    start = [*RAY_CLI, "start", "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats"]
    script = f"""
set -e
{_shell([*start, "--head", "--port", port, "--include-dashboard", "false"])} > {tmp_path}/head.log 2>&1
{_shell([*SMOOTHADV, *ARGS, "--engine", "ray", "--address", "127.0.0.1:" + port, "--out", str(out)])} \
    > {log} 2>&1 &
run=$!
while kill -0 $run 2>/dev/null && ! grep -q '"key": "attack|' {out}/records.jsonl 2>/dev/null; do
    sleep 0.1
done
RAY_AUTH_MODE=token {_shell([*start, "--address", "127.0.0.1:" + port])} > {tmp_path}/node.log 2>&1
wait $run
"""
    status = run_in_loopback(["bash", "-c", script], log=tmp_path / "script.log", timeout=400)
    assert status == 0, (tmp_path / "script.log").read_text()[-2000:] + log.read_text()[-3000:]
    engine = json_output(log)["engine"]
    assert engine["nodes"] == 2 and engine["workers"] == 2, engine
    assert same_records(out, local_run)


def _keep_batches(path: Path, fraction: float) -> list[int]:
    """Cut a records file after the marker of batch ``int(fraction * batches)`` (counted from 0); returns
    the marker lines it had."""
    lines = path.read_bytes().splitlines(keepends=True)
    markers = [i for i, line in enumerate(lines) if line.startswith(b'{"count"')]
    path.write_bytes(b"".join(lines[: markers[int(len(markers) * fraction)] + 1]))
    return markers


def same_records(run: Path, reference: Path) -> bool:
    return records_without_timing(run / RECORDS) == records_without_timing(reference / RECORDS)


def _shell(argv: list[str]) -> str:
    import shlex

    return " ".join(shlex.quote(a) for a in argv)


@starts_ray
def test_a_failing_batch_is_reported_and_the_others_finish(tmp_path):
    """From Python: a model that raises on one image fails that batch on every attempt; the rest is saved,
    and the failed batch is not marked finished (a re-run tries it again). Workers the cluster cannot
    place, or that fail to start, are refused with the reason."""
    script = tmp_path / "run.py"
    script.write_text(
        "import json, sys, torch\n"
        "from smoothadv.evaluation import evaluate\n"
        "from smoothadv.evaluation.ray_engine import RayEngine\n"
        "class Picky(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__(); self.linear = torch.nn.Linear(16, 3)\n"
        "    def forward(self, x):\n"
        "        if self.training is False and (x[:, 0, 0, 0] == 0.5).any() and x.requires_grad:\n"
        "            raise RuntimeError('image 5 breaks this model')\n"
        "        return self.linear(x.flatten(1))\n"
        "torch.manual_seed(0)\n"
        "model = Picky().eval()\n"
        "images = torch.rand(8, 1, 4, 4); images[5, 0, 0, 0] = 0.5\n"
        "labels = model(images).argmax(1)\n"
        "result = evaluate(model, (images, labels), 'fgsm', sys.argv[1], batch_size=2, progress=False,\n"
        "                  epsilons={'fgsm': [0.1]}, engine=RayEngine(workers=2, num_cpus=2))\n"
        "from smoothadv.core.errors import ConfigError\n"
        "for device in ('cuda', 'mps'):  # no GPU in the cluster; workers that cannot start\n"
        "    try:\n"
        "        evaluate(model, (images, labels), 'fgsm', sys.argv[1] + device, progress=False,\n"
        "                 engine=RayEngine(workers=1, num_cpus=2, device=device))\n"
        "    except ConfigError as error:\n"
        "        print(device, 'refused:', str(error).splitlines()[0])\n"
        "print(json.dumps(result.engine.to_dict()))\n"
    )
    log = tmp_path / "log"
    status = run_in_loopback([os.sys.executable, str(script), str(tmp_path / "out")], log=log, timeout=240)
    assert status == 0, log.read_text()[-3000:]
    lines = log.read_text().strip().splitlines()
    engine = json.loads(lines[-1])
    assert [f["attempts"] for f in engine["failed"]] == [2], engine
    assert "image 5 breaks this model" in engine["failed"][0]["error"]
    assert engine["failed"][0]["key"].startswith("attack|model|fgsm|0.1|000004+2")
    from smoothadv.evaluation import read_records

    attacked = sorted(r["image_id"] for r in read_records(tmp_path / "out") if r["kind"] == "attack")
    assert attacked == ["000000", "000001", "000002", "000003", "000006", "000007"]
    refusals = [line for line in lines if " refused: " in line]
    assert refusals[0].startswith("cuda refused: the Ray cluster has no GPU"), refusals
    assert refusals[1].startswith("mps refused: Ray workers fail to start (3 in a row)"), refusals
    assert "MPS is not available" in log.read_text()


def test_models_travel_to_any_device():
    pytest.importorskip("ray")
    from smoothadv.models.user import with_normalization

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.LazyLinear(3))
    model(torch.rand(1, 1, 6, 6))
    scripted = torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 3)))
    x = torch.rand(2, 1, 6, 6)
    # a TorchScript file given with --mean/--std is a scripted module inside a plain one
    for net in (model.eval(), scripted.eval(), with_normalization(scripted, 0.5, 0.25).eval()):
        copy = unpack_model(pack_model(net), torch.device("cpu"))
        assert copy is not net and torch.equal(copy(x), net(x))


def test_bad_options_are_refused_before_ray_starts(tmp_path, capsys):
    pytest.importorskip("ray")
    images = torch.rand(4, 1, 4, 4)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()
    with pytest.raises(ConfigError, match="image folder"):
        evaluate(model, (images, torch.zeros(4)), "fgsm", tmp_path / "o", engine=RayEngine(shared_data=True),
                 progress=False)
    with pytest.raises(ConfigError, match="unknown engine"):
        evaluate(model, (images, torch.zeros(4)), "fgsm", tmp_path / "o", engine="spark", progress=False)
    with pytest.raises(ConfigError):
        RayEngine(workers=0)
    from smoothadv.cli import main

    assert main(["evaluate", "--model", "c4", "--data", "mnist", "--attacks", "fgsm", "--out",
                 str(tmp_path), "--workers", "2"]) == 2
    assert "--workers go(es) with --engine ray" in capsys.readouterr().err


@starts_ray
def test_shared_data_folder_is_read_by_the_workers(tmp_path):
    """--shared-data: the workers read an image folder themselves (by absolute path), with the records a
    run that sends the images gets."""
    folder = Path(__file__).resolve().parents[1] / "examples" / "digits"
    common = ["evaluate", "--model", "c4", "--data", str(folder), "--attacks", "fgsm,pgd2", "--no-progress",
              "--json", "--engine", "ray", "--workers", "1"]
    log = tmp_path / "log"
    status = run_in_loopback([*SMOOTHADV, *common, "--shared-data", "--out", str(tmp_path / "shared")],
                             log=log, timeout=300)
    assert status == 0, log.read_text()[-3000:]
    sent = subprocess.run([*SMOOTHADV, *common[:-4], "--threads", "1", "--out", str(tmp_path / "sent")],
                          timeout=300, env=environment(), capture_output=True, text=True)
    assert sent.returncode == 0, sent.stderr[-3000:]
    shared = records_without_timing(tmp_path / "shared" / RECORDS)
    assert shared == records_without_timing(tmp_path / "sent" / RECORDS) and len(shared) > 6


def test_a_model_from_the_users_own_package_travels_by_value(tmp_path, monkeypatch):
    """Workers on other nodes may lack the user's package: its classes are pickled by value."""
    pytest.importorskip("ray")
    import sys

    package = tmp_path / "mynets"
    package.mkdir()
    (package / "__init__.py").write_text(
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = torch.nn.Linear(4, 2)\n"
        "    def forward(self, x):\n"
        "        return self.fc(x.flatten(1))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import mynets

    net, x = mynets.Net().eval(), torch.rand(3, 1, 2, 2)
    packed = pack_model(net)
    monkeypatch.delitem(sys.modules, "mynets")
    sys.path.remove(str(tmp_path))  # as on a node without the package
    with pytest.raises(ImportError):
        import mynets  # noqa: F401, F811
    assert torch.equal(unpack_model(packed, torch.device("cpu"))(x), net(x))
