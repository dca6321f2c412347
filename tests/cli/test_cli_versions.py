"""`medbridge --version`, image references and pointing a compiled spec at the site's images."""

from __future__ import annotations

import re

import pytest

from components.common import images
from pipelines.cli import main
from pipelines.spec import images_in, placeholder_images, retarget_images
from pipelines.versions import pinned


def test_version_prints_code_stack_pins_and_images(capsys, monkeypatch):
    monkeypatch.delenv("MEDBRIDGE_IMAGE", raising=False)
    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("medbridge ") and "Kubeflow Pipelines backend >= 2.5" in out
    pins = pinned()
    assert set(pins) == {"cpu", "train", "serve"}
    for lib in ("torch", "transformers", "peft", "trl", "vllm", "kfp-kubernetes"):
        row = next(l for l in out.splitlines() if l.startswith(f"| {lib} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2:5] == [pins[i].get(lib, "-") for i in ("cpu", "train", "serve")], lib
    assert "registry.invalid/medbridge/medbridge-serve:0.1.0" in out and "placeholder registry" in out


def test_version_inside_an_image_compares_with_its_own_pins(capsys, monkeypatch):
    from importlib.metadata import version

    monkeypatch.setenv("MEDBRIDGE_IMAGE", "medbridge-serve")
    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    assert "running in: medbridge-serve" in out
    if version("torch").split("+")[0] != pinned()["serve"]["torch"]:
        assert re.search(r"\| torch \|.*differs from this image's pin", out)


@pytest.mark.parametrize(
    "registry, tag, digests, message",
    [
        ("Registry With Spaces", "0.1.0", {}, "--image-registry"),  # not a registry path
        ("registry.hospital.example/ml", "bad tag!", {}, "--image-tag"),
        ("registry.hospital.example/ml", "0.1.0", {"medbridge-gpu": "sha256:" + "0" * 64}, "unknown image"),
        ("registry.hospital.example/ml", "0.1.0", {"medbridge-train": "sha256:123"}, "64 hex digits"),
    ],
)
def test_bad_image_references_name_the_flag(registry, tag, digests, message):
    with pytest.raises(ValueError, match=message):
        images.references(registry, tag, digests)


def test_retarget_rewrites_only_medbridge_images():
    text = (
        "      container:\n        image: registry.invalid/medbridge/medbridge-train:0.1.0\n"
        "      container:\n        image: python:3.11\n"
    )
    refs = images.references("registry.hospital.example/ml", "0.2.0", {"medbridge-train": "sha256:" + "ab" * 32})
    out = retarget_images(text, refs)
    assert images_in(out) == {f"registry.hospital.example/ml/medbridge-train:0.2.0@sha256:{'ab' * 32}", "python:3.11"}
    assert placeholder_images(text) == ["registry.invalid/medbridge/medbridge-train:0.1.0"]
    assert placeholder_images(out) == []


def test_compile_names_the_given_images_and_keeps_working_with_the_placeholder(tmp_path, capsys):
    out = tmp_path / "p.yaml"
    assert main(["compile", "--out", str(out)]) == 0
    assert "placeholder image registry" in capsys.readouterr().out  # still compiles (golden spec, previews)
    assert main(["compile", "--out", str(out), "--image-registry", "registry.hospital.example/ml", "--image-tag", "0.3.0"]) == 0
    assert images_in(out.read_text()) == {f"registry.hospital.example/ml/medbridge-{n}:0.3.0" for n in ("cpu", "train", "serve")}
