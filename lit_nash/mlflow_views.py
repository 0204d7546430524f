"""What the MLflow UI shows without configuring anything: each experiment's description, and a saved view of
its runs that answers "which algorithm converged, and which won".

MLflow's runs table opens with no metric column, its charts on the first ten runs, on linear axes, one colour
per run. A view (MLflow's "shared view": an experiment tag ``mlflow.sharedViewState.<key>`` holding the page's
state as JSON in a saved-view envelope, listed under the page's "Views" menu and opened with
``#/experiments/<id>/runs?viewStateShareKey=<key>``) fixes that once for everyone who opens it: the runs grouped by algorithm (the charts then draw one line per algorithm, the mean over its
seeds), every run shown, sorted by the window-mean last-iterate gap, the summary metrics and the ``converged``
tag as columns, the gap charts on log axes, and the game's and the summary's chart sections first. The experiment's description (its MLflow note) carries the
link. Written for MLflow 3.17's page state; tests/test_mlflow_ui.py checks in a browser that it renders."""

from __future__ import annotations

import json
import uuid

from lit_nash import glossary as g

VIEW_KEY = "lit_nash"  # the share key: #/experiments/<id>/runs?viewStateShareKey=lit_nash
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
NOTE = "mlflow.note.content"
RUN_COLUMNS = [g.GAP_WINDOW, g.REG_GAP_WINDOW, g.AVG_GAP, g.STEPS_TO_EPS, g.QUERIES_TO_EPS, g.WALL_TIME]
LOG_CHARTS = ["game/duality_gap", "game/reg_duality_gap", "game/avg_duality_gap", "game/avg_reg_duality_gap",
              "game/exploitability", "game/kl_to_ne"]
# MLflow adds a section per metric prefix by itself; the last two must be its own (it keeps the last two in place)
SECTIONS = ["game", "Model metrics", "System metrics"]


def column(kind: str, key: str) -> str:
    """MLflow's canonical column key: ``metrics.`summary/gap_window```."""
    return f"{kind}.`{key}`"


def view_state(group_tag: str | None = "algo", order_by: str = g.GAP_WINDOW, ascending: bool = True,
               metrics: list[str] = RUN_COLUMNS, tags: tuple[str, ...] = ("seed", "converged", "converged_to"),
               search: str = "", first_sections: tuple[str, ...] = ()) -> dict:
    """The page state of the view: search facets and UI state, as MLflow's share button saves them. The chart
    sections ``first_sections`` come first, in that order (the others after them, as MLflow adds them)."""
    sections = {name: str(uuid.uuid4()) for name in [*first_sections, *SECTIONS]}
    charts = [{"uuid": str(uuid.uuid4()), "type": "LINE", "runsCountToCompare": 100, "metricSectionId": sections["game"],
               "deleted": False, "isGenerated": True, "metricKey": key, "selectedMetricKeys": [key], "lineSmoothness": 0,
               "xAxisScaleType": "linear", "scaleType": "log", "range": {}, "xAxisKey": "step",
               "selectedXAxisMetricKey": "", "yAxisKey": "metric", "yAxisExpressions": [], "ignoreOutliers": False,
               "useGlobalXaxisKey": True, "useGlobalLineSmoothing": True} for key in LOG_CHARTS]
    state = {
        "searchFilter": search,
        "orderByKey": column("metrics", order_by),
        "orderByAsc": ascending,
        "selectedColumns": [column("tags", t) for t in tags] + [column("metrics", m) for m in metrics],
        "runsHiddenMode": "SHOW_ALL",
        "compareRunCharts": charts,
        "compareRunSections": [{"uuid": u, "name": name, "display": True, "isReordered": False, "deleted": False,
                                "isGenerated": True} for name, u in sections.items()],
        "isAccordionReordered": bool(first_sections),
        "hideEmptyCharts": True,
        "useGroupedValuesInCharts": True,
        "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": group_tag}]}
        if group_tag else None,
        "groupsExpanded": {},
    }
    return state


def view_link(experiment_id: str) -> str:
    """The view's address in the MLflow UI, relative to the UI's root."""
    return f"#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_KEY}"


def describe_experiment(client, experiment_id: str, text: str, view: dict | None = None) -> None:
    """Set the experiment's description (``text``, then the view's link) and its view (default: fit runs
    grouped by algorithm)."""
    import time

    state = view if view is not None else view_state(search="tags.algo LIKE '%'", first_sections=("game", "summary"))
    now = int(time.time() * 1000)  # a saved-view envelope: MLflow lists it under the experiment page's "Views"
    envelope = {"name": VIEW_NAMES[view_kind(state)], "createdAt": now, "updatedAt": now, "state": json.dumps(state)}
    client.set_experiment_tag(experiment_id, VIEW_TAG, json.dumps(envelope))
    client.set_experiment_tag(experiment_id, NOTE, f"{text}\n\n[Open the lit_nash view]({view_link(experiment_id)}): "
                              + VIEW_SAYS.get(view_kind(state), ""))


def view_kind(state: dict) -> str:
    return "eval" if state.get("orderByKey") == column("metrics", "rank/elo") else "fit"


VIEW_NAMES = {"fit": "lit_nash: algorithms side by side", "eval": "lit_nash: who won"}
VIEW_SAYS = {
    "fit": "the runs grouped by algorithm (expand a group for its seeds), sorted by the duality gap over the last "
           "window of each run, with the summary metrics and the converged tag as columns; the chart view draws one "
           "line per algorithm, the gaps on log axes.",
    "eval": "the evaluated policies sorted by their Elo rating, with its interval and their win rate against the "
            "reference; the chart view compares the policies metric by metric, first `vs/<opponent>`: P(policy ≻ opponent).",
}


def eval_view() -> dict:
    """The view of ``eval``'s experiment: its runs sorted by Elo, the head-to-head columns."""
    return view_state(group_tag=None, order_by="rank/elo", ascending=False, tags=("policy",),
                      metrics=["rank/position", "rank/elo", "rank/elo_ci95", "eval/win_rate_vs_ref",
                               "eval_ci95/win_rate_vs_ref", "game/duality_gap"],
                      first_sections=("vs", "vs_exact", "rank", "vs_ci95", "eval", "eval_ci95"))


FIT_DESCRIPTION = ("Runs of `python -m lit_nash {command}`, one per algorithm, game and seed. Each run's description says "
                   "what ran and whether its last iterate converged; its summary/* metrics are the columns to sort by. "
                   "Compare the algorithms over seeds with `python -m lit_nash compare experiment={experiment}`.")
EVAL_DESCRIPTION = ("Evaluations by `python -m lit_nash eval`: one run per evaluation, holding the win-rate matrix, "
                    "head_to_head.json and ranking.json; under it one run per policy, with its win rate against each "
                    "opponent (`vs/<opponent>`) and its Elo rating (`rank/elo`).")


def described(client, experiment: str, command: str, text: str | None = None, view: dict | None = None) -> None:
    """Give the experiment a description and the lit_nash view of its runs (``lit_nash.mlflow_views``), unless it
    has that view already (a sweep's own description, written first, stays)."""
    found = client.get_experiment_by_name(experiment)
    if found is None or VIEW_TAG in found.tags or command not in ("fit", "eval", "sweep"):
        return
    if text is None:
        text = (EVAL_DESCRIPTION if command == "eval" else FIT_DESCRIPTION).format(command=command, experiment=experiment)
    describe_experiment(client, found.experiment_id, text, view if view is not None else (eval_view() if command == "eval" else None))
