"""Open the MLflow UI in headless Chromium and check what a user would look for: the experiment, its newest run and
the run's metric chart (default `train/loss`), drawn. Saves a screenshot. With --overview, it then opens the run's
overview page and checks that it shows the run's description and each --expect text (a metric name, a tag), and
saves that page too: the screenshot a generated project's README shows. Test machinery of the template (used by
tests/test_mlflow_ui.py on a baked project), not part of generated projects.

    python tests/ui/ui_check.py --tracking-uri sqlite:////path/to/project/mlflow.db --experiment forecasting \
        --metric train/loss --screenshot ui-check.png [--overview run.png --expect test/mase --search test/]

With an http:// tracking URI it checks that server's UI; with a SQLite one it serves the store with
`mlflow server` on a free port of 127.0.0.1 for the check, and stops it afterwards. Needs Debian's `chromium`
(apt-get install chromium); the browser is driven over the DevTools protocol with aiohttp, which MLflow installs.
Exits 1 with what was missing, so CI fails when the UI does not show the run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1400,1600",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]
# A chart card holding `metric` whose plot has drawn at least one line; scrolls it into view so it renders.
CHART_DRAWN = """(metric => {
  const cards = [...document.querySelectorAll('[data-testid="experiment-view-compare-runs-card"]')]
    .filter(card => card.innerText.includes(metric));
  cards.forEach(card => { if (!card.querySelector('.js-plotly-plot')) card.scrollIntoView(); });
  return cards.some(card => card.querySelector('.js-plotly-plot .scatterlayer .trace path'));
})(%s)"""

# The query the UI's own links carry in its training ("Model training") view; the GenAI view is its default.
ML_VIEW = "?workflowType=machine_learning"
TRAINING_VIEW = "window.location.href.includes('workflowType=machine_learning')"


class UICheckFailed(Exception):
    """The UI did not show what it should, within the time allowed."""


@dataclass
class Overview:
    """What the run's overview page must show besides its description, and where its screenshot goes."""

    screenshot: Path
    expect: list[str]
    timeout_s: float
    search: str = ""  # typed into the metric search box, so that the screenshot shows those metrics first
    forbid: tuple[str, ...] = ()  # text that must not be on the page (a developer's absolute path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    raise SystemExit("ERROR: no chromium found; install Debian's: sudo apt-get install chromium")


