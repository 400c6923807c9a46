"""The services' event loop runner sets up the garbage collector before anything else runs."""

from __future__ import annotations

import json
import subprocess
import sys

from service_runtime import loop

PROBE = """
import gc, json
from service_runtime import loop

async def main():
    return {"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count()}

print(json.dumps(loop.run(main())))
"""


def test_run_collects_less_often_and_leaves_startup_objects_out_of_full_collections() -> None:
    # In a process of its own: freezing and thresholds are process-wide.
    out = subprocess.run([sys.executable, "-c", PROBE], check=True, capture_output=True, text=True).stdout
    seen = json.loads(out)
    assert seen["threshold"] == [loop.YOUNG_THRESHOLD, loop.OLDER_THRESHOLD, loop.OLDER_THRESHOLD]
    assert seen["threshold"][0] > 700  # above Python's default
    assert seen["frozen"] > 1000  # the imported modules' objects at least
