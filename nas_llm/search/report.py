"""The interactive report: validation and test Pareto fronts of searched sub-networks as one self-contained HTML file.

Plotly draws the figure and its JavaScript is embedded in the file (include_plotlyjs=True), so the report opens
offline. Every evaluated sub-network is a point; hovering shows its architecture, size, latency, metrics and the
select_and_extract.py command that writes it as a checkpoint. The same points are embedded as JSON
(<script type="application/json" id="nas-points">) for tools that read the report.
"""

from __future__ import annotations

import html
import json
import shlex
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from nas_llm.common.io_utils import write_text_atomic

POINTS_ELEMENT = "nas-points"
HOVER = ("%{customdata.label}<br>layers %{customdata.layers}, heads %{customdata.heads}, units %{customdata.units}"
         "<br>parameters %{customdata.num_parameters:,} (%{customdata.params:.3f}), MACs %{customdata.macs:,}"
         "<br>latency %{customdata.latency}<br>validation %{customdata.validation}<br>test %{customdata.test}"
         "<br>%{customdata.command}<extra></extra>")


def extract_command(results_path: Path, selector: str, index: int) -> str:
    """The select_and_extract.py command that writes this point as a checkpoint."""
    return shlex.join(["python", "select_and_extract.py", "--results", str(results_path.resolve()), selector,
                       str(index), "--output_dir", f"./sub-network-{index}"])


def architecture(summary: dict) -> dict[str, int]:
    """Layers kept (with any head or neuron), heads and FFN units in total, from a SubNetwork.summary()."""
    heads, neurons = summary["heads_per_layer"], summary["neurons_per_layer"]
    return {"layers": sum(1 for h, n in zip(heads, neurons, strict=True) if h or n), "heads": sum(heads),
            "units": sum(neurons)}


def metrics_text(metrics: dict | None) -> str:
    return "not measured (off the Pareto set)" if metrics is None else ", ".join(
        f"{name} {value:.4f}" for name, value in metrics.items())


def results_points(results_path: Path, label: str) -> list[dict]:
    """One record per evaluated sub-network of a results file (search, RFP or standard NAS)."""
    results = json.loads(results_path.read_text())
    test_of = {point["iteration"]: point["test"] for point in results["pareto_set"]}
    from_pareto_set = "trial_checkpoint_dir" in (results["pareto_set"] or [{}])[0]  # RFP, standard NAS
    index_of = {point["iteration"]: index for index, point in enumerate(results["pareto_set"])}
    points = []
    for evaluation in results["evaluations"]:
        iteration = evaluation["iteration"]
        if from_pareto_set and iteration not in index_of:
            continue  # standard NAS keeps checkpoints of its Pareto trials only
        command = (extract_command(results_path, "--pareto_index", index_of[iteration]) if from_pareto_set
                   else extract_command(results_path, "--iteration", iteration))
        points.append({
            "label": label, "iteration": iteration, **architecture(evaluation["sub_network"]),
            "num_parameters": evaluation["num_parameters"], "params": evaluation["params"],
            "num_layer_parameters": evaluation["num_layer_parameters"], "macs": evaluation["macs"],
            "latency_ms": evaluation.get("latency_ms"), "validation": evaluation.get("validation"),
            "error": evaluation["error"], "test": test_of.get(iteration), "command": command,
        })
    return points


def hover_data(point: dict) -> dict:
    latency = point.get("latency_ms")
    return point | {"latency": "not measured" if latency is None else f"{latency:.2f} ms",
                    "validation": metrics_text(point.get("validation") or {"error": point["error"]}),
                    "test": metrics_text(point.get("test"))}


