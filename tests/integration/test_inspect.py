"""The defect-inspection champion served for real: `POST /inspect` of the Bento that
`champion_bento` built, called over HTTP with base64 images. One image or a list; requests
batched together answered as if alone; every bad image a 400 naming it, the worker still up;
every answer logged with the image's id and statistics, never its pixels."""

import base64
import io
import json
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from PIL import Image

from ml.defects.images import decode
from ml.lifecycle.registered_models import DEFECT_CLASSIFIER
from ml.synthetic.defect_images import generate_cell_images, png_bytes
from orchestration.serving import BentoServer
from tests.conftest import ServedPlatform, logged_once_flushed


def encoded(data: bytes) -> str:
    return base64.b64encode(data).decode()


def inspect(server: BentoServer, images: object) -> requests.Response:
    return requests.post(
        f"{server.url}/inspect", json={"images": images}, headers=server.headers(), timeout=60
    )


CELLS = generate_cell_images(12, seed=90, size=64)


def test_inspect_answers_one_image_or_a_list_with_the_champions_version(
    served_platform: ServedPlatform, bento_server: BentoServer
) -> None:
    served = re.search(r"-dc(\d+)", served_platform.bento.split(":")[1]).group(1)
    one = inspect(bento_server, encoded(CELLS[0].png))
    assert one.status_code == 200, one.text
    many = inspect(bento_server, [encoded(c.png) for c in CELLS[:4]])
    assert many.status_code == 200, many.text
    assert len(one.json()) == 1 and len(many.json()) == 4
    assert many.json()[0]["defect_probability"] == pytest.approx(
        one.json()[0]["defect_probability"], abs=1e-5
    )
    for answer in one.json() + many.json():
        assert answer["model_version"] == served
        assert answer["image_id"].startswith("img-")
        assert 0.0 <= answer["defect_probability"] <= 1.0
        defective = answer["defect_probability"] >= answer["threshold"]
        assert answer["label"] == ("defective" if defective else "functional")


def test_concurrent_inspections_are_batched_and_answered_as_if_alone(
    bento_server: BentoServer,
) -> None:
    alone = [inspect(bento_server, encoded(c.png)).json()[0] for c in CELLS]
    with ThreadPoolExecutor(max_workers=12) as pool:
        together = list(pool.map(lambda c: inspect(bento_server, [encoded(c.png)]), CELLS))
    for single, answer in zip(alone, together, strict=True):
        assert answer.status_code == 200, answer.text
        batched = answer.json()[0]
        assert batched["label"] == single["label"]
        assert batched["defect_probability"] == pytest.approx(
            single["defect_probability"], abs=1e-4
        )


def _rgb(png: bytes) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(decode(png)[1]).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


BAD = [
    ({"images": "not base64 at all!"}, "not base64"),
    ({"images": encoded(CELLS[0].png[: len(CELLS[0].png) // 2])}, "truncated"),
    ({"images": encoded(b"plain text, not an image")}, "unreadable"),
    ({"images": encoded(_rgb(CELLS[0].png))}, "wrong mode"),
    ({"images": encoded(png_bytes(np.full((64, 64), 120, np.uint8)))}, "blank"),
    ({"images": encoded(png_bytes(np.full((8, 8), 120, np.uint8)))}, "too small"),
    ({"images": [encoded(CELLS[0].png), ""]}, "images"),
    ({"images": []}, "images"),
    ({"images": [encoded(CELLS[0].png)] * 17}, "images"),
    ({"images": 5}, "images"),
    ({}, "images"),
]


@pytest.mark.parametrize(("body", "said"), BAD)
def test_a_bad_image_is_a_400_naming_what_is_wrong(
    bento_server: BentoServer, body: dict, said: str
) -> None:
    answer = requests.post(
        f"{bento_server.url}/inspect", json=body, headers=bento_server.headers(), timeout=60
    )
    assert answer.status_code == 400, answer.text
    error = answer.json()
    assert error["error"] == "invalid_input"
    assert said in error["message"], error
    assert any("images" in field for field in error["fields"]), error


def test_a_bad_image_in_a_list_is_named_and_the_worker_answers_on(
    bento_server: BentoServer,
) -> None:
    mixed = [encoded(CELLS[1].png), encoded(CELLS[2].png[:100])]
    answer = inspect(bento_server, mixed)
    assert answer.status_code == 400 and "truncated" in answer.text
    assert "1" in json.dumps(answer.json()["fields"]), answer.json()
    assert inspect(bento_server, mixed[:1]).status_code == 200
    assert requests.get(f"{bento_server.url}/readyz", timeout=10).status_code == 200


def test_every_inspection_is_logged_with_the_image_id_and_statistics_not_pixels(
    served_platform: ServedPlatform, bento_server: BentoServer
) -> None:
    answers = inspect(bento_server, [encoded(c.png) for c in CELLS[5:8]]).json()
    wanted = {a["request_id"] for a in answers}
    mine = logged_once_flushed(served_platform, wanted)
    assert mine.height == 3
    assert set(mine["endpoint"]) == {"inspect"} and set(mine["model_name"]) == {DEFECT_CLASSIFIER}
    by_id = {a["request_id"]: a for a in answers}
    for record in mine.iter_rows(named=True):
        given = json.loads(record["input"])
        assert given["image_id"] == by_id[record["request_id"]]["image_id"]
        assert {"brightness", "contrast", "sharpness", "width", "height"} <= set(given)
        assert record["intent"] == by_id[record["request_id"]]["label"]
        assert len(record["input"]) < 1000, "the log keeps statistics, never the image"
