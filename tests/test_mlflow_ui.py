"""The MLflow UI in a real browser (issue 17): a small sweep through the real CLI into a sqlite store, served by
``mlflow server`` on 127.0.0.1, rendered by headless Chromium (Debian's ``chromium``, ENVIRONMENT.md section 7;
driven by tests/browser.py). What a user sees is checked in the rendered DOM: the runs view lists the sweep's
runs, a run's metric charts are there by name, and its artifacts (config.yaml, fit.log, the completion table)
open.

MLflow 3.x opens an experiment on its GenAI page whatever the experiment's tags say: the view comes from the
"GenAI / Model training" switch (kept in the browser's localStorage) or the URL's ``workflowType``. The pages
below carry ``workflowType=machine_learning``, as docs/quickstart.md tells users to.

Screenshots go to the test's folder; with ``LIT_NASH_SCREENSHOTS=<dir>`` they are copied there too (the ones in
docs/images/ were made so: ``LIT_NASH_SCREENSHOTS=docs/images pytest -m slow tests/test_mlflow_ui.py``).
Without chromium the test is skipped: ``apt-get install -y chromium``."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from .browser import EXECUTABLE, Chromium
from .cli import run_cli

ML = "workflowType=machine_learning"  # the runs view, not the GenAI page
# the assistant's side panel takes a third of every page: closed before a screenshot
CLOSE_ASSISTANT = """[...document.querySelectorAll('button[aria-label="Close"]')].filter(b => {
  for (let e = b, i = 0; e && i < 8; e = e.parentElement, i++) if (e.textContent.includes('MLflow Assistant')) return true;
  return false; }).forEach(b => b.click())"""

pytestmark = [
    pytest.mark.slow,  # a sweep, a server start and six pages: over a minute on a 2-core box
    pytest.mark.skipif(EXECUTABLE is None, reason="chromium is not installed (apt-get install -y chromium; "
                                                  "ENVIRONMENT.md section 7): the MLflow UI test needs a browser"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(server: subprocess.Popen, url: str, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow server exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"mlflow server did not answer at {url} within {timeout:.0f}s:\n{log.read_text()[-3000:]}")


def stop(server: subprocess.Popen) -> None:
    """The server and what it started (its own session): SIGTERM, then SIGKILL."""
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=15)


def shown(browser: Chromium, url: str, needles: list[str], shot: Path | None = None, height: int = 1000) -> str:
    """The page's DOM once every needle is in it (each asserted), and its screenshot if ``shot``."""
    html = browser.open(url, needles, height=height)
    missing = [n for n in needles if n not in html]
    assert not missing, (url, "does not show", missing)
    if shot is not None:
        browser.evaluate(CLOSE_ASSISTANT)
        time.sleep(1.5)  # the charts resize into the freed width
        browser.screenshot(shot)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000, shot
    return html


def test_the_mlflow_ui_shows_a_sweeps_runs_charts_and_artifacts(tmp_path):
    out = run_cli("fit", "-m", "algo=mpo,comal", "trainer.max_steps=200", "eval.every_n_steps=50",
                  "trainer.enable_progress_bar=false", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("lit_nash").experiment_id
    runs = {r.data.tags["algo"]: r for r in client.search_runs([experiment])}
    assert sorted(runs) == ["comal", "mpo"]

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "mlflow-server.log"
    with open(log, "w") as sink:
        server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
                                   "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                  cwd=tmp_path, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_up(server, base, log)
        browser = Chromium(tmp_path / "chromium-profile")
        shots = tmp_path / "screenshots"
        shots.mkdir()
        try:
            mpo = runs["mpo"]
            # (a) the experiment's runs view: both runs of the sweep, by name; its charts compare them
            page = f"{base}/#/experiments/{experiment}/runs?{ML}"
            shown(browser, page, [r.info.run_name for r in runs.values()] + ["matching runs"], shots / "mlflow_runs.png")
            shown(browser, f"{page}&compareRunsMode=CHART", ['title="game/duality_gap"'], shots / "mlflow_runs_charts.png",
                  height=1400)
            # (b) one run's metric charts, each by its full name
            run_page = f"{base}/#/experiments/{experiment}/runs/{mpo.info.run_id}"
            charts = [f'title="{m}"' for m in ("game/duality_gap", "game/exploitability", "train/loss", "eval/win_rate_vs_ref")]
            shown(browser, f"{run_page}/model-metrics?{ML}", [mpo.info.run_name, *charts], shots / "mlflow_run_metrics.png",
                  height=2200)
            # (c) its artifacts: the file tree and the resolved config's text; the completion table; the log file
            tree = ["config.yaml", "fit.log", "completions.json", "checkpoints"]
            shown(browser, f"{run_page}/artifacts/config.yaml?{ML}", [*tree, "magnet_every", "lit_nash.algorithms.mpo.MPO"],
                  shots / "mlflow_run_config.png")
            columns = [f">{c}<" for c in ("prompt", "opponent", "policy_response", "valid")]
            shown(browser, f"{run_page}/artifacts/completions.json?{ML}", columns, shots / "mlflow_run_completions.png")
            shown(browser, f"{run_page}/artifacts/fit.log?{ML}", ["lit_nash fit: mpo on comal_cycle (seed 0), 200 steps"])
        finally:
            browser.close()
    finally:
        stop(server)
    assert server.returncode is not None

    if os.environ.get("LIT_NASH_SCREENSHOTS"):
        target = Path(os.environ["LIT_NASH_SCREENSHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        for shot in sorted(shots.glob("*.png")):
            shutil.copy(shot, target / shot.name)
