"""DataReport of the detection loaders: `keras_resnet_suite.data.report.DataReport` with the
kinds of problem a detection loader records (skipped, clipped or converted data)."""

from __future__ import annotations

from keras_resnet_suite.data.report import DataReport as _DataReport
from keras_resnet_suite.data.report import Issue

# Kinds a loader records. Problems that remove data come first; the last ones are
# repairs (the data is kept after the fix) and are reported so nothing happens silently.
KINDS = {
    "missing_image": "annotation without an image file (record skipped)",
    "missing_annotation": "id listed in the split file without an annotation (skipped)",
    "malformed_annotation": "unparsable XML/JSON or a malformed record (skipped)",
    "unknown_class": "object whose class is not in class_names (object skipped)",
    "corrupt_image": "image file that cannot be decoded (record skipped)",
    "image_too_large": "image over the pixel limit, max_pixels (record skipped, not decoded)",
    "ambiguous_image": "image names that differ only in case fit the annotation (skipped)",
    "bad_segmentation": "object whose segmentation (polygon/RLE) cannot be decoded (skipped)",
    "degenerate_box": "box with zero or negative width/height after clipping (dropped)",
    "box_clipped": "box partly outside the image (clipped to the image)",
    "size_mismatch": "annotated image size differs from the file (file size used)",
    "grayscale_image": "single-channel image (converted to RGB)",
    "cmyk_image": "CMYK image (converted to RGB)",
    "filename_mismatch": "XML <filename> names another file (image found by the XML's own name)",
    "outside_data_folder": "image named by an absolute or ../ path outside the data folder "
                           "(used)",
    "exif_rotated": "photo with an EXIF orientation (turned upright; boxes in its frame)",
    "area_from_box": "annotation without 'area' (box area w*h used, e.g. for APs/APm/APl)",
    "unannotated_image": "image without an annotation file (not used)",
}

__all__ = ["KINDS", "DataReport", "Issue"]


class DataReport(_DataReport):
    """Counts of data problems per kind, each with the files involved; `summary()` prints them."""

    KINDS = {**KINDS, **_DataReport.KINDS}

    def __init__(self, name: str = "data") -> None:
        super().__init__(name)
