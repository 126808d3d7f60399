"""The API reference (docs/api, mkdocstrings) lists every named builder, each public object
once, and the detectors, adapters and training batches by their own entries; mkdocs renders a
parameter table for each (docs/api/griffe_parameters.py). `mkdocs build --strict` itself runs
in test_docs.py."""

from __future__ import annotations

import re

from tests.conftest import REPO

API = REPO / "docs" / "api"
ENTRY = re.compile(r"^::: (\S+)", re.M)


def _entries() -> list[str]:
    return [name for page in sorted(API.glob("*.md")) for name in ENTRY.findall(page.read_text())]


def test_every_named_builder_is_listed() -> None:
    from keras_resnet_suite import backbones, models

    classifiers = (API / "keras_resnet_suite.md").read_text()
    assert [b for b in models.BUILDERS if f"| `{b}` |" not in classifiers] == []
    backbone_page = (API / "backbones.md").read_text()
    assert [b for b in backbones.BUILDERS if f"| `{b}` |" not in backbone_page] == []


def test_each_object_once_and_the_named_ones_present() -> None:
    entries = _entries()
    assert sorted({e for e in entries if entries.count(e) > 1}) == []
    short = {e.rsplit(".", 1)[-1] for e in entries}
    wanted = {"FasterRCNN", "MaskRCNN", "training_batches", "ResNetHubBackbone",
              "ResNetCVBackbone", "to_keras_hub", "to_keras_cv", "build_parts", "shapes"}
    assert sorted(wanted - short) == []


def test_parameter_tables_are_configured() -> None:
    config = (REPO / "mkdocs.yml").read_text()
    assert "docstring_section_style: table" in config
    assert "docs/api/griffe_parameters.py:SignatureParameters" in config
    assert "api/integrations.md" in config