def pareto_figure(point_sets: dict[str, list[dict]], unpruned: dict | None, shipped: list[dict]) -> go.Figure:
    """Validation (left) and test (right) error against the share of parameters, one colour per results file."""
    figure = make_subplots(rows=1, cols=2, subplot_titles=("validation", "test (Pareto-optimal points)"),
                           shared_yaxes=True)
    for number, (label, points) in enumerate(point_sets.items()):
        color = f"hsl({(number * 137) % 360}, 65%, 45%)"
        tested = [point for point in points if point["test"] is not None]
        for column, shown, error_of in ((1, points, lambda p: p["error"]), (2, tested, lambda p: p["test"]["error"])):
            figure.add_trace(go.Scatter(
                x=[point["params"] for point in shown], y=[error_of(point) for point in shown], mode="markers",
                name=label, legendgroup=label, showlegend=column == 1, marker={"color": color, "size": 7},
                customdata=[hover_data(point) for point in shown], hovertemplate=HOVER,
            ), row=1, col=column)
    if unpruned is not None:
        for column, split in ((1, "validation"), (2, "test")):
            figure.add_trace(go.Scatter(
                x=[1.0], y=[unpruned[split]["error"]], mode="markers", name="unpruned", legendgroup="unpruned",
                showlegend=column == 1, marker={"symbol": "star", "size": 16, "color": "black"},
                hovertemplate=f"unpruned<br>{html.escape(metrics_text(unpruned[split]))}<extra></extra>",
            ), row=1, col=column)
    for column, split in ((1, "validation"), (2, "test")):
        figure.add_trace(go.Scatter(
            x=[row["shares"]["params"] for row in shipped], y=[row[split]["error"] for row in shipped],
            mode="markers+text", text=[f"budget {row['budget']:g}" for row in shipped], textposition="top center",
            name="shipped (after recovery)", legendgroup="shipped", showlegend=column == 1,
            marker={"symbol": "diamond", "size": 14, "color": "red", "line": {"width": 1, "color": "black"}},
            hovertemplate="%{text}<br>error %{y:.4f}<extra></extra>",
        ), row=1, col=column)
    figure.update_xaxes(title_text="parameters (relative to unpruned)")
    figure.update_yaxes(title_text="error (1 - main metric)", row=1, col=1)
    figure.update_layout(height=560, hovermode="closest", legend={"orientation": "h", "y": -0.2})
    return figure


def shipped_table(shipped: list[dict]) -> str:
    header = ["budget", "method", "parameters", "encoder share", "validation error", "test", "other candidate",
              "checkpoint"]
    rows = []
    for row in shipped:
        others = ", ".join(f"{name}: validation error {scores['validation']['error']:.4f}"
                           for name, scores in row["candidates"].items() if name != row["method"])
        rows.append([f"{row['budget']:g} of {row['budget_on']}", row["method"], f"{row['num_parameters']:,}",
                     f"{row['shares'].get('encoder', float('nan')):.3f}", f"{row['validation']['error']:.4f}",
                     metrics_text(row["test"]), others or "-", row["model_dir"]])
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows)
    return ("<table><thead><tr>" + "".join(f"<th>{name}</th>" for name in header) + f"</tr></thead><tbody>{cells}"
            "</tbody></table>")


def write_report(output: Path, title: str, point_sets: dict[str, list[dict]], unpruned: dict | None = None,
                 shipped: list[dict] | tuple = ()) -> None:
    """One self-contained HTML file: the figure with plotly.js embedded, the shipped models' table, the points."""
    figure = pareto_figure(point_sets, unpruned, list(shipped))
    points = [point for points in point_sets.values() for point in points]
    body = figure.to_html(full_html=False, include_plotlyjs=True, config={"displaylogo": False})
    document = "\n".join([
        "<!DOCTYPE html>", "<html><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:1em}td,th{border:1px solid #ccc;padding:3px 6px}"
        "table{border-collapse:collapse;font-size:90%}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
        "<p>Hover over a point for its architecture, size, latency, metrics and the select_and_extract.py command "
        "that writes it as a checkpoint.</p>", body,
        *(["<h2>Shipped models</h2>", shipped_table(list(shipped))] if shipped else []),
        f"<script type='application/json' id='{POINTS_ELEMENT}'>"
        + json.dumps(points).replace("</", "<\\/") + "</script>",
        "</body></html>",
    ])
    write_text_atomic(output, document)


def read_points(report_path: Path) -> list[dict]:
    """The points a report embeds (the reader of the format write_report owns)."""
    text = report_path.read_text()
    start = text.index(f"id='{POINTS_ELEMENT}'>") + len(f"id='{POINTS_ELEMENT}'>")
    return json.loads(text[start:text.index("</script>", start)].replace("<\\/", "</"))
