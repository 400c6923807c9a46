"""Headless Chromium driven over the DevTools protocol, enough to load a page and read it."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import tempfile
from typing import Any

import aiohttp

# Flags for a closed network: without them Chromium keeps dialing out and waiting for answers.
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--remote-debugging-port=0", "about:blank")


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        await self._ws.send_json({"id": call_id, "method": method, "params": params})
        async for message in self._ws:
            data = json.loads(message.data)
            if data.get("id") == call_id:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                return dict(data.get("result", {}))
        raise RuntimeError("the browser closed the connection")

    async def goto(self, url: str) -> None:
        await self.call("Page.navigate", url=url)

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")


class Browser:
    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._profile = tempfile.TemporaryDirectory(prefix="chromium-")
        self._http = aiohttp.ClientSession()
        self._base = ""

    async def start(self, executable: str) -> Browser:
        self._proc = await asyncio.create_subprocess_exec(
            executable, *FLAGS, f"--user-data-dir={self._profile.name}",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        assert self._proc.stderr is not None
        while True:
            line = (await asyncio.wait_for(self._proc.stderr.readline(), 30)).decode()
            if not line:
                raise RuntimeError("chromium exited before it listened")
            if "DevTools listening on ws://" in line:
                port = line.split("ws://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]
                self._base = f"http://127.0.0.1:{port}"
                return self

    async def new_page(self) -> Page:
        async with self._http.put(f"{self._base}/json/new?about:blank") as response:
            target = await response.json()
        ws = await self._http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        return Page(ws)

    async def close(self) -> None:
        await self._http.close()
        if self._proc and self._proc.returncode is None:
            self._proc.terminate()
            await asyncio.wait_for(self._proc.wait(), 10)
        self._profile.cleanup()
