"""The annotation page in a real headless Chromium (Debian's `chromium`, driven by Playwright).

Signs in, picks a queue, waits for the task's plots, checks the canvases hold drawn data, answers
with a key press and gets the next task. A screenshot is saved in the test's tmp folder and in
`.michi/test-artifacts/annotation.png`. Skipped only when Chromium is missing outside CI.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import struct
import zlib
from pathlib import Path

import pytest

from michi.blobs import BlobStore, media_key
from services.annotation.domain.roles import Role
from services.annotation.wiring import build_app
from services.ingest.adapters.archive import BlobUploadArchive

from .annotation_support import RecordingPublisher, make_request, make_upload, serving, settings_for, wire

CHROMIUM = os.environ.get("MICHI_TEST_CHROMIUM", "/usr/bin/chromium")
PASSWORD = "a long enough password"
ARTIFACTS = Path(__file__).resolve().parents[2] / ".michi" / "test-artifacts"

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("CI"),
    reason=f"no Chromium at {CHROMIUM} (apt-get install chromium); required in CI",
)


def _png(width: int = 64, height: int = 36) -> bytes:
    """A small valid PNG (a grey road under a blue sky)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(
        b"\x00" + (bytes((90, 150, 230)) if row < height // 2 else bytes((110, 110, 110))) * width
        for row in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_sign_in_see_the_plots_answer_with_a_key_and_get_the_next_task(tmp_path: Path, redis_url: str) -> None:
    from playwright.sync_api import sync_playwright

    publisher = RecordingPublisher()
    settings = settings_for(tmp_path, redis_url)
    wiring = wire(settings, publisher=publisher)
    wiring.accounts.add("ann-1", Role.ANNOTATOR, actor="test", password=PASSWORD)
    blobs = BlobStore(settings.resolved_blob_url())
    task_ids = []
    for index in range(2):
        upload = make_upload(media=("front.png",))
        canonical = upload.SerializeToString(deterministic=True)
        asyncio.run(BlobUploadArchive(blobs).store(upload, canonical, hashlib.sha256(canonical).hexdigest()))
        asyncio.run(blobs.put_bytes(media_key(upload.device_id, upload.upload_id, "front.png"), _png()))
        request = make_request(
            f"browser-{index}", upload=upload, window_offset_s=4.0, window_s=2.0, priority=90 - index
        )
        wiring.service.intake(request)
        task_ids.append(request.lineage.window_id)

    with serving(build_app(settings, wiring=wiring)) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url + "/")
            page.fill("#name", "ann-1")
            page.fill("#password", PASSWORD)
            page.click("#sign-in")
            page.click("button[data-queue='uncertain']")
            page.wait_for_selector(f"body[data-state='ready'][data-task-id='{task_ids[0]}']", timeout=20_000)

            assert int(page.get_attribute("body", "data-points") or 0) > 300
            assert page.inner_text("#suggestion") == "harsh-braking"
            inked = page.evaluate(
                """(ids) => ids.map((id) => {
                    const canvas = document.getElementById(id);
                    const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
                    let blue = 0, inked = 0;
                    for (let i = 0; i < pixels.length; i += 4) {
                        if (pixels[i + 3] > 0) inked++;
                        if (pixels[i + 3] > 0 && pixels[i + 2] > 180 && pixels[i] < 90) blue++;
                    }
                    return [inked, blue];
                })""",
                ["plot-accel", "plot-gyro", "plot-speed", "plot-track"],
            )
            for name, (inked_pixels, blue_pixels) in zip(("accel", "gyro", "speed", "track"), inked, strict=True):
                assert inked_pixels > 500, f"{name} plot is empty"
                assert blue_pixels > 50, f"{name} plot has no data line"
            page.wait_for_selector("#frames img", timeout=10_000)
            assert page.evaluate("document.querySelector('#frames img').naturalWidth") == 64

            screenshot = tmp_path / "annotation.png"
            page.screenshot(path=str(screenshot), full_page=True)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shutil.copy(screenshot, ARTIFACTS / "annotation.png")

            page.keyboard.press("2")
            page.wait_for_selector(f"body[data-state='ready'][data-task-id='{task_ids[1]}']", timeout=20_000)
            [vote] = wiring.store.votes_of(task_ids[0])
            assert (vote.annotator, vote.event_type, vote.counted) == ("ann-1", 2, True)
            page.wait_for_function("document.querySelector('#my-stats').innerText.includes('1')", timeout=10_000)
        finally:
            browser.close()


def test_a_camera_review_shows_the_evidence_frames_and_its_answer_becomes_the_label(
    tmp_path: Path, redis_url: str
) -> None:
    """The real astronaut image (the vision models' test image) as an inward clip: the strip of its evidence frames,
    the camera answers only, and key 7 (drowsiness) confirming the detection as the published label."""
    import numpy as np
    from playwright.sync_api import sync_playwright

    from michi.contracts.v1 import common_pb2, labels_pb2
    from michi.vision.images import read_image
    from michi.vision.model_store import VisionModelsMissing, VisionModelStore

    from .test_annotation_frames import camera_request, clip

    try:
        face = read_image(VisionModelStore().path("images/astronaut.png"))
    except VisionModelsMissing as error:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"{error} (.ci/run builds them)")
    height, width = (face.shape[0] // 2) * 2, (face.shape[1] // 2) * 2
    # Twelve frames at 5 fps, the face drifting right by 4 px a frame (so each frame is its own picture).
    pictures = [np.ascontiguousarray(np.roll(face[:height, :width], 4 * index, axis=1)) for index in range(12)]
    publisher = RecordingPublisher()
    settings = settings_for(tmp_path, redis_url, annotation_votes_required=1, annotation_min_support_weight=0.5)
    wiring = wire(settings, publisher=publisher)
    wiring.accounts.add("ann-1", Role.ANNOTATOR, actor="test", password=PASSWORD)
    blobs = BlobStore(settings.resolved_blob_url())
    evidence = [200 * index for index in range(12)]
    request = camera_request(blobs, clip(pictures), evidence)
    wiring.service.intake(request)
    task_id = request.lineage.window_id

    with serving(build_app(settings, wiring=wiring)) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.goto(url + "/")
            page.fill("#name", "ann-1")
            page.fill("#password", PASSWORD)
            page.click("#sign-in")
            page.click("button[data-queue='camera-review']")
            page.wait_for_selector(f"body[data-state='ready'][data-task-id='{task_id}']", timeout=30_000)
            assert page.get_attribute("body", "data-frames") == "12"
            assert page.inner_text("#suggestion") == "drowsiness"
            answers = page.eval_on_selector_all("#answers button", "buttons => buttons.map(b => b.dataset.answer)")
            assert answers == ["normal", "distraction", "drowsiness", "tailgating"]
            # Each frame is the face as decoded from the clip: full size, not flat, and the frames differ.
            looks = page.evaluate(
                """() => [...document.querySelectorAll('#evidence img')].map((image) => {
                    const canvas = document.createElement('canvas');
                    canvas.width = image.naturalWidth; canvas.height = image.naturalHeight;
                    const context = canvas.getContext('2d'); context.drawImage(image, 0, 0);
                    const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
                    let sum = 0, squares = 0, column = 0;
                    for (let i = 0; i < pixels.length; i += 4) { sum += pixels[i]; squares += pixels[i] * pixels[i]; }
                    for (let y = 0; y < canvas.height; y++) column += pixels[(y * canvas.width + 40) * 4];
                    const count = pixels.length / 4, mean = sum / count;
                    return [image.naturalWidth, image.naturalHeight, Math.sqrt(squares / count - mean * mean), column];
                })"""
            )
            assert len(looks) == 12
            for natural_width, natural_height, spread, _ in looks:
                assert (natural_width, natural_height) == (width, height)
                assert spread > 30, "a frame is flat, not the face"
            assert len({column for *_, column in looks}) > 6, "the strip repeats one frame"
            assert not [error for error in errors if "Content Security Policy" in error]

            screenshot = tmp_path / "annotation-camera.png"
            page.screenshot(path=str(screenshot), full_page=True)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shutil.copy(screenshot, ARTIFACTS / "annotation-camera.png")

            page.keyboard.press("2")  # harsh braking is no answer for a camera task: nothing happens
            page.keyboard.press("7")
            page.wait_for_selector("body[data-state='idle']", timeout=20_000)
        finally:
            browser.close()
    [label] = publisher.by_window()[task_id]
    assert label.event_type == common_pb2.EVENT_TYPE_DROWSINESS
    assert label.detection_event_id == request.detection_event_id
    assert list(label.request_reasons) == [labels_pb2.LABEL_REASON_CAMERA_REVIEW]
    [vote] = wiring.store.votes_of(task_id)
    assert (vote.annotator, vote.event_type) == ("ann-1", common_pb2.EVENT_TYPE_DROWSINESS)


def test_the_leads_dispute_list_offers_each_task_only_the_answers_that_fit_it(tmp_path: Path, redis_url: str) -> None:
    """A disputed camera review and a disputed motion window: each one's select offers the answers the server
    accepts for its kind (the dispute's `answers`), and deciding the camera one from the page publishes its label."""
    import numpy as np
    from playwright.sync_api import sync_playwright

    from michi.contracts.v1 import common_pb2

    from .annotation_support import principal
    from .test_annotation_frames import camera_request, clip

    publisher = RecordingPublisher()
    settings = settings_for(tmp_path, redis_url)
    wiring = wire(settings, publisher=publisher)
    wiring.accounts.add("lead-1", Role.LEAD, actor="test", password=PASSWORD)
    blobs = BlobStore(settings.resolved_blob_url())
    grey = [np.full((48, 64, 3), 40 * index, np.uint8) for index in range(4)]
    camera = camera_request(blobs, clip(grey), [0, 400], suggested=common_pb2.EVENT_TYPE_TAILGATING)
    wiring.service.intake(camera)
    wiring.service.intake(make_request("motion-window"))
    for queue, answers in (
        ("camera-review", ("normal", "distraction", "tailgating")),
        ("uncertain", ("normal", "harsh-braking", "confounder")),
    ):
        for index, answer in enumerate(answers):
            who = principal(f"ann-{index}")
            view = wiring.service.lease(who, queue)
            assert view is not None
            wiring.service.submit(who, view.task_id, view.lease_id, answer)
    camera_id = camera.lineage.window_id

    with serving(build_app(settings, wiring=wiring)) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url + "/")
            page.fill("#name", "lead-1")
            page.fill("#password", PASSWORD)
            page.click("#sign-in")
            page.click("#nav-lead")
            page.wait_for_selector("#disputes select[data-kind='camera']", timeout=20_000)
            page.wait_for_selector("#disputes select[data-kind='motion']", timeout=20_000)
            offered = page.evaluate(
                """() => Object.fromEntries([...document.querySelectorAll('#disputes select')].map((select) =>
                    [select.dataset.kind, [[...select.options].map((option) => option.value), select.value]]))"""
            )
            assert offered == {
                "camera": [["normal", "distraction", "drowsiness", "tailgating"], "tailgating"],
                "motion": [
                    ["normal", "harsh-braking", "harsh-acceleration", "harsh-cornering", "confounder"],
                    "harsh-braking",
                ],
            }
            page.select_option("#disputes select[data-kind='camera']", "normal")
            page.click("#disputes .row:has(select[data-kind='camera']) button")
            page.wait_for_selector("#disputes select[data-kind='camera']", state="detached", timeout=20_000)
            assert page.eval_on_selector_all("#disputes select", "selects => selects.length") == 1
        finally:
            browser.close()
    [label] = publisher.by_window()[camera_id]
    assert label.event_type == common_pb2.EVENT_TYPE_NORMAL
    assert label.detection_event_id == camera.detection_event_id
