"""Issue 30: with class names read from the files, each VOC XML is parsed once (it was parsed
twice: once for the names, once for the records), and the report is what it was."""

import xml.etree.ElementTree as ET

from test_voc import write_bad_voc

from detection.data.voc import voc_records


def _counting(monkeypatch):
    seen = []
    real = ET.parse

    def parse(path, *args, **kwargs):
        seen.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(ET, "parse", parse)
    return seen


def test_each_xml_is_parsed_once_when_classes_come_from_the_files(tmp_path, monkeypatch):
    write_bad_voc(tmp_path)
    listed = voc_records(tmp_path, split="train", class_names=["cat", "dog", "unicorn"])[1]
    seen = _counting(monkeypatch)
    records, report = voc_records(tmp_path, split="train", class_names="auto")
    xml_files = sorted((tmp_path / "VOC2007" / "Annotations").glob("*.xml"))
    assert sorted(seen) == sorted(str(p) for p in xml_files)  # 12 files, once each
    assert report.known_classes == ["cat", "dog", "unicorn"]
    assert report.counts == {**listed.counts}  # the same problems, each reported once
    assert report.details("malformed_annotation") == [
        "malformed.xml: mismatched tag: line 4, column 4"]
    assert len(records) == 8 and sum(len(r.labels) for r in records) == 11
