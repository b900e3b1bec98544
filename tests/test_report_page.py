"""``fnnet report RUN_DIR`` of tiny MLP, CNN and GPT runs, opened in headless Chromium from
``file://`` with the network refused (tests/browsers.py): its curves, its labelled examples or
samples, the trace inside it; and the notebook views of a History and a Summary."""

from __future__ import annotations

import json
import shlex

import pytest

import fnnet
from fnnet.app import cli
from fnnet.app.report import train_command
from fnnet.pages import charts
from fnnet.train.history import History

import browsers
from browsers import Opened


@pytest.fixture(scope="module")
def browser():
    with browsers.chromium() as chromium:
        yield chromium


def _train(tmp_path_factory, name, args, data):
    out = tmp_path_factory.mktemp("runs") / name
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FNNET_DATA", str(data))
        assert cli.main(["train", *args, "--out", str(out), "--quiet"]) == 0
        assert cli.main(["report", str(out), "--examples", "2"]) == 0
    return out


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory, shared_data):
    """A monitored MNIST MLP: 1 epoch on 600 images."""
    return _train(tmp_path_factory, "mlp", ["mnist", "--hidden", "32", "--limit", "600", "--epochs", "2",
                                            "--monitor", "2"], shared_data)


def test_the_mlp_report_shows_curves_health_labelled_examples_and_its_trace(browser, mlp_run):
    path = mlp_run / "report.html"
    assert path.stat().st_size < 5_000_000
    opened = Opened(browser, path)
    page = opened.page
    assert page.locator(".fn-curves .fn-curve").count() == 4   # train and eval, loss and accuracy
    assert page.locator(".fn-health .fn-curve").count() >= 3   # the monitored layers' update ratios...
    examples = page.locator(".fr-example")
    assert examples.count() == 24
    first = examples.first
    assert f"true {first.get_attribute('data-true')}" in first.inner_text()
    assert page.locator(".fr-example img").first.evaluate("img => img.naturalWidth") == 28
    assert page.locator(".fn-confusion tr").count() == 11
    assert "10,000 test examples" in page.inner_text(".fnnet-report")
    metrics = json.loads((mlp_run / "metrics.json").read_text())
    assert f"{metrics['test_accuracy']:.4g}" in page.inner_text(".fnnet-report")
    assert page.locator(".fnnet-trace .ft-box").count() == 3 and "every layer OK" in page.inner_text(".ft-verdict")
    opened.close()


def test_the_command_the_report_shows_parses_to_the_runs_settings(mlp_run):
    run = fnnet.load_run(mlp_run)
    words = shlex.split(train_command(run))
    args = cli.build_parser().parse_args(words[1:])
    assert (args.hidden, args.limit, args.epochs, args.monitor, args.out) == ("32", 600, 2, 2, str(mlp_run))


def test_the_cnn_report_shows_feature_maps_in_its_trace(browser, tmp_path_factory, shared_data):
    run = _train(tmp_path_factory, "cnn", ["mnist", "--model", "cnn", "--limit", "256", "--epochs", "1"], shared_data)
    opened = Opened(browser, run / "report.html")
    page = opened.page
    assert page.locator(".fn-curves .fn-curve").count() == 4 and page.locator(".fr-example img").count() == 24
    page.click('.ft-box[data-path="1"]')   # the first convolution: its kernels and feature maps
    assert page.locator(".ft-detail canvas").count() >= 24 + 8
    assert "kernel 0" in page.inner_text(".ft-detail") and "channel 7, example 0" in page.inner_text(".ft-detail")
    opened.close()


def test_the_gpt_report_shows_samples_and_attention(browser, tmp_path_factory, shakespeare_data):
    run = _train(tmp_path_factory, "gpt", ["shakespeare", "--layers", "1", "--heads", "2", "--features", "32",
                                           "--block-size", "32", "--steps", "10", "--eval-interval", "5",
                                           "--eval-batches", "1"], shakespeare_data)
    opened = Opened(browser, run / "report.html")
    page = opened.page
    assert page.locator(".fn-curves .fn-curve").count() == 2   # train and validation loss over the steps
    assert page.locator(".fr-sample").count() == 3 and len(page.inner_text(".fr-sample")) > 100
    assert page.locator(".fr-sample").first.inner_text().startswith("ROMEO:")   # fnnet sample's prompt
    page.click(".ft-box >> text=CausalSelfAttention")
    assert "attention, head 1, example 0" in page.inner_text(".ft-detail")
    opened.close()


def test_train_report_writes_the_report_and_prints_its_path(browser, tmp_path, capsys):
    out = tmp_path / "xor"
    assert cli.main(["train", "xor", "--epochs", "20", "--out", str(out), "--quiet", "--report"]) == 0
    assert f"report: {out / 'report.html'}" in capsys.readouterr().out
    opened = Opened(browser, out / "report.html")
    assert opened.page.locator(".fn-confusion tr").count() == 3 and opened.page.locator(".fr-example").count() == 4
    opened.close()


def test_a_history_and_a_summary_draw_themselves_in_a_notebook(browser, tmp_path):
    history = History(epoch=[1, 2, 3], train_loss=[1.0, 0.6, float("nan")], eval_loss=[1.1, 0.7, 0.65],
                      train_accuracy=[0.5, 0.7, 0.8], eval_accuracy=[0.45, 0.6, 0.7], seconds=[1, 1, 1])
    table = fnnet.summary(fnnet.serial(fnnet.Dense(4), fnnet.Relu, fnnet.Dense(1)), (2,))
    path = tmp_path / "notebook.html"
    path.write_text("<!DOCTYPE html><html><body>" + history._repr_html_() + table._repr_html_() + "</body></html>")
    opened = Opened(browser, path)
    assert opened.page.locator(".fn-curve").count() == 4
    assert "1 NaN/inf not drawn" in opened.page.inner_text("body")   # a NaN loss is said, not drawn as a number
    assert "total parameters: 17" in opened.page.inner_text(".fn-summary + p")
    opened.close()
    assert charts.health_html(history.to_dict()) == ""   # not monitored: no health section
