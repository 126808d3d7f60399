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


def test_a_tree_with_only_train_txt_gets_the_seeded_split_it_is_described_with(tmp_path):
    """`inspect_data` describes a VOC tree whose split files have no train/val pair (only
    ImageSets/Main/train.txt) as a seeded split; its loader spec now ignores the file, so the
    train and val splits load (before: train read train.txt, val failed on val.txt)."""
    from detection.data.build import loader_function
    from detection.data.discover import inspect_data

    ids = write_bad_voc(tmp_path)
    info = inspect_data(tmp_path / "VOC2007")
    assert info.seeded and info.loader["use_split_files"] is False
    assert "no train/val pair" in " ".join(info.notes)
    spec = {k: v for k, v in info.loader.items() if k != "loader"}
    voc = loader_function(info.loader["loader"])
    train, val = (voc(**spec, split=s, class_names=["cat", "dog"], verbose=False)
                  for s in ("train", "val"))
    got = [{e["image_id"].decode() for e in ds.as_numpy_iterator()} for ds in (train, val)]
    assert got[0] and got[1] and not got[0] & got[1] and got[0] | got[1] <= set(ids)
