"""Encoded image headers read in-graph (TensorFlow ops only, never raising): format, stored size,
EXIF orientation and whether the file is whole.

A SavedModel uses this to judge each upload before any decoder runs: a decoder error fails the
whole batch without naming the element, and a decompression bomb costs its memory before any
size check could see it. The rules are those of TensorFlow's own decoders (`tf.io.decode_image`),
so a file refused here would fail to decode (a file passed may still hold corrupt compressed
data, which only decoding finds); the orientation follows PIL's `ImageOps.exif_transpose` (JPEG
APP1 "Exif" segment, PNG eXIf chunk; IFD0 tag 0x0112), as the Python loaders do.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

# Problem codes -> text (index 0: no problem); the size problems are worded by the caller.
PROBLEMS = (
    "",
    "empty (0 bytes)",
    "not a JPEG/PNG/GIF/BMP image",
    "damaged JPEG header",
    "truncated JPEG (no end-of-image marker)",
    "unsupported JPEG kind (only 8-bit baseline, extended and progressive JPEGs decode)",
    "damaged PNG header",
    "truncated PNG (no IEND chunk at the end)",
    "damaged GIF header",
    "truncated GIF (no trailer byte at the end)",
    "damaged, truncated or unsupported BMP (uncompressed 8/24/32-bit BMPs decode)",
)
_OK, _EMPTY, _UNKNOWN, _JPEG_HEADER, _JPEG_TRUNCATED, _JPEG_KIND = range(6)
_PNG_HEADER, _PNG_TRUNCATED, _GIF_HEADER, _GIF_TRUNCATED, _BMP = range(6, 11)
# Bounds on the header walks (steps: segments, or stray bytes skipped between them): real JPEGs
# have tens of segments before the scan and PNGs a few chunks before the pixels; a crafted file
# of thousands of tiny segments must not cost seconds.
_MAX_JPEG_SEGMENTS = 1024
_MAX_PNG_CHUNKS = 256
_PAD = 16  # zero bytes after the file, so every fixed-offset read stays inside the buffer


class ImageHeader(NamedTuple):
    """What `inspect` learns of one encoded image (scalar tensors)."""

    problem: tf.Tensor  # int32 index into PROBLEMS, 0 when the file looks decodable
    height: tf.Tensor  # int64 stored size (before the EXIF orientation)
    width: tf.Tensor  # int64
    orientation: tf.Tensor  # int32 EXIF orientation 1..8 (1 when absent or invalid)


class _Bytes:
    """Reads of a file's bytes at tensor offsets, zero past the end (never out of range)."""

    def __init__(self, contents: tf.Tensor):
        raw = tf.io.decode_raw(contents, tf.uint8)
        self.n = tf.size(raw, out_type=tf.int64)
        self.raw = raw
        self.padded = tf.concat([raw, tf.zeros([_PAD], tf.uint8)], 0)

    def u8(self, i) -> tf.Tensor:
        i = tf.convert_to_tensor(i, tf.int64)
        inside = (i >= 0) & (i < self.n)
        value = tf.gather(self.padded, tf.clip_by_value(i, 0, self.n))
        return tf.where(inside, tf.cast(value, tf.int64), tf.constant(0, tf.int64))

    def be16(self, i) -> tf.Tensor:
        return self.u8(i) * 256 + self.u8(i + 1)

    def be32(self, i) -> tf.Tensor:
        return self.be16(i) * 65536 + self.be16(i + 2)

    def le16(self, i) -> tf.Tensor:
        return self.u8(i) + self.u8(i + 1) * 256

    def le32(self, i) -> tf.Tensor:
        return self.le16(i) + self.le16(i + 2) * 65536

    def equals(self, i, text: bytes) -> tf.Tensor:
        """Whether the bytes at `i` are `text`."""
        i = tf.convert_to_tensor(i, tf.int64)
        got = self.u8(i + tf.range(len(text), dtype=tf.int64))
        return tf.reduce_all(tf.equal(got, tf.constant(list(text), tf.int64)))


def _signed32(value: tf.Tensor) -> tf.Tensor:
    return tf.where(value >= 2**31, value - 2**32, value)


