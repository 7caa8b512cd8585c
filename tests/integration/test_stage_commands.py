"""`mnist fetch` and `mnist split` as processes: exit codes, one error line, signals, --help."""

import subprocess
import sys

import numpy as np

from support import mnist
from support.data import listing, write_fake_mnist

SIGTERM_SCRIPT = """
import sys, time
from pathlib import Path
from mnist_pipeline.config import stage_main
from mnist_pipeline.data.fetch import FileSpec, fetch

class Slow:
    name = "slow"
    def fetch(self, names, install):
        def write(f):
            f.write(b"x" * 1000)
            print("WRITING", flush=True)
            time.sleep(60)
        install(names[0], write)

stage_main(lambda cfg: fetch(Path(sys.argv[1]), [Slow()], {"f": FileSpec("0" * 64)}), argv=[])
"""


def test_sigterm_midway_cleans_up(tmp_path):
    raw = tmp_path / "raw"
    proc = subprocess.Popen(
        [sys.executable, "-c", SIGTERM_SCRIPT, str(raw)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "WRITING"
        assert len(listing(raw)) == 1  # the temp file being written
        proc.terminate()
        _, stderr = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "error: interrupted; no partial file was left in place"
    assert listing(raw) == []


def test_stage_exits_2_with_one_error_line(tmp_path):
    folder = tmp_path / "src"
    write_fake_mnist(folder)  # fake bytes: they do not match the canonical checksums
    raw = tmp_path / "raw"
    proc = mnist("fetch", f"paths.raw_dir={raw}", f"data.fetch.source_dir={folder}", "data.fetch.sources=[local]",
                 timeout=60)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "local: train-images-idx3-ubyte: sha256 mismatch" in errors[0]
    assert listing(raw) == []


def test_help_is_fast_and_imports_nothing_heavy():
    proc = mnist("fetch", "--help")
    assert proc.returncode == 0 and proc.stdout.startswith("usage: mnist fetch [key=value ...]")
    check = "import sys, mnist_pipeline.data.fetch, mnist_pipeline.data.split; print({'torch', 'pooch'} & {*sys.modules})"
    assert subprocess.run([sys.executable, "-c", check], capture_output=True, text=True).stdout.strip() == "set()"


def run_stage(*overrides):
    return mnist("split", *overrides)


def test_stage_subprocess(fake_raw, tmp_path):
    out = tmp_path / "processed"
    paths = [f"paths.raw_dir={fake_raw}", f"paths.processed_dir={out}"]
    ok = run_stage(*paths, "data.split.val_size=60")
    assert ok.returncode == 0, ok.stderr
    sizes = {}
    for name in ("train", "val", "test"):
        with np.load(out / f"{name}.npz") as npz:
            sizes[name] = len(npz["labels"])
    assert sizes == {"train": 540, "val": 60, "test": 100}
    assert "val.npz: 60 images; labels 0-9:" in ok.stderr

    bad_out = tmp_path / "bad"
    bad = run_stage(f"paths.raw_dir={fake_raw}", f"paths.processed_dir={bad_out}", "data.split.val_size=5000.5")
    assert bad.returncode != 0
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: data.split.val_size must be an integer in 1 .. 599")
    assert not bad_out.exists()
