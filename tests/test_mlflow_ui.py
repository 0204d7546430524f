"""The MLflow UI in a real browser (issues 17 and 26): a 2-algorithm × 2-seed sweep and an eval through the real
CLI into a sqlite store, served by ``mlflow server`` on 127.0.0.1, rendered by headless Chromium (Debian's
``chromium``, ENVIRONMENT.md section 7; driven by tests/browser.py). What a user sees is checked in the rendered
DOM: the sweep's run with its ranking, table and curves; the saved view of the runs (grouped by algorithm, the
summary metrics as columns, the gaps on log axes); a run's metric charts, system metrics and artifacts; the
evaluation's head-to-head charts and table.

MLflow 3.x opens an experiment on its GenAI page whatever the experiment's tags say: the view comes from the
"GenAI / Model training" switch (kept in the browser's localStorage) or the URL's ``workflowType``. The pages
below carry ``workflowType=machine_learning``, as docs/quickstart.md tells users to.

Screenshots go to the test's folder; with ``LIT_NASH_SCREENSHOTS=<dir>`` they are copied there too (the ones in
docs/images/ were made so: ``LIT_NASH_SCREENSHOTS=docs/images pytest -m slow tests/test_mlflow_ui.py``).
Without chromium the test is skipped: ``apt-get install -y chromium``."""

import json
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
    pytest.mark.slow,  # a sweep, an eval, a server start and fifteen pages: minutes on a 2-core box
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
        snap(browser, shot)
    return html


def click(browser: Chromium, text: str) -> None:
    """A real mouse click (MLflow's menus open on pointer events, not on a scripted click()) on the first button or
    menu item whose text is ``text``."""
    found = browser.evaluate(
        "JSON.stringify([...document.querySelectorAll('button, [role=menuitem], [role=menuitemradio], [role=option]')]"
        f".filter(x => x.textContent.trim() == {json.dumps(text)}).map(x => {{const r = x.getBoundingClientRect(); "
        "return [r.x + r.width / 2, r.y + r.height / 2]})[0] || null)")
    xy = json.loads(found)
    assert xy, f"no button or menu item {text!r} on the page"
    for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
        browser.tab("Input.dispatchMouseEvent", type=kind, x=xy[0], y=xy[1], button="left", clickCount=1)