def _exif_orientation(b: _Bytes, start: tf.Tensor, end: tf.Tensor) -> tf.Tensor:
    """The IFD0 Orientation (0x0112) of the TIFF structure at bytes [start, end), as PIL reads
    it; 1 when there is none or it is not 1..8."""
    little = b.equals(start, b"II*\x00")
    big = b.equals(start, b"MM\x00*")

    def u16(i):
        return tf.where(little, b.le16(i), b.be16(i))

    def u32(i):
        return tf.where(little, b.le32(i), b.be32(i))

    ifd = start + u32(start + 4)
    count = tf.where(ifd + 2 <= end, u16(ifd), 0)
    entries = ifd + 2 + 12 * tf.range(count)
    entries = tf.boolean_mask(entries, entries + 12 <= end)  # an entry cut off by the end: none
    kind = u16(entries + 2)
    value = tf.where(kind == 4, u32(entries + 8), tf.where(kind == 1, b.u8(entries + 8),
                                                           u16(entries + 8)))
    found = (u16(entries) == 0x0112) & ((kind == 1) | (kind == 3) | (kind == 4))
    values = tf.boolean_mask(value, found)
    first = tf.cond(tf.size(values) > 0, lambda: values[0], lambda: tf.constant(1, tf.int64))
    usable = (little | big) & (first >= 1) & (first <= 8)
    return tf.cast(tf.where(usable, first, 1), tf.int32)


def _i64(value: int) -> tf.Tensor:
    return tf.constant(value, tf.int64)


def _jpeg(b: _Bytes) -> tuple:
    """Walk the JPEG segments from SOI to the first scan (SOS): the frame (SOF) size, the first
    APP1 "Exif" segment (PIL's choice), and whether an end-of-image marker follows the scan."""

    def body(pos, state, height, width, sof, precision, components, exif_start, exif_end):
        m0, m1 = b.u8(pos), b.u8(pos + 1)
        # stray bytes between segments are skipped one by one, as libjpeg and PIL do
        skip = (m0 != 0xFF) | (m1 == 0x00)
        fill = (m0 == 0xFF) & (m1 == 0xFF)  # fill bytes may precede any marker
        standalone = (m0 == 0xFF) & ((m1 == 0x01) | ((m1 >= 0xD0) & (m1 <= 0xD7)))
        segment = ~skip & ~fill & ~standalone
        length = b.be16(pos + 2)
        end = pos + 2 + length
        is_sof = segment & (m1 >= 0xC0) & (m1 <= 0xCF) & (m1 != 0xC4) & (m1 != 0xC8) & (
            m1 != 0xCC)
        bad = segment & ((m1 == 0xD8) | (m1 == 0xD9) | (length < 2) | (is_sof & (length < 8)))
        first_sof = is_sof & (sof == 0) & ~bad
        is_exif = (segment & (m1 == 0xE1) & (exif_start < 0) & (length >= 8)
                   & b.equals(pos + 4, b"Exif\x00\x00"))  # fmt: skip
        state = tf.where(pos + 2 > b.n, _i64(3), tf.where(bad, _i64(2), tf.where(
            segment & (end > b.n), _i64(3), tf.where(segment & (m1 == 0xDA), _i64(1), _i64(0)))))
        # SOF payload: precision at +4, height +5, width +7, component count +9
        return (tf.where(skip | fill, pos + 1, tf.where(standalone, pos + 2, end)), state,
                tf.where(first_sof, b.be16(pos + 5), height),
                tf.where(first_sof, b.be16(pos + 7), width),
                tf.where(first_sof, m1, sof),
                tf.where(first_sof, b.u8(pos + 4), precision),
                tf.where(first_sof, b.u8(pos + 9), components),
                tf.where(is_exif, pos + 10, exif_start),  # the TIFF header after "Exif\0\0"
                tf.where(is_exif, end, exif_end))  # fmt: skip

    start = (_i64(2), _i64(0), _i64(0), _i64(0), _i64(0), _i64(0), _i64(0), _i64(-1), _i64(0))
    pos, state, height, width, sof, precision, components, exif_start, exif_end = tf.while_loop(
        lambda pos, state, *_: state == 0, body, start, maximum_iterations=_MAX_JPEG_SEGMENTS)
    # Inside the scan every 0xFF byte is stuffed (FF00) or a restart marker, so an FFD9 after
    # the scan header is the end-of-image marker: without one the file was cut off.
    raw = b.raw
    eoi = tf.reduce_any((raw[:-1] == 0xFF) & (raw[1:] == 0xD9)
                        & (tf.range(b.n - 1, dtype=tf.int64) >= pos))  # fmt: skip
    kind_ok = ((sof == 0xC0) | (sof == 0xC1) | (sof == 0xC2)) & (precision == 8) & (
        (components == 1) | (components == 3) | (components == 4))
    problem = tf.where(state == 3, _i64(_JPEG_TRUNCATED), tf.where(
        (state != 1) | (sof == 0), _i64(_JPEG_HEADER), tf.where(
            ~kind_ok, _i64(_JPEG_KIND), tf.where(eoi, _i64(_OK), _i64(_JPEG_TRUNCATED)))))
    orientation = tf.cond(exif_start >= 0, lambda: _exif_orientation(b, exif_start, exif_end),
                          lambda: tf.constant(1, tf.int32))
    return problem, height, width, orientation


