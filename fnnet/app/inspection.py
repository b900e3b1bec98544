"""The commands that look inside a model: ``fnnet gradcheck``, ``summary``, ``trace`` and ``doctor``."""

from __future__ import annotations

import json
import pathlib

import jax
import numpy as np

from fnnet import datasets, diagnosis, explanation, gradcheck, losses, tracing
from fnnet.app import recipes
from fnnet.app.arguments import check_output_path, plural, settings_for
from fnnet.app.choices import TEXT as _TEXT
from fnnet.app.recipes import DATASETS
from fnnet.app.runs import load_run
from fnnet.app.usage import UsageError
from fnnet.layer import init_with_state, is_stateful
from fnnet.summaries import summary
from fnnet.train import language


def _model_for(dataset: str, settings: dict):
    """``(name, model, in_shape, loss, x, y)`` for ``gradcheck``/``summary``/``doctor``: the model of
    ``dataset`` with these ``settings`` (:func:`fnnet.app.arguments.settings_for`), and for the GPT 4 windows of text (else
    ``x`` and ``y`` are ``None``: the caller loads real examples if it wants them)."""
    if dataset == _TEXT:
        text = datasets.tiny_shakespeare()
        model, in_shape = recipes.model_from_config(dict(settings, vocab=text.vocab))
        ids = np.asarray(text.train[:4 * (in_shape[0] + 1)]).reshape(4, -1)
        label = f"{_TEXT} {settings['model'].upper()}"   # shakespeare GPT, shakespeare LSTM...
        return label, model, in_shape, losses.softmax_cross_entropy, ids[:, :-1], ids[:, 1:]
    spec = DATASETS[dataset]
    model, in_shape = recipes.model_from_config(dict(settings, in_shape=list(spec.in_shape), out_dim=spec.out_dim))
    return dataset, model, in_shape, losses.ALL[spec.loss], None, None


def gradcheck_command(args) -> int:
    ok = True
    if args.dataset is None or args.all:
        ok &= all(report.passed for _, report in gradcheck.run_builtin(verbose=True))
    if args.all:
        names = list(DATASETS)
    else:
        names = [args.dataset] if args.dataset else []
    for name in names:
        label, model, in_shape, loss, x, y = _model_for(name, settings_for(name, args))
        if x is None:
            try:
                (x, y), _ = DATASETS[name].load(0)
            except OSError as error:
                print(f"\n{name}: skipped ({str(error).splitlines()[0]})")
                continue
            x, y = np.asarray(x[:16]), np.asarray(y[:16])
        _, params, state = init_with_state(model, jax.random.PRNGKey(0), in_shape)  # as trained: zero biases, kinks
        report = gradcheck.check_model(model, loss, params, x, y, raise_on_failure=False,
                                       state=state if is_stateful(model) else None)
        print(f"\n{label}: {report.subject} on {len(x)} real examples (float64)")
        print(report)
        ok &= report.passed
    return 0 if ok else 1


def summary_command(args) -> int:
    _, model, in_shape, *_ = _model_for(args.dataset, settings_for(args.dataset, args))
    print(summary(model, in_shape))
    return 0


def _check_trace_indices(result, layer, unit) -> None:
    """A UsageError unless ``--layer`` (``layer``: an index, negative from the end, or a path) names a
    layer of the traced model and ``--explain`` (``unit``) a unit of its output's last axis."""
    try:
        chosen = result.layer(0 if layer is None else layer)
    except ValueError:
        count = len(result.layers)
        if str(layer).lstrip("-").isdigit():
            raise UsageError(f"--layer {layer}: out of range: this model has {plural(count, 'layer')} "
                             f"(0..{count - 1}, or -1..-{count} from the end)") from None
        raise UsageError(f"--layer {layer}: no such layer; the paths are "
                         f"{', '.join(lt.path for lt in result.layers)}") from None
    if unit is None:
        return
    units = (np.shape(chosen.y) or (1,))[-1]
    if not 0 <= unit < units:
        raise UsageError(f"--explain {unit}: out of range for layer {chosen.index} ({chosen.name}), whose output "
                         f"has {plural(units, 'unit')} on its last axis (0..{units - 1})")


def _through_time_path(result, given, run_dir) -> pathlib.Path | None:
    """Where ``--through-time`` draws (``None``: not asked); a UsageError, before anything is printed,
    for a model with no recurrent layer or a PNG that cannot be written."""
    if given is None:
        return None
    if not any(lt.time is not None for lt in result.layers):
        raise UsageError("--through-time: this model has no RNN, LSTM or GRU layer: nothing in it runs through "
                         "time (the flag is for runs of recurrent models)")
    if not given and run_dir is None:
        raise UsageError("--through-time: give the PNG to write")
    return check_output_path(given or pathlib.Path(run_dir) / "through_time.png", "--through-time", folder=False,
                             example="through_time.png")