def wait_for(browser: Chromium, needles: list[str], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        html = browser.html()
        if all(n in html for n in needles) or time.monotonic() > deadline:
            missing = [n for n in needles if n not in html]
            assert not missing, ("the page does not show", missing)
            return html
        time.sleep(0.5)


def snap(browser: Chromium, shot: Path) -> None:
    browser.evaluate(CLOSE_ASSISTANT)
    time.sleep(1.5)  # the charts resize into the freed width
    browser.screenshot(shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000, shot


def test_the_mlflow_ui_answers_which_algorithm_converged_and_which_won(tmp_path):
    """Issue 26, on a 2-algorithm × 2-seed sweep in sampled play and an eval of its seed-0 policies: the sweep is
    one run with its jobs nested, whose page shows the ranking, the table and the curves; the experiment's
    saved view (its Views menu) lists the runs grouped by algorithm with the summary metrics as columns and
    draws the gaps on log axes; a run has its metric charts, its system metrics and its artifacts; the
    evaluation's head-to-head metrics render as charts and its pairs as a table."""
    out = run_cli("fit", "-m", "algo=mpo,comal", "seed=0,1", "rollout=sampled", "trainer.max_steps=200",
                  "eval.every_n_steps=50", "trainer.enable_progress_bar=false", cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    out = run_cli("eval", "filter=\"tags.seed = '0'\"", "samples=32", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("lit_nash").experiment_id
    evals = client.get_experiment_by_name("lit_nash_eval").experiment_id
    (parent,) = client.search_runs([experiment], "tags.command = 'sweep'")
    runs = {(r.data.tags["algo"], r.data.tags["seed"]): r for r in client.search_runs([experiment], "tags.algo != ''")}
    assert sorted(runs) == [("comal", "0"), ("comal", "1"), ("mpo", "0"), ("mpo", "1")]
    (evaluation,) = client.search_runs([evals], "tags.command = 'eval' and tags.source_experiment = 'lit_nash'")

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
            mpo = runs[("mpo", "0")]
            # (a) the runs list: the sweep's run, its jobs nested; the Views menu has the lit_nash view, which groups
            # the runs by algorithm with the summary metrics and the converged tag as columns
            page = f"{base}/#/experiments/{experiment}/runs?{ML}"
            shown(browser, page, [parent.info.run_name, "Views", "Runs of"])
            click(browser, "Views")
            wait_for(browser, ["lit_nash: algorithms side by side"])
            snap(browser, shots / "mlflow_views_menu.png")
            click(browser, "lit_nash: algorithms side by side")
            columns = ["summary/gap_window", "summary/reg_gap_window", "summary/wall_time_s", "converged"]
            wait_for(browser, ["Group: comal", "Group: mpo", *columns, *(r.info.run_name for r in runs.values())])
            snap(browser, shots / "mlflow_runs.png")
            # (b) its charts: one line per algorithm (the mean over its seeds, a band), the gaps on log axes
            view = f"{page}&viewStateShareKey=lit_nash&compareRunsMode=CHART"
            shown(browser, view, ['title="game/duality_gap"', 'title="summary/gap_window"'], height=2400)
            deadline = time.monotonic() + 60
            while "log" not in (scales := json.loads(browser.evaluate(
                    "JSON.stringify([...document.querySelectorAll('.js-plotly-plot')].filter(p => p._fullLayout)"
                    ".map(p => p._fullLayout.yaxis.type))"))) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert "log" in scales and "linear" in scales, scales  # the gaps on log axes; the others as MLflow draws them
            snap(browser, shots / "mlflow_runs_charts.png")
            # (c) the sweep's run: its description ranks the algorithms by the mean over seeds; its jobs are its children
            run_page = f"{base}/#/experiments/{experiment}/runs/{parent.info.run_id}"
            shown(browser, f"{run_page}?{ML}", ["Ranked by duality gap", "summary/gap_window: mean ± 95% CI",
                                                "Child runs", mpo.info.run_name, "rank/comal", "mean/mpo"],
                  shots / "mlflow_sweep_run.png", height=1200)
            # (d) its artifacts: the table over seeds, the ranking as a table, the curves
            shown(browser, f"{run_page}/artifacts/table.md?{ML}", ["game/duality_gap", "Each cell: the final value", "curve_game_duality_gap.pdf"],
                  shots / "mlflow_sweep_table.png")
            shown(browser, f"{run_page}/artifacts/ranking.json?{ML}", [">with_best<", ">comal<", ">mpo<"],
                  shots / "mlflow_sweep_ranking.png")
            shown(browser, f"{run_page}/artifacts/curve_game_duality_gap.png?{ML}", ["curve_game_duality_gap.png"])
            assert wait_image(browser) > 500
            snap(browser, shots / "mlflow_sweep_curve.png")
            # (e) one run: its metric charts by full name, its system metrics, its description
            mpo_page = f"{base}/#/experiments/{experiment}/runs/{mpo.info.run_id}"
            charts = [f'title="{m}"' for m in ("game/duality_gap", "game/exploitability", "summary/gap_window", "eval/win_rate_vs_ref")]
            shown(browser, f"{mpo_page}/model-metrics?{ML}", [mpo.info.run_name, *charts], shots / "mlflow_run_metrics.png",
                  height=3600)  # MLflow draws a chart once it is scrolled into view: the page is tall enough for all
            shown(browser, f"{mpo_page}/system-metrics?{ML}", ['title="system/cpu_utilization_percentage"',
                                                               'title="system/system_memory_usage_megabytes"'],
                  shots / "mlflow_run_system_metrics.png")
            shown(browser, f"{mpo_page}?{ML}", ["mpo on comal_cycle (sampled play), seed 0, 200 of 200 optimizer steps"])
            # (f) its artifacts: the resolved config's text; the completion table; the log file
            tree = ["config.yaml", "fit.log", "completions.json", "checkpoints"]
            shown(browser, f"{mpo_page}/artifacts/config.yaml?{ML}", [*tree, "magnet_every", "lit_nash.algorithms.mpo.MPO"],
                  shots / "mlflow_run_config.png")
            columns = [f">{c}<" for c in ("prompt", "opponent", "policy_response", "valid")]
            shown(browser, f"{mpo_page}/artifacts/completions.json?{ML}", columns, shots / "mlflow_run_completions.png")
            shown(browser, f"{mpo_page}/artifacts/fit.log?{ML}", ["lit_nash fit: mpo on comal_cycle (seed 0), 200 steps"])
            # (g) who won: the evaluation's view charts P(policy ≻ opponent) per opponent and the Elo ratings; its pairs
            # are a table with intervals; its heatmap fits the artifact viewer
            eval_view = f"{base}/#/experiments/{evals}/runs?{ML}&viewStateShareKey=lit_nash&compareRunsMode=CHART"
            shown(browser, eval_view, ['title="vs/mpo"', 'title="vs/comal"', 'title="rank/elo"'],
                  shots / "mlflow_eval_charts.png", height=1400)
            eval_page = f"{base}/#/experiments/{evals}/runs/{evaluation.info.run_id}/artifacts"
            shown(browser, f"{eval_page}/head_to_head.json?{ML}", [">p_policy_wins<", ">ci95_low<", ">significant<"],
                  shots / "mlflow_eval_head_to_head.png")
            shown(browser, f"{eval_page}/win_rate_matrix.png?{ML}", ["win_rate_matrix.png"])
            assert 300 < wait_image(browser) <= 1000
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


def wait_image(browser: Chromium, timeout: float = 60) -> int:
    """The natural width of the largest image on the page (the artifact shown: the viewer loads it as a blob),
    once one wider than an icon has loaded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        width = browser.evaluate("Math.max(0, ...[...document.images].map(i => i.naturalWidth))")
        if width and width > 64:
            return int(width)
        time.sleep(0.5)
    return 0
