"""``fnnet report RUN_DIR``: a trained run as one self-contained page, ``RUN_DIR/report.html``.

It holds the settings and the command that made the run, its figures and the model summary, the
learning curves, the per-layer health over training when the run was monitored (``--monitor``),
the trace page of a few test examples (:mod:`fnnet.pages.trace_page`, embedded), and what the
model does: for images, test examples with their predicted and true labels and the confusion
matrix over the test set; for other classifiers the confusion matrix and a table; for Tiny
Shakespeare, samples at a few temperatures. Like the trace page it fetches nothing.
"""

from __future__ import annotations

import pathlib
import time

import numpy as np

from fnnet.app import cli
from fnnet.app.arguments import check_output_path
from fnnet.app.runs import Run, load_run
from fnnet.app.shakespeare import SAMPLE_PROMPT
from fnnet.pages import _html, charts, trace_page
from fnnet.summaries import summary

REPORT_NAME = "report.html"
SAMPLE_TEMPERATURES = (0.5, 0.8, 1.0)
SHOWN_IMAGES = 24
_METRICS = ("test_accuracy", "test_loss", "val_loss", "epochs", "steps", "train_examples", "train_seconds",
            "examples_per_second", "tokens_per_second", "total_seconds")



def train_command(run: Run) -> str:
    """``fnnet train DATASET --flag value ... --out RUN_DIR``: the settings of ``config.json`` that
    are flags of ``fnnet train``, written as its command line (it parses to the same settings)."""
    parser = cli.build_parser()
    train = next(action.choices["train"] for action in parser._actions if getattr(action, "choices", None)
                 and "train" in action.choices)
    flags = {option for action in train._actions for option in action.option_strings}
    words = ["fnnet", "train", str(run.config.get("dataset", "?"))]
    for key, value in run.config.items():
        flag = "--" + key.replace("_", "-")
        if flag not in flags or value is None or value is False or flag == "--out":
            continue
        words += [flag] if value is True else [flag, ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return " ".join(words + ["--out", str(run.dir)])


def _table(rows) -> str:
    body = "".join(f"<tr><th>{_html.esc(k)}</th><td>{_html.esc(v)}</td></tr>" for k, v in rows)
    return f'<table class="fn-table">{body}</table>'


def _settings(run: Run) -> str:
    config = [(k, v if not isinstance(v, str) or len(v) < 80 else v[:77] + "…") for k, v in run.config.items()]
    metrics = [(k, f"{run.metrics[k]:.4g}" if isinstance(run.metrics[k], float) else run.metrics[k])
               for k in _METRICS if run.metrics and run.metrics.get(k) is not None]
    return (f"<h2>The run</h2><p>Made by (equivalently): <code class=\"fr-command\">{_html.esc(train_command(run))}</code></p>"
            f'<div class="fn-figures"><details class="fr-settings"><summary><h3>Settings (config.json)</h3>'
            f"</summary>{_table(config)}</details>"
            f"<div><h3>Results (metrics.json)</h3>{_table(metrics)}</div>"
            f"<div><h3>Model</h3>{charts.summary_html(summary(run.model, run.in_shape))}</div></div>")


def _image(run: Run, x) -> np.ndarray | None:
    """One example as an image in [0, 1], when the data set is one of images."""
    shape = run.spec.image_shape if run.spec else None
    if shape is None:
        return None
    image = np.asarray(x, np.float64).reshape(shape)
    low, high = run.spec.x_range or (float(image.min()), float(image.max()))
    return (image - low) / ((high - low) or 1.0)


def _classifier(run: Run) -> str:
    """Test examples with predicted and true labels, and the confusion matrix over the test set."""
    (x, y) = run.spec.load(run.config.get("seed", 0))[1]
    x, y = run.as_batch(x), np.asarray(y).astype(int).ravel()
    predicted = np.asarray(run.predict_labels(x)).astype(int).ravel()
    count = run.spec.out_dim if run.task == "multiclass" else 2
    names = list(run.spec.class_names or range(count))
    cells = []
    for n in range(min(SHOWN_IMAGES, len(x))):
        right = predicted[n] == y[n]
        label = f"predicted {names[predicted[n]]} · true {names[y[n]]}"
        image = _image(run, x[n])
        picture = (f'<img src="{charts.png_data_uri(image)}" width="84" height="84" alt="test example {n}: {_html.esc(label)}">'
                   if image is not None else "")
        cells.append(f'<figure class="fr-example {"fn-ok" if right else "fn-bad"}" data-predicted="{predicted[n]}" '
                     f'data-true="{y[n]}">{picture}<figcaption>#{n}: {_html.esc(label)}{"" if right else " ✗"}</figcaption></figure>')
    return (f'<h2>What the model does</h2><h3>The first {len(cells)} test examples</h3>'
            f'<div class="fn-figures fr-examples">{"".join(cells)}</div>'
            f"<h3>Confusion matrix (the test set)</h3>{charts.confusion_html(y, predicted, names)}")


def _samples(run: Run) -> str:
    """300 characters after the prompt ``fnnet sample`` starts from (``ROMEO:``), at each temperature."""
    parts = []
    for temperature in SAMPLE_TEMPERATURES:
        text = run.sample(SAMPLE_PROMPT, 300, temperature=temperature, seed=0)
        parts.append(f'<h3>temperature {temperature}</h3><pre class="fr-sample">{_html.esc(text)}</pre>')
    return f"<h2>What the model writes</h2><p>after the prompt <code>{_html.esc(SAMPLE_PROMPT)}</code></p>" + "".join(parts)


def _what_it_does(run: Run) -> str:
    if run.is_language_model:
        return _samples(run)
    if run.spec is not None and run.task in ("multiclass", "binary"):
        return _classifier(run)
    return ""


def build_report(run: Run, examples: int = 4) -> str:
    """The report's HTML (a whole document)."""
    history = (run.metrics or {}).get("history") or {}
    health = charts.health_html(history)
    trace = run.trace(examples)
    what = ("validation windows" if run.is_language_model else "test examples")
    body = [f'<div class="fnnet-report"><h1>fnnet report: {_html.esc(run.dir)}</h1>', _settings(run),
            f'<h2>Learning curves</h2>{charts.history_html(history)}', _what_it_does(run),
            f"<h2>Per-layer health over training</h2>{health}" if health else
            '<p class="fn-muted">Not monitored (fnnet train --monitor N records per-layer health).</p>',
            f"<h2>Inside: one step on {len(trace.x)} {what}</h2>",
            "</div>", trace_page.component(trace, f"{run.dir}: {len(trace.x)} {what}")]
    style = f"<style>{_html.asset('page.css')}{_html.asset('report.css')}</style>"
    return _html.document(f"fnnet report: {run.dir}", style + "".join(body))


def write_report(run: Run, path=None, examples: int = 4) -> pathlib.Path:
    """Writes :func:`build_report` to ``path`` (default ``RUN_DIR/report.html``); returns the path."""
    path = pathlib.Path(path) if path else run.dir / REPORT_NAME
    path.write_text(build_report(run, examples), encoding="utf-8")
    return path


def report_command(args) -> int:
    """``fnnet report RUN_DIR [--out FILE] [--examples N]``: writes the run's report and prints its path."""
    out = check_output_path(args.out, "--out", folder=False, example="report.html") if args.out else None
    run = load_run(args.dir)
    started = time.perf_counter()
    path = write_report(run, out, args.examples)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, {time.perf_counter() - started:.1f} s)")
    return 0
