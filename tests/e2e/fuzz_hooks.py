"""Schemathesis hooks for the API fuzz (loaded through SCHEMATHESIS_HOOKS).

The medical route's image is `format: byte` (JSON, base64) or `format: binary` (multipart): a
schema can say "bytes", not "a decodable PNG, JPEG, DICOM or NIfTI", and the server rightly
answers 422 to bytes that are no image. So positive cases draw real image files of random
format, size, depth and content (the medical test writers), which the server must answer
200; negative cases (wrong types, empty strings, missing fields) are still Schemathesis's own.
"""

from __future__ import annotations

import base64

import numpy as np
import schemathesis
from hypothesis import strategies as st

from tests.medical.files import dicom_bytes, jpeg_bytes, nifti_bytes, png_bytes


@st.composite
def image_files(draw) -> bytes:
    h, w = draw(st.integers(2, 48)), draw(st.integers(2, 48))  # the decoder's minimum is 2x2
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["png-grey", "png-rgb", "png-16", "jpeg", "dicom-8", "dicom-16",
                                 "nifti", "nifti-gz"]))
    if kind == "png-grey":
        return png_bytes(rng.integers(0, 256, (h, w), dtype=np.uint8))
    if kind == "png-rgb":
        return png_bytes(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    if kind == "png-16":
        return png_bytes(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    if kind == "jpeg":
        return jpeg_bytes(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    if kind == "dicom-8":
        return dicom_bytes(rng.integers(0, 256, (h, w), dtype=np.uint8))
    if kind == "dicom-16":
        return dicom_bytes(rng.integers(0, 4096, (h, w), dtype=np.uint16))
    vol = rng.random((h, w, 1), dtype=np.float32)  # one slice: the 2D test models refuse volumes
    return nifti_bytes(vol, gz=kind == "nifti-gz")


schemathesis.openapi.format("byte", image_files().map(lambda b: base64.b64encode(b).decode()))
schemathesis.openapi.format("binary", image_files())