def _png(b: _Bytes) -> tuple:
    """IHDR size, the eXIf chunk before the pixels (where PIL writes it) and the IEND chunk."""
    header_ok = (b.n >= 33) & b.equals(8, b"\x00\x00\x00\x0dIHDR")

    def body(pos, state, exif_start, exif_end):
        length = b.be32(pos)
        is_exif = b.equals(pos + 4, b"eXIf") & (exif_start < 0)
        stop = b.equals(pos + 4, b"IDAT") | b.equals(pos + 4, b"IEND") | (pos + 12 > b.n)
        return (pos + 12 + length, tf.where(stop, _i64(1), _i64(0)),
                tf.where(is_exif, pos + 8, exif_start),
                tf.where(is_exif, pos + 8 + length, exif_end))  # fmt: skip

    _, _, exif_start, exif_end = tf.while_loop(
        lambda pos, state, *_: state == 0, body, (_i64(8), _i64(0), _i64(-1), _i64(0)),
        maximum_iterations=_MAX_PNG_CHUNKS)
    whole = b.equals(b.n - 12, b"\x00\x00\x00\x00IEND\xae\x42\x60\x82")
    problem = tf.where(~header_ok, _i64(_PNG_HEADER),
                       tf.where(whole, _i64(_OK), _i64(_PNG_TRUNCATED)))
    orientation = tf.cond(exif_start >= 0,
                          lambda: _exif_orientation(b, exif_start, tf.minimum(exif_end, b.n)),
                          lambda: tf.constant(1, tf.int32))  # fmt: skip
    return problem, b.be32(20), b.be32(16), orientation


def _gif(b: _Bytes) -> tuple:
    """The logical screen size (TensorFlow's frame size) and the trailer byte."""
    problem = tf.where(b.n < 14, _i64(_GIF_HEADER), tf.where(
        b.u8(b.n - 1) == 0x3B, _i64(_OK), _i64(_GIF_TRUNCATED)))
    return problem, b.le16(8), b.le16(6), tf.constant(1, tf.int32)


def _bmp(b: _Bytes) -> tuple:
    """The checks of TensorFlow's BMP decoder (header size, width, height, bits per pixel, and a
    file size of exactly header + rows), and those it would read differently from PIL: it
    ignores the compression field and the OS/2 header, so only uncompressed pixels (or 32-bit
    ones with the standard BGRA colour masks) behind a Windows info header pass."""
    offset, width = _signed32(b.le32(10)), _signed32(b.le32(18))
    height, bits, compression = tf.abs(_signed32(b.le32(22))), b.le16(28), b.le32(30)
    row = (bits // 8 * width + 3) // 4 * 4
    bgra = (b.le32(54) == 0xFF0000) & (b.le32(58) == 0xFF00) & (b.le32(62) == 0xFF)
    plain = (compression == 0) | ((compression == 3) & (bits == 32) & bgra)
    ok = ((b.n >= 32) & ((bits == 8) | (bits == 24) | (bits == 32)) & (b.le32(14) >= 40) & plain
          & (width > 0) & (height > 0) & (offset >= 0) & (width * height < (2**31 - 1) // 8)
          & (b.n - offset - row * height == 0))  # fmt: skip
    return tf.where(ok, _i64(_OK), _i64(_BMP)), height, width, tf.constant(1, tf.int32)


def inspect(contents: tf.Tensor) -> ImageHeader:
    """Read the header of one encoded image (scalar string) without decoding its pixels."""
    b = _Bytes(contents)
    none = (_i64(_UNKNOWN), _i64(0), _i64(0), tf.constant(1, tf.int32))
    # the magic numbers TensorFlow's decode_image dispatches on
    index = tf.where(b.equals(0, b"\xff\xd8\xff"), 0, tf.where(
        b.equals(0, b"\x89PNG\r\n\x1a\n"), 1, tf.where(
            b.equals(0, b"GIF8"), 2, tf.where(b.equals(0, b"BM"), 3, 4))))
    problem, height, width, orientation = tf.switch_case(
        tf.cast(index, tf.int32),
        [lambda: _jpeg(b), lambda: _png(b), lambda: _gif(b), lambda: _bmp(b), lambda: none])
    problem = tf.where(b.n == 0, _i64(_EMPTY), problem)
    return ImageHeader(tf.cast(problem, tf.int32), height, width, orientation)
