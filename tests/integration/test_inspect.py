"""The defect-inspection champion served for real: `POST /inspect` of the Bento that
`champion_bento` built, called over HTTP with base64 images or image files (multipart). One
image or a list; requests batched together answered as if alone; every bad image a 400 naming
it, the worker still up; every answer logged with the image's id and statistics, never its
pixels; every served image kept in the image home by its id."""

import base64
import io
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from ml.defects.images import decode, image_id_of
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


def inspect_files(server: BentoServer, files: list[tuple[str, bytes]]) -> requests.Response:
    """/inspect with each image a file part named `images`, as `curl -F images=@cell.png`."""
    return requests.post(
        f"{server.url}/inspect",
        files=[("images", (name, data, "image/png")) for name, data in files],
        headers=server.headers(),
        timeout=60,
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


@pytest.mark.parametrize("count", [1, 4])
def test_image_files_sent_as_multipart_are_answered_as_the_same_images_in_json(
    bento_server: BentoServer, count: int
) -> None:
    cells = CELLS[8 : 8 + count]
    as_json = inspect(bento_server, [encoded(c.png) for c in cells])
    as_files = inspect_files(bento_server, [(c.file_name, c.png) for c in cells])
    assert as_json.status_code == 200, as_json.text
    assert as_files.status_code == 200, as_files.text
    assert len(as_files.json()) == count
    for sent, answer, again in zip(cells, as_json.json(), as_files.json(), strict=True):
        assert again["image_id"] == answer["image_id"] == image_id_of(decode(sent.png)[1])
        assert again["label"] == answer["label"]
        assert again["defect_probability"] == pytest.approx(answer["defect_probability"], abs=1e-4)
        assert again["model_version"] == answer["model_version"]


def test_a_bad_image_file_in_a_multipart_batch_is_a_400_naming_it(
    bento_server: BentoServer,
) -> None:
    files = [("good.png", CELLS[1].png), ("cut-off.png", CELLS[2].png[:100])]
    answer = inspect_files(bento_server, files)
    assert answer.status_code == 400, answer.text
    error = answer.json()
    assert error["error"] == "invalid_input" and error["fields"] == ["images.1"], error
    assert "cut-off.png" in error["message"] and "truncated" in error["message"], error
    assert inspect_files(bento_server, files[:1]).status_code == 200
    too_many = inspect_files(bento_server, [("cell.png", CELLS[0].png)] * 17)
    assert too_many.status_code == 400 and too_many.json()["fields"] == ["images"], too_many.text
    not_a_file = requests.post(
        f"{bento_server.url}/inspect",
        files=[("images", (None, encoded(CELLS[0].png)))],  # a text part, not a file
        headers=bento_server.headers(),
        timeout=60,
    )
    assert not_a_file.status_code == 400 and "file" in not_a_file.json()["message"]


@pytest.mark.parametrize("content_type", ["image/png", "text/plain", "application/xml"])
def test_a_body_neither_json_nor_multipart_is_refused_as_a_415(
    bento_server: BentoServer, content_type: str
) -> None:
    answer = requests.post(
        f"{bento_server.url}/inspect",
        data=CELLS[0].png,
        headers={**bento_server.headers(), "Content-Type": content_type},
        timeout=60,
    )
    assert answer.status_code == 415, answer.text
    error = answer.json()
    assert error["error"] == "unsupported_media_type" and error["fields"] == ["Content-Type"]
    assert "multipart/form-data" in error["message"], error


def test_a_served_image_is_kept_in_the_image_home_under_its_id(
    served_platform: ServedPlatform, bento_server: BentoServer
) -> None:
    sent = png_bytes(np.flipud(decode(CELLS[11].png)[1]).copy())  # a picture intake never saw
    answers = inspect_files(bento_server, [("flipped.png", sent)]).json()
    image_id = answers[0]["image_id"]
    kept = Path(served_platform.settings.image_uri) / f"{image_id}.png"
    deadline = time.monotonic() + 15
    while not kept.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert kept.exists(), f"{image_id} is not in the image home"
    assert image_id_of(decode(kept.read_bytes())[1]) == image_id
    logged = logged_once_flushed(served_platform, {answers[0]["request_id"]})
    assert json.loads(logged["input"][0])["image_uri"] == str(kept)


def test_an_image_home_that_cannot_be_written_is_warned_of_and_counted_never_fails_the_answer(
    served_platform: ServedPlatform, bento_server: BentoServer
) -> None:
    home = Path(served_platform.settings.image_uri)
    aside = home.with_name(f"{home.name}-aside")
    offset = bento_server.log_path.stat().st_size
    home.rename(aside)
    home.write_text("a file where the image home should be")  # the fault
    try:
        sent = png_bytes(np.fliplr(decode(CELLS[10].png)[1]).copy())
        answer = inspect_files(bento_server, [("mirrored.png", sent)])
        assert answer.status_code == 200, answer.text
        image_id = answer.json()[0]["image_id"]
        deadline, logged = time.monotonic() + 15, ""
        while image_id not in logged and time.monotonic() < deadline:
            time.sleep(0.2)
            logged = bento_server.log_path.read_bytes()[offset:].decode("utf-8", "replace")
        warned = [line for line in logged.splitlines() if image_id in line]
        assert warned and "WARNING" in warned[0] and "not kept" in warned[0], logged[-2000:]
        metrics = requests.get(f"{bento_server.url}/metrics", timeout=10).text
        counted = re.findall(
            r'^mlops_served_images_not_kept_total\{[^}]*reason="write_failed"[^}]*\} (\S+)',
            metrics,
            re.M,
        )
        assert counted and sum(float(c) for c in counted) >= 1, "the lost image was not counted"
    finally:
        home.unlink()
        aside.rename(home)
