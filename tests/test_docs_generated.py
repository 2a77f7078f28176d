"""The generated pages: docs/_ext/generate.py against the pages and the committed data.

(a) ``write_all`` writes every snippet and figure that a page includes, the
    same bytes each time; (b) README.md's headline block is what
    ``python docs/_ext/generate.py --readme`` writes; (c) the numbers that
    the experiment and performance pages state in prose (settings, sizes,
    thresholds) agree with the data and the code.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

pytest.importorskip("matplotlib")


def _load_generate():
    # The per-experiment generators beside it (gen_*.py) import it as ``generate``,
    # as the Sphinx build does with docs/_ext on the path.
    if str(DOCS / "_ext") not in sys.path:
        sys.path.insert(0, str(DOCS / "_ext"))
    spec = importlib.util.spec_from_file_location("fastbn_docs_generate",
                                                  DOCS / "_ext" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


generate = _load_generate()

#: The committed data that generate.py reads.
DATA = ["bench-cpu.json", "measurements.json",
        *(f"experiments/{name}.csv" for name in generate.EXPERIMENTS + generate.TIMINGS),
        *(f"experiments/mnist1d/{name}.csv" for name in generate.MNIST1D_RERUNS)]


def _pages() -> list[Path]:
    skip = {"_build", "_generated", "generated"}
    return [p for p in DOCS.rglob("*.md") if not skip & set(p.relative_to(DOCS).parts)]


_INCLUDE = re.compile(r"```\{(?:include|figure|image)\}\s+(\S+)")
_IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


def _generated_refs() -> dict[Path, list[str]]:
    """Every path into _generated that a page includes or shows, by page."""
    refs = {}
    for page in _pages():
        text = page.read_text()
        found = [p for p in _INCLUDE.findall(text) + _IMAGE.findall(text) if "_generated/" in p]
        if found:
            refs[page] = found
    return refs


def _copy_data(dest: Path) -> Path:
    for rel in DATA:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DOCS / rel, dest / rel)
    return dest


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    src = _copy_data(tmp_path_factory.mktemp("docs"))
    start = time.perf_counter()
    generate.write_all(src)
    assert time.perf_counter() - start < 30
    return src


# --- (a) every include exists after write_all ---------------------------------------------


def test_pages_include_generated_files():
    refs = _generated_refs()
    assert DOCS / "performance.md" in refs
    for name in ("index", *generate.EXPERIMENTS):
        assert DOCS / "experiments" / f"{name}.md" in refs


def test_write_all_writes_every_include(generated):
    for page, paths in _generated_refs().items():
        for path in paths:
            target = generated / (page.parent.relative_to(DOCS) / path)
            assert target.resolve().is_file(), f"{page.relative_to(ROOT)} includes {path}"


def test_every_generated_file_is_used(generated):
    used = {(page.parent / p).resolve().name for page, paths in _generated_refs().items()
            for p in paths}
    made = {p.name for p in (generated / "_generated").iterdir()}
    assert made - used == set(), "generated but included by no page"


def test_write_all_is_deterministic(generated, tmp_path):
    again = _copy_data(tmp_path)
    generate.write_all(again)
    first = {p.name: p.read_bytes() for p in (generated / "_generated").iterdir()}
    second = {p.name: p.read_bytes() for p in (again / "_generated").iterdir()}
    assert first == second


def test_snippets_are_not_empty(generated):
    for path in (generated / "_generated").glob("*.md"):
        assert path.read_text().strip(), path.name


# --- (b) the README's headline ------------------------------------------------------------


def test_headline_is_short():
    table = [line for line in generate.headline(DOCS).splitlines() if line.startswith("|")]
    assert len(table) - 2 <= 6


def test_readme_headline_matches():
    text = (ROOT / "README.md").read_text()
    block = generate.readme_block(text)
    if block is None:
        pytest.skip("README.md has no headline markers")
    assert block == generate.headline(DOCS), (
        "README.md's headline is stale: run python docs/_ext/generate.py --readme")


def test_update_readme(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\nno markers\n")
    assert generate.update_readme(readme, DOCS) == 1
    assert "headline:start" in capsys.readouterr().err
    readme.write_text(f"# x\n\n{generate.HEADLINE_START}\nold\n{generate.HEADLINE_END}\nend\n")
    assert generate.update_readme(readme, DOCS) == 0
    text = readme.read_text()
    assert "old" not in text and text.endswith(f"{generate.HEADLINE_END}\nend\n")
    assert generate.readme_block(text) == generate.headline(DOCS)
    assert generate.update_readme(readme, DOCS) == 0
    assert readme.read_text() == text


# --- (c) numbers stated in prose ----------------------------------------------------------


def _text(rel: str) -> str:
    return " ".join((DOCS / rel).read_text().split())


def _rows(name):
    return generate.read_experiment(DOCS, name)


def _config(name):
    return generate._config(name, _rows(name))


def _assert_in(rel: str, *phrases: str) -> None:
    text = _text(rel)
    for phrase in phrases:
        assert phrase in text, f"{rel} no longer says {phrase!r}: update this test with it"


def test_index_prose():
    from fastbn.experiments import data

    _assert_in("experiments/index.md", "1,797 8x8 images of 10 classes", "80/20",
               "1,437 training images, 360 validation images",
               "instead of 95%", "97%")
    assert data.DIGITS_VAL_FRACTION == 0.2
    for name in ("convergence", "learning-rate", "init", "small-batch"):
        assert generate._validation_images(_rows(name)) == 360
    assert 1797 - 1437 == 360
    from fastbn.experiments import convergence

    assert convergence.make_config("full", 0, "mnist").target_accuracy == 0.97


def test_convergence_prose():
    _assert_in("experiments/convergence.md", "Adam at lr 1e-3, batch 32, 30 epochs, 10 seeds",
               "95% validation accuracy")
    cfg, rows = _config("convergence"), _rows("convergence")
    assert (cfg.lr, cfg.batch_size, cfg.epochs, len(cfg.seeds)) == (1e-3, 32, 30, 10)
    assert cfg.target_accuracy == 0.95
    assert max(r["epoch"] for r in rows) == 30


def test_learning_rate_prose():
    from fastbn.experiments import train

    _assert_in("experiments/learning-rate.md", "9 learning rates from 1e-4 to 1",
               "half a decade apart", "momentum 0.9", "20 epochs at batch 32, over 5 seeds",
               "100 times its reference", "`log(10)`", "Adam at 1e-4", "Adam at 1e-2")
    cfg, rows = _config("learning-rate"), _rows("learning-rate")
    assert len(cfg.lrs) == 9 and (min(cfg.lrs), max(cfg.lrs)) == (1e-4, 1.0)
    assert sorted({r["lr"] for r in rows}) == sorted(cfg.lrs)
    assert (cfg.epochs, cfg.batch_size, len(cfg.seeds)) == (20, 32, 5)
    assert train.EXPLODE_RATIO == 100


def test_init_prose():
    _assert_in("experiments/init.md", "a scale from 0.01 to 10", "momentum 0.9 at lr 0.01",
               "batch 32, 20 epochs, 5 seeds", "at least 90%")
    cfg, rows = _config("init"), _rows("init")
    assert (min(cfg.scales), max(cfg.scales)) == (0.01, 10.0)
    assert sorted({r["init_scale"] for r in rows}) == sorted(cfg.scales)
    assert (cfg.optimizer, cfg.lr, cfg.batch_size, cfg.epochs, len(cfg.seeds)) == (
        "SGD", 0.01, 32, 20, 5)
    assert cfg.ok_accuracy == 0.9


def test_small_batch_prose():
    from fastbn.experiments import train

    _assert_in("experiments/small-batch.md", "`Conv(1->16)", "Conv(16->32)",
               "8x8 positions per image in block 1, 4x4 in block 2", "4 channels per group",
               "virtual_batch_size=4", "2, 4, 8, 16 and 32, each for the same 20 epochs",
               "`0.1 x B / 32`", "`0.05 x B / 32`", "first 4% of the steps",
               "`dmax` to 5 at 20% of the steps and `rmax` to 3 at 30%", "over 5 seeds")
    cfg, rows = _config("small-batch"), _rows("small-batch")
    assert sorted(cfg.batch_sizes) == [2, 4, 8, 16, 32] and cfg.epochs == 20
    assert (cfg.base_lr, cfg.mlp_base_lr, cfg.base_batch) == (0.1, 0.05, 32)
    w = cfg.warmup
    assert (w.hold, w.dmax, w.dmax_end, w.rmax, w.rmax_end) == (0.04, 5.0, 0.2, 3.0, 0.3)
    assert len(cfg.seeds) == 5
    cnn = {(r["bn_pool_max"] // r["batch_size"], r["bn_pool_min"] // r["batch_size"])
           for r in rows if r["model"] == "cnn"}
    assert cnn == {(64, 16)}
    assert train.norm_layer("GN", 16).num_groups == 4
    assert train.norm_layer("GBN", 16).virtual_batch_size == 4


def test_sync_bn_prose():
    _assert_in("experiments/sync-bn.md", "momentum 0.9, lr 0.05", "global batch of 32",
               "Each of 3 seeds runs 300 steps", "a run on 2 ranks")
    cfg, rows = _config("sync-bn"), _rows("sync-bn")
    assert (cfg.lr, cfg.batch_size, cfg.steps, len(cfg.seeds)) == (0.05, 32, 300, 3)
    assert {r["ranks"] for r in rows} == {2}
    assert max(r["step"] for r in rows) == 300


def test_performance_prose():
    import numpy as np

    from fastbn import bench

    _assert_in("performance.md", "32 MB L3", "at least 8 MB per tensor",
               "15 for cases that move at least 8 MB, 100 for the others",
               "first three repeats and every fourth one", "256 MB float32 array",
               "three times before the cases, once after every fourth case and three times "
               "at the end", "more than 32 MB", "3/5 = 0.6", "Below 0.65 of the probe",
               "Below 0.9x torch", "(8, 768) layer norm", "Channels-last group norm with 2 "
               "samples")
    measurements = generate.read_measurements(DOCS)
    assert measurements["machine"]["l3_mb"] == 32
    assert "32 MB L3" in measurements["machine"]["description"]
    assert generate.LARGE_BYTES == 8 << 20
    assert generate.TARGET_PROBE_FRACTION == 0.65 and generate.TARGET_TORCH_FLOOR == 0.9
    import inspect

    assert inspect.signature(bench.BandwidthProbe).parameters["megabytes"].default == 256
    src = inspect.getsource(bench.measure) + inspect.getsource(bench.run)
    assert "i >= 3 and i % 4" in src and "if i % 4 == 3" in src

    def case(shape):
        return bench.BenchCase("x", "forward", "NC", np.dtype(np.float32), shape, 2,
                               None, None)

    assert bench._repeats(case((1 << 20,)), False) == 15
    assert bench._repeats(case((1 << 10,)), False) == 100
    assert bench._large(case((2 << 20,))) and not bench._large(case(((2 << 20) - 1,)))
    report = generate.read_bench(DOCS)
    shapes = {tuple(r["shape"]) for r in report["rows"]}
    assert (8, 768) in shapes and (2, 56, 56, 64) in shapes


def test_baselines_and_mnist1d_prose():
    from fastbn.experiments import baselines, convergence, init_scale, learning_rate

    _assert_in("experiments/baselines.md", "Adam at learning rate 1e-2", "batch 100, 8,000 steps",
               "kernels 5, 3 and 3, stride 2 and padding 1", "within 3 points",
               "32% for logistic regression, 68% for an MLP, 94% for a CNN and 91% for a GRU")
    cfg = _config("baselines")
    assert (cfg.lr, cfg.batch_size, cfg.steps, cfg.tolerance) == (1e-2, 100, 8000, 0.03)
    assert baselines.MNIST1D_BASELINES == {"logistic regression": 0.32, "MLP": 0.68,
                                           "CNN": 0.94, "GRU": 0.91}
    _assert_in("experiments/mnist1d.md", "from 60% validation accuracy", "The CNN's target is 80%",
               "Adam at lr 1e-3, batch 32, 60 epochs of 125 steps, 10 seeds",
               "9 learning rates from 1e-4 to 1", "7 initialization scales from 0.01 to 10",
               "at lr 0.01, batch 32. 30 epochs, 5 seeds")
    conv = convergence.make_config("full", 0, "mnist1d")
    assert (conv.target("BN"), conv.target("CNN BN"), conv.lr, conv.batch_size, conv.epochs,
            len(conv.seeds)) == (0.6, 0.8, 1e-3, 32, 60, 10)
    assert 4000 // conv.batch_size == 125
    lr = learning_rate.make_config("full", 0, "mnist1d")
    assert (len(lr.lrs), lr.lrs[0], lr.lrs[-1], lr.epochs, len(lr.seeds)) == (9, 1e-4, 1.0, 30, 5)
    init = init_scale.make_config("full", 0, "mnist1d")
    assert (len(init.scales), init.scales[0], init.scales[-1], init.lr, init.batch_size,
            init.epochs, len(init.seeds)) == (7, 0.01, 10.0, 0.01, 32, 30, 5)