def newest_run(uri: str, experiment: str) -> tuple[str, str, str, str]:
    """(experiment id, run id, run name, description) of the newest finished run of ``experiment``."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise SystemExit(f"ERROR: no experiment {experiment!r} in {uri}; train first: make train TASK={experiment}")
    runs = client.search_runs(
        [found.experiment_id], "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"], max_results=1
    )
    if not runs:
        raise SystemExit(f"ERROR: experiment {experiment!r} has no finished run in {uri}")
    run = runs[0]
    return found.experiment_id, run.info.run_id, run.info.run_name, run.data.tags.get("mlflow.note.content", "")


def wait_for_http(url: str, process: subprocess.Popen | None, timeout_s: float) -> None:
    import requests

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise UICheckFailed(f"the MLflow server exited with code {process.returncode}")
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise UICheckFailed(f"{url} did not answer within {timeout_s:.0f} s")


def stop(process: subprocess.Popen) -> None:
    """Stop a process started in its own session together with its children (the server's workers)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


class Browser:
    """Just enough of the Chrome DevTools protocol: navigate, evaluate JavaScript, take a screenshot."""

    def __init__(self, ws: Any) -> None:
        self.ws, self.last_id = ws, 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.last_id += 1
        await self.ws.send_json({"id": self.last_id, "method": method, "params": params})
        async for message in self.ws:
            reply = json.loads(message.data)
            if reply.get("id") == self.last_id:
                if "error" in reply:
                    raise UICheckFailed(f"{method}: {reply['error']}")
                return reply["result"]
        raise UICheckFailed("the browser closed the connection")

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    async def wait_until(self, expression: str, what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await self.evaluate(expression):
                return
            await asyncio.sleep(0.5)
        raise UICheckFailed(f"the UI did not show {what} within {timeout_s:.0f} s")

    async def screenshot(self, path: Path) -> None:
        shot = await self.call("Page.captureScreenshot", format="png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))


@contextlib.asynccontextmanager
async def opened_browser() -> AsyncIterator[Browser]:
    """Headless Chromium with one page, driven over DevTools; stopped (and its profile removed) afterwards."""
    import aiohttp

    profile = tempfile.mkdtemp(prefix="ui-check-chromium-")
    chromium = subprocess.Popen(
        [find_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and len(port_file.read_text().split()) >= 2):
            if time.monotonic() > deadline or chromium.poll() is not None:
                raise UICheckFailed("chromium did not start its DevTools endpoint")
            await asyncio.sleep(0.2)
        port = port_file.read_text().split()[0]
        async with aiohttp.ClientSession() as session:
            targets = await (await session.get(f"http://127.0.0.1:{port}/json/list")).json()
            page = next(t for t in targets if t["type"] == "page")
            async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                yield Browser(ws)
    finally:
        stop(chromium)
        shutil.rmtree(profile, ignore_errors=True)


async def check_ui(
    uri: str, ui: str, experiment: str, metric: str, screenshot: Path, timeout_s: float, overview: Overview | None
) -> None:
    experiment_id, run_id, run_name, note = newest_run(uri, experiment)
    async with opened_browser() as browser:
        try:
            # the experiment's page as the project links to it (`make mlflow-ui`, a run's first line): in the
            # training view, which MLflow 3.17 keeps per browser (its GenAI view is the default)
            await browser.call("Page.navigate", url=f"{ui}/#/experiments/{experiment_id}{ML_VIEW}")
            text = "document.body.innerText.includes(%s)"
            await browser.wait_until(text % json.dumps(experiment), f"experiment {experiment!r}", timeout_s)
            await browser.wait_until(TRAINING_VIEW, "the training view (not the GenAI one)", timeout_s)
            await browser.wait_until(text % json.dumps(run_name), f"run {run_name!r} in its list", timeout_s)
            if await browser.evaluate(text % json.dumps("Evaluation runs")):
                raise UICheckFailed("the experiment opened with the GenAI sidebar (Evaluation runs)")
            run_page = f"{ui}/#/experiments/{experiment_id}/runs/{run_id}/model-metrics{ML_VIEW}"
            await browser.call("Page.navigate", url=run_page)
            await browser.wait_until(text % json.dumps(run_name), f"the page of run {run_name!r}", timeout_s)
            await browser.wait_until(CHART_DRAWN % json.dumps(metric), f"a drawn {metric} chart", timeout_s)
            print(f"UI check passed: experiment {experiment!r}, run {run_name!r} ({run_id}), {metric} chart")
        finally:
            await browser.screenshot(screenshot)
            print(f"screenshot: {screenshot.resolve()}")
        if overview is not None:
            run = f"{ui}/#/experiments/{experiment_id}/runs/{run_id}{ML_VIEW}"
            await check_overview(browser, run, note, overview)


async def check_overview(browser: Browser, page: str, note: str, overview: Overview) -> None:
    """The run's overview page shows the first line of its description (the command) and each expected text."""
    text = "document.body.innerText.includes(%s)"
    try:
        await browser.call("Page.navigate", url=page)
        first = note.splitlines()[0].strip("`") if note else ""
        for wanted in ([first] if first else []) + overview.expect:
            await browser.wait_until(text % json.dumps(wanted), f"{wanted!r} on the run's overview", overview.timeout_s)
        shown = await browser.evaluate("document.body.innerText")
        found = [text for text in overview.forbid if text in shown]
        if found:
            raise UICheckFailed(f"the run's overview shows {found}")
        # for the screenshot: the MLflow Assistant side panel closed (where it opens), the metric table filtered
        await browser.evaluate("document.querySelector('button[aria-label=\"Close\"]')?.click()")
        if overview.search:
            await browser.evaluate("document.querySelector('input[placeholder=\"Search metrics\"]')?.focus()")
            await browser.call("Input.insertText", text=overview.search)
        await asyncio.sleep(1.0)  # let the metric and tag tables finish drawing
        print(f"UI overview check passed: description and {', '.join(overview.expect) or 'nothing more'}")
    finally:
        await browser.screenshot(overview.screenshot)
        print(f"overview screenshot: {overview.screenshot.resolve()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", required=True, help="the store to serve (sqlite:///...) or a server's URL")
    parser.add_argument("--experiment", default="forecasting", help="experiment (task) whose newest run is checked")
    parser.add_argument("--metric", default="train/loss", help="metric whose chart must be drawn")
    parser.add_argument("--screenshot", type=Path, default=Path("ui-check.png"))
    parser.add_argument("--timeout", type=float, default=180, help="seconds allowed for each thing to appear")
    parser.add_argument("--overview", type=Path, help="also check the run's overview page; its screenshot goes here")
    parser.add_argument("--expect", action="append", default=[], help="text the overview must show (repeatable)")
    parser.add_argument("--forbid", action="append", default=[], help="text the overview must not show (repeatable)")
    parser.add_argument("--search", default="", help="filter the overview's metric table for its screenshot: test/")
    args = parser.parse_args()
    overview = Overview(args.overview, args.expect, args.timeout, args.search, tuple(args.forbid))
    overview = overview if args.overview else None
    ui = args.tracking_uri
    try:
        with served(args.tracking_uri, args.timeout) as ui:
            asyncio.run(check_ui(args.tracking_uri, ui, args.experiment, args.metric, args.screenshot, args.timeout,
                                 overview))  # fmt: skip
    except UICheckFailed as error:
        raise SystemExit(f"ERROR: UI check failed at {ui}: {error}") from None


@contextlib.contextmanager
def served(uri: str, timeout_s: float) -> Iterator[str]:
    """The UI of ``uri``: a server's own, or `mlflow server` on a SQLite store on a free port (stopped after)."""
    if uri.startswith(("http://", "https://")):
        wait_for_http(f"{uri.rstrip('/')}/health", None, timeout_s)
        yield uri.rstrip("/")
        return
    port = free_port()
    ui = f"http://127.0.0.1:{port}"
    mlflow = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--workers", "1"]
    server = subprocess.Popen(
        [*mlflow, "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},  # GenAI job workers: not needed
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_http(f"{ui}/health", server, timeout_s)
        yield ui
    finally:
        stop(server)


if __name__ == "__main__":
    main()
