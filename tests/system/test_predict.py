"""`mnist predict`: pictures as people make them -> MNIST inputs -> digits."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from mnist_pipeline.serving import digits, predict
from support import mnist
from support.models import draw_digits, write_mnist_pngs


@pytest.fixture(scope="module")
def mnist_test(real_processed):
    with np.load(real_processed / "test.npz") as npz:
        return npz["images"][:200], npz["labels"][:200]


def centre_of_mass(x: np.ndarray) -> tuple[float, float]:
    ys, xs = np.indices(x.shape)
    return float((x * ys).sum() / x.sum()), float((x * xs).sum() / x.sum())


def test_an_mnist_image_comes_back_as_itself(mnist_test):
    images, _ = mnist_test
    diffs = [np.abs(digits.to_mnist(x.astype(float)) - x / 255.0).mean() for x in images[:50]]
    assert np.mean(diffs) < 0.01, "MNIST images are already made this way: the recipe changes them little"


def test_recipe_crop_fit_20px_and_centre_of_mass(tmp_path):
    # A tall dark bar off-centre in the corner of a large light picture.
    image = Image.new("L", (300, 200), 230)
    image.paste(0, (20, 30, 50, 150))  # 30 wide, 120 tall
    x = digits.to_mnist(np.asarray(image, dtype=float))
    assert x.shape == (28, 28) and x.dtype == np.float32 and x.min() == 0 and x.max() == 1
    rows, cols = np.flatnonzero(x.any(axis=1)), np.flatnonzero(x.any(axis=0))
    assert rows[-1] - rows[0] + 1 == 20, "the longer side fits 20 px"
    assert 4 <= cols[-1] - cols[0] + 1 <= 6, "aspect ratio kept: 30 x 120 -> 5 x 20"
    cy, cx = centre_of_mass(x)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5, "centre of mass at the centre of the field"
    assert x[0].sum() == x[-1].sum() == x[:, 0].sum() == x[:, -1].sum() == 0, "background is 0"


def test_both_polarities_and_any_size_give_the_same_input(mnist_test):
    images, _ = mnist_test
    correlations = []
    for x in images[:20]:
        light_on_dark = digits.to_mnist(x.astype(float))
        dark_on_light = digits.to_mnist(255.0 - x)
        assert np.abs(light_on_dark - dark_on_light).max() < 1e-6
        big = np.asarray(Image.fromarray(x).resize((200, 200), Image.BICUBIC), dtype=float)
        from_big = digits.to_mnist(big)
        cy, cx = centre_of_mass(from_big)
        assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5
        # the same digit, up to a pixel of shift where the centre of mass rounds the other way
        correlations.append(max(np.corrcoef(np.roll(from_big, (dy, dx), (0, 1)).ravel(), light_on_dark.ravel())[0, 1]
                                for dy in (-1, 0, 1) for dx in (-1, 0, 1)))
    assert min(correlations) > 0.9 and np.mean(correlations) > 0.95, correlations


def test_real_mnist_pictures_in_both_polarities_and_sizes_are_recognised(trained_real, mnist_test, tmp_path, capsys):
    files = write_mnist_pngs(tmp_path, *mnist_test, n=30)
    code = predict.main(["--json", "--run", trained_real.run_id, "--tracking-uri", trained_real.uri,
                         *[str(f) for f, _ in files]])
    assert code == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in results] == [str(f) for f, _ in files]
    correct = sum(r["digit"] == label for r, (_, label) in zip(results, files))
    assert correct >= 27, f"{correct}/30 right: {[(r['file'], r['digit']) for r in results]}"
    for r in results:
        probs = [p for _, p in r["top3"]]
        assert probs == sorted(probs, reverse=True) and r["top3"][0][0] == r["digit"]
        assert sum(r["probabilities"]) == pytest.approx(1, abs=1e-5) and len(r["probabilities"]) == 10


def test_drawn_digits_with_the_champion(champion_real, tmp_path, capsys):
    files = draw_digits(tmp_path)
    code = predict.main(["--tracking-uri", champion_real.uri, *[str(f) for f, _ in files]])
    out, err = capsys.readouterr()
    assert code == 0
    assert "model: mnist-cnn@champion (version 1, run" in err and "note:" not in err
    lines = out.splitlines()
    assert len(lines) == len(files)
    pattern = re.compile(r"^(.+): (\d)  \((\d) (\d\.\d{3}), (\d) (\d\.\d{3}), (\d) (\d\.\d{3})\)$")
    predicted = []
    for line, (path, _) in zip(lines, files):
        m = pattern.match(line)
        assert m and m[1] == str(path), line
        assert m[2] == m[3] and float(m[4]) >= float(m[6]) >= float(m[8])
        predicted.append(int(m[2]))
    right = sum(p == d for p, (_, d) in zip(predicted, files))
    assert right >= 4, f"drawn {[d for _, d in files]}, predicted {predicted}"


def test_bad_files_get_one_line_each_and_the_others_are_still_predicted(champion_real, tmp_path):
    good = tmp_path / "seven.png"
    Image.fromarray(255 - champion_real.test_images[0]).save(good)  # a 7, dark on light
    (tmp_path / "notes.png").write_text("not an image at all\n")
    (tmp_path / "empty.png").write_bytes(b"")
    Image.new("L", (64, 64), 255).save(tmp_path / "blank.png")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:60])
    bad = {"notes.png": "not an image", "empty.png": "empty file", "missing.png": "no such file",
           "blank.png": "blank", "truncated.png": "damaged image"}
    args = ["--tracking-uri", champion_real.uri, str(tmp_path / "notes.png"), str(good),
            *[str(tmp_path / name) for name in bad if name != "notes.png"]]
    result = mnist("predict", *args, timeout=120)
    assert result.returncode == 1, result.stderr
    (line,) = result.stdout.splitlines()
    assert line.startswith(f"{good}: 7  (7 "), line
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == len(bad), result.stderr
    for name, why in bad.items():
        (line,) = [e for e in errors if f"{tmp_path / name}:" in e]
        assert why in line, line
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("flag", "message"), [
    (["--run", "0123456789abcdef0123456789abcdef"], "no MLflow run '0123456789abcdef0123456789abcdef'"),
    (["--model-name", "no-such-model"], "no registered model 'no-such-model'"),
])
def test_unknown_run_or_model_name_is_one_clear_line(champion_real, tmp_path, capsys, flag, message):
    good = tmp_path / "digit.png"
    Image.fromarray(champion_real.test_images[1]).save(good)
    code = predict.main(["--tracking-uri", champion_real.uri, *flag, str(good), str(tmp_path / "gone.png")])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    file_line, model_line = err.splitlines()
    assert file_line == f"error: {tmp_path / 'gone.png'}: no such file"
    assert model_line.startswith(f"error: {message}"), model_line


def test_json_lists_errors_with_results_and_a_checkpoint_answers_as_its_run(champion_real, tmp_path, capsys):
    good = tmp_path / "digit.png"
    Image.fromarray(champion_real.test_images[2]).resize((90, 90)).save(good)
    code = predict.main(["--json", "--tracking-uri", champion_real.uri, str(tmp_path / "missing.jpg"), str(good)])
    out, err = capsys.readouterr()
    assert code == 1
    first, second = json.loads(out)
    assert first == {"file": str(tmp_path / "missing.jpg"), "error": "no such file"}
    assert second["file"] == str(good) and second["digit"] == int(champion_real.test_labels[2])
    assert f"error: {tmp_path / 'missing.jpg'}: no such file" in err

    best = champion_real.out / "checkpoints" / "best.ckpt"
    assert predict.main(["--json", "--ckpt", str(best), str(good)]) == 0
    (from_ckpt,) = json.loads(capsys.readouterr().out)
    assert np.allclose(from_ckpt["probabilities"], second["probabilities"], atol=1e-6), "the logged model is best.ckpt"