def through_time_text(result, most: int = 16) -> str:
    """Per recurrent layer of a :class:`fnnet.Trace`, ``‖∂L/∂h_t‖`` from ``t = T`` back to 1 (at most
    ``most`` steps, evenly spaced), the total and that of the last output's gradient alone."""
    lines = []
    for lt in result.layers:
        if lt.time is None:
            continue
        steps = len(lt.through_time)
        shown = np.unique(np.linspace(1, steps, min(steps, most)).round().astype(int))[::-1]
        lines.append(f"{lt.label}: ‖∂L/∂h_t‖ over the {len(lt.time.dh)} sequences, t = {steps}…1 "
                     f"(first/last {lt.time.ratio():.3g}; of the last output's gradient alone "
                     f"{lt.time.ratio(from_last=True):.3g}):")
        for name, norms in (("total", lt.time.norms()), ("last output alone", lt.time.norms(from_last=True))):
            lines.append(f"  {name:<17} " + "  ".join(f"t={t}: {norms[t - 1]:.2e}" for t in shown))
    return "\n".join(lines)


def trace_command(args) -> int:
    """``fnnet trace xor``: the tutorials' XOR network, every table; ``fnnet trace RUN_DIR``: a trained
    run on ``--examples`` test examples, one row per layer (``--layer K``: that layer's tables;
    ``--through-time``: the gradient through time of its recurrent layers, and its figure). A
    ``--layer``, ``--explain`` or ``--through-time`` the model does not have is a usage error, before
    anything is printed."""
    figure = None
    page = check_output_path(args.html, "--html", folder=False, example="trace.html") if args.html else None
    if args.target == "xor":
        with jax.enable_x64(True):  # NumPy's float64, as the tutorials print it
            model, params, loss, x, y = recipes.tutorial_xor()
            result = tracing.trace(model, loss, params, x, y)
        _check_trace_indices(result, args.layer, args.explain)
        _through_time_path(result, args.through_time, None)
        print("The tutorials' 2-3-1 XOR network (Dense(3) → ReLU → Dense(1) → sigmoid, binary cross-entropy), "
              "from their published weights, on its 4 examples:\n")
        print(result)
        print()
        print(result.tables(max_units=args.max_units, layer=args.layer))
    else:
        run = load_run(args.target)
        result = run.trace(args.examples)
        _check_trace_indices(result, args.layer, args.explain)
        figure = _through_time_path(result, args.through_time, run.dir)
        print(f"{run.dir}: {run.config.get('dataset', 'run')} on {len(result.x)} "
              f"{'validation windows' if run.is_language_model else 'test examples'}\n")
        print(result)
        if args.layer is not None:
            print()
            print(result.tables(max_units=args.max_units, layer=args.layer))
    if figure is not None:
        print()
        print(through_time_text(result))
        print(f"wrote {result.plot_through_time(figure)}")
    if args.explain is not None:
        print()
        print(explanation.explain(result, args.layer if args.layer is not None else 0, args.explain))
    if page is not None:
        print(f"\nwrote {result.to_html(page)}")
    if args.json:
        path = check_output_path(args.json, "--json", folder=False, example="trace.json")
        path.write_text(json.dumps(result.to_dict(arrays=args.arrays), indent=1))
        print(f"\nwrote {path}")
    return 0 if result.passed else 1


def doctor_command(args) -> int:
    """``fnnet doctor DATASET [model flags]`` (a fresh model) or ``fnnet doctor RUN_DIR`` (a trained run):
    the checklist of :func:`fnnet.doctor`; exit status 1 when a check fails."""
    if args.target in DATASETS or args.target == _TEXT:
        label, model, in_shape, loss, x, y = _model_for(args.target, settings_for(args.target, args))
        if x is None:
            (x, y), _ = DATASETS[args.target].load(args.seed)
        else:
            x, y = language.consecutive_windows(datasets.tiny_shakespeare().train, in_shape[0], 64)
        _, params, state = init_with_state(model, jax.random.PRNGKey(args.seed), in_shape)
        print(f"{label}: a fresh model, as 'fnnet train {args.target}' with these flags would start")
    else:  # model and training flags were refused while parsing (fnnet.app.cli)
        run = load_run(args.target)
        model, loss, params, state = run.model, run.loss, run.params, run.model_state
        x, y = run.examples(256 if not run.is_language_model else 64, split="train")
        print(f"{run.dir}: the trained run ({run.config.get('dataset', 'fit')}) at its saved parameters")
    report = diagnosis.doctor(model, loss, params, (np.asarray(x), np.asarray(y)), model_state=state or None,
                              key=jax.random.PRNGKey(args.seed))
    print(report)
    return 0 if report.passed else 1
