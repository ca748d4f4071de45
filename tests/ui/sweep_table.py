"""Open an experiment's table of runs in headless Chromium with its sweeps' parent runs expanded, check that each
sweep's trials show nested under it, and save a screenshot of the table: the picture of the generated README's
"Tune" section. Test machinery of the template (ui_check.py's browser and server), not part of generated projects.

    python tests/ui/sweep_table.py --tracking-uri sqlite:////path/to/project/mlflow.db --experiment forecasting \
        --screenshot sweep.png [--column val/loss --column -Dataset --forbid /path/to/project --forbid "$USER"]

Exits 1 with what was missing: a sweep's parent run, a trial not under it, a forbidden text on the page.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
from pathlib import Path

from ui_check import ML_VIEW, Browser, UICheckFailed, opened_browser, served

EXPANDERS = "button[data-component-id*='runnamecellrenderer']"  # the +/- beside a parent run's name
# A column of the "Columns" menu, named as it shows it, switched on (true) or off (false); null if not there.
TOGGLE_COLUMN = """(([name, on]) => {
  const node = [...document.querySelectorAll('.du-bois-light-tree-treenode')]
    .find(n => n.querySelector('span[title=' + JSON.stringify(name) + ']'));
  if (!node) return null;
  const box = node.querySelector('.du-bois-light-tree-checkbox');
  if (box.classList.contains('du-bois-light-tree-checkbox-checked') !== on) box.click();
  return true;
})(%s)"""
# The middle of the resize handle of the header cell named so (null if none): dragging it widens the column.
RESIZE_HANDLE = """(name => {
  const cell = [...document.querySelectorAll('.ag-header-cell')].find(c => c.innerText.trim() === name);
  const handle = cell && cell.querySelector('.ag-header-cell-resize');
  if (!handle) return null;
  const r = handle.getBoundingClientRect();
  return [r.x + 2, r.y + r.height / 2];  // its left part: the next header overlaps the rest
})(%s)"""
# The table's "Show more columns" button, hidden: the picture is of runs.
HIDE_MORE_COLUMNS = """[...document.querySelectorAll('button')].filter(b => b.innerText.includes('Show more columns'))
  .forEach(b => { b.style.visibility = 'hidden'; })"""
WIDER = {"Run Name": 110, "val/loss": 30, "sweep.state": 50}  # pixels more than the table gives: whole names
# The bottom-right corner of what the table shows (its last row, its last column, a button above it that it cuts
# through), in page pixels.
TABLE_EXTENT = """(() => {
  const boxes = [...document.querySelectorAll('.ag-row, .ag-header-cell')].map(e => e.getBoundingClientRect());
  let right = Math.max(...boxes.map(b => b.right));
  const cut = [...document.querySelectorAll('main button, button')].map(e => e.getBoundingClientRect())
    .filter(b => b.left < right && b.right > right && b.bottom < boxes[0].top + 200);
  right = Math.max(right, ...cut.map(b => b.right));
  return [right, Math.max(...boxes.map(b => b.bottom))].map(Math.ceil);
})()"""


def sweeps(uri: str, experiment: str) -> tuple[str, dict[str, list[str]]]:
    """The experiment's id and, for each of its sweeps' parent runs (by name), its child runs' names."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise SystemExit(f"ERROR: no experiment {experiment!r} in {uri}")
    runs = client.search_runs([found.experiment_id], max_results=1000)
    parents = {r.info.run_id: r.info.run_name for r in runs if "sweep.name" in r.data.tags and not _parent(r)}
    if not parents:
        raise SystemExit(f"ERROR: experiment {experiment!r} has no sweep: make sweep first")
    nested = {name: sorted(r.info.run_name for r in runs if _parent(r) == i) for i, name in parents.items()}
    return found.experiment_id, nested


def _parent(run) -> str | None:
    return run.data.tags.get("mlflow.parentRunId")


