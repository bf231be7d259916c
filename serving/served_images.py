"""Every image /inspect answers, kept once by its content id in the platform's image home
beside the images the intake keeps (`<image_uri>/<image id>.png`, the PNG of the decoded
pixels), so monitoring can read served images back for drift and re-annotation.

Written by a thread of the worker after the answer (`serving.release.OffRequestQueue`); an
image already there is not written again. A write that fails is a warning and a count, never a
failed answer."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np

from ml.data import objects
from ml.defects.images import png_bytes, served_image_uri

LOGGER = logging.getLogger("mlops.serving")
QUEUED_BATCHES = 16
"""Answered batches waiting to be kept; past it a batch is skipped, warned of and counted."""


def keep_served_images(image_uri: str, images: Iterable[tuple[str, np.ndarray]]) -> list[str]:
    """Write each image (id, pixels) not kept yet; the ids that could not be written, each
    warned of."""
    failed = []
    for image_id, pixels in dict(images).items():  # an image sent twice is written once
        uri = served_image_uri(image_uri, image_id)
        try:
            if not objects.exists(uri):
                objects.write_bytes(uri, png_bytes(pixels))
        except Exception as error:  # any store's error: the answer stands, the loss is counted
            LOGGER.warning("served image %s not kept at %s: %s", image_id, uri, error)
            failed.append(image_id)
    return failed
