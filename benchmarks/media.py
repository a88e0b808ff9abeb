"""Media uploads of the ingest benchmark: a 10 MiB clip PUT, its speed and ingest's peak memory.

`PUT /v1/uploads/{upload_id}/media/{name}` streams the body to the blob store in bounded blocks,
hashing as it goes; the issue's bound is a peak under 50 MB per process for a 10 MB clip. The
baseline, in the same run and on the same disk, is the least that job can cost: the same 64 KiB
blocks hashed with sha256 and written to a temporary file renamed into place, in one Python loop.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

BLOCK_BYTES = 64 * 1024
CLIP_BLOCKS = 160  # 10 MiB
MEBIBYTE = 1024 * 1024


@dataclass
class MediaFigures:
    clip_bytes: int
    put_seconds: list[float] = field(default_factory=list)
    baseline_seconds: list[float] = field(default_factory=list)
    resident_before_kib: int = 0
    peak_kib: int = 0
    # Whether the process' peak was reset to its current size before the clips (else: its peak so far).
    peak_reset: bool = False

    @property
    def growth_mib(self) -> float:
        return (self.peak_kib - self.resident_before_kib) / 1024

    @staticmethod
    def rate_mib_s(seconds: list[float], size: int) -> float:
        return size * len(seconds) / sum(seconds) / MEBIBYTE if seconds else 0.0


def _status_kib(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field_name} in /proc/{pid}/status")


def _reset_peak(pid: int) -> bool:
    """Reset the peak resident size (VmHWM) to the current one (Linux: `5` into clear_refs)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _put_clip(client: httpx.Client, token: str, upload_id: str, block: bytes, blocks: int) -> float:
    digest = hashlib.sha256()
    for _ in range(blocks):
        digest.update(block)

    def body() -> Iterator[bytes]:
        for _ in range(blocks):
            yield block

    started = time.perf_counter()
    response = client.put(
        f"/v1/uploads/{upload_id}/media/clip.mp4",
        content=body(),
        headers={
            "authorization": f"Bearer {token}",
            "content-type": "video/mp4",
            "content-length": str(len(block) * blocks),
            "x-content-sha256": digest.hexdigest(),
        },
    )
    elapsed = time.perf_counter() - started
    if response.status_code != 201:
        raise RuntimeError(f"media PUT answered {response.status_code}: {response.text[:300]}")
    return elapsed


def _write_baseline(folder: Path, index: int, block: bytes, blocks: int) -> float:
    started = time.perf_counter()
    digest = hashlib.sha256()
    temporary, final = folder / f".clip-{index}.tmp", folder / f"clip-{index}.mp4"
    with temporary.open("wb") as output:
        for _ in range(blocks):
            digest.update(block)
            output.write(block)
    os.replace(temporary, final)
    digest.hexdigest()
    return time.perf_counter() - started


def measure_media(base_url: str, token: str, pid: int, folder: Path, *, clips: int) -> MediaFigures:
    """`clips` 10 MiB clips PUT one after another to the ingest process `pid`, then the baseline."""
    block = os.urandom(BLOCK_BYTES)
    figures = MediaFigures(clip_bytes=BLOCK_BYTES * CLIP_BLOCKS)
    with httpx.Client(base_url=base_url, timeout=60) as client:
        # Warm-up: the media path's imports, thread pool and buffers exist before the baseline.
        _put_clip(client, token, "bench-media-warm-up", block, 16)
        figures.peak_reset = _reset_peak(pid)
        figures.resident_before_kib = _status_kib(pid, "VmRSS" if figures.peak_reset else "VmHWM")
        for index in range(clips):
            figures.put_seconds.append(_put_clip(client, token, f"bench-media-{index}", block, CLIP_BLOCKS))
        figures.peak_kib = _status_kib(pid, "VmHWM")
    folder.mkdir(parents=True, exist_ok=True)
    figures.baseline_seconds = [_write_baseline(folder, index, block, CLIP_BLOCKS) for index in range(clips)]
    return figures