async def check_table(
    browser: Browser, page: str, nested: dict[str, list[str]], columns: list[str], forbid: list[str], timeout_s: float
) -> None:
    text = "document.body.innerText.includes(%s)"
    await browser.call("Page.navigate", url=page)
    for parent in nested:
        await browser.wait_until(text % json.dumps(parent), f"sweep run {parent!r}", timeout_s)
    await browser.evaluate("document.querySelector('button[aria-label=\"Close\"]')?.click()")  # the Assistant panel
    await browser.evaluate(f"document.querySelectorAll({json.dumps(EXPANDERS)}).forEach(b => b.click())")
    for parent, children in nested.items():
        for child in children:
            await browser.wait_until(text % json.dumps(child), f"trial run {child!r} under {parent!r}", timeout_s)
    if columns:
        await browser.evaluate("[...document.querySelectorAll('button')].find(b => b.innerText.trim() === 'Columns')"
                               ".click()")  # fmt: skip
        await asyncio.sleep(1.0)
        for column in columns:
            name, on = column.removeprefix("-"), not column.startswith("-")
            if await browser.evaluate(TOGGLE_COLUMN % json.dumps([name, on])) is None:
                raise UICheckFailed(f"the Columns menu has no column {name!r}")
            await asyncio.sleep(0.3)
        await browser.call("Input.dispatchKeyEvent", type="keyDown", key="Escape", code="Escape")
    await asyncio.sleep(1.5)  # the table redraws with its columns
    for name, extra in WIDER.items():
        await widen(browser, name, extra)
    await browser.evaluate("document.activeElement?.blur()")
    await browser.evaluate(HIDE_MORE_COLUMNS)
    shown = await browser.evaluate("document.body.innerText")
    found = [t for t in forbid if t and t in shown]
    if found:
        raise UICheckFailed(f"the table of runs shows {found}")
    trials = sum(len(c) for c in nested.values())
    print(f"Sweep table check passed: {len(nested)} sweep(s), {trials} trial run(s) nested under them")


async def widen(browser: Browser, column: str, pixels: int) -> None:
    """Drag the right edge of ``column``'s header ``pixels`` to the right (nothing if the table has no such column)."""
    handle = await browser.evaluate(RESIZE_HANDLE % json.dumps(column))
    if handle is None:
        return
    x, y = handle
    mouse = {"button": "left", "buttons": 1, "y": y}  # held down while it moves: a drag
    await browser.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
    await browser.call("Input.dispatchMouseEvent", type="mousePressed", x=x, clickCount=1, **mouse)
    for step in range(1, 11):
        await browser.call("Input.dispatchMouseEvent", type="mouseMoved", x=x + pixels * step / 10, **mouse)
    await browser.call("Input.dispatchMouseEvent", type="mouseReleased", x=x + pixels, clickCount=1, **mouse)
    await asyncio.sleep(0.3)


async def screenshot(browser: Browser, path: Path) -> None:
    """The page from its top left to the bottom right of the table of runs."""
    right, bottom = await browser.evaluate(TABLE_EXTENT)
    width = await browser.evaluate("document.documentElement.clientWidth")
    clip = {"x": 0, "y": 0, "width": min(right + 24, width), "height": min(bottom + 24, 1600), "scale": 1}
    shot = await browser.call("Page.captureScreenshot", format="png", clip=clip)
    path.write_bytes(base64.b64decode(shot["data"]))
    print(f"screenshot: {path.resolve()}")


async def run(uri: str, ui: str, experiment: str, args: argparse.Namespace) -> None:
    experiment_id, nested = sweeps(uri, experiment)
    async with opened_browser() as browser:
        try:
            page = f"{ui}/#/experiments/{experiment_id}{ML_VIEW}"
            await check_table(browser, page, nested, args.column, args.forbid, args.timeout)
        finally:
            await screenshot(browser, args.screenshot)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", required=True, help="the store to serve (sqlite:///...) or a server's URL")
    parser.add_argument("--experiment", default="forecasting")
    parser.add_argument("--screenshot", type=Path, default=Path("sweep-table.png"))
    parser.add_argument("--timeout", type=float, default=180, help="seconds allowed for each thing to appear")
    parser.add_argument("--column", action="append", default=[], help="show a column (-name hides it); repeatable")
    parser.add_argument("--forbid", action="append", default=[], help="text the page must not show (repeatable)")
    args = parser.parse_args()
    ui = args.tracking_uri
    try:
        with served(args.tracking_uri, args.timeout) as ui:
            asyncio.run(run(args.tracking_uri, ui, args.experiment, args))
    except UICheckFailed as error:
        raise SystemExit(f"ERROR: sweep table check failed at {ui}: {error}") from None


if __name__ == "__main__":
    main()
