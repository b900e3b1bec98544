"""What each ``fnnet`` command does: :func:`fnnet.app.cli.main` parses the command line (without
loading JAX, so ``fnnet --help`` and a mistyped flag answer at once), then :func:`run` runs it here."""

from __future__ import annotations

import pathlib
import sys
import time

import jax
import numpy as np

from fnnet import datasets, losses, plots, train
from fnnet.app import inspection, jobs, process, recipes, report, shakespeare
from fnnet.app.arguments import check_output_path, config_from_args, plural, text_config_from_args
from fnnet.app.choices import CHECKPOINT_EVERY, TEXT as _TEXT
from fnnet.app.process import use_compilation_cache
from fnnet.app.recipes import DATASETS, RecipeError, build_optimizer
from fnnet.app.runs import load_run
from fnnet.app.usage import UsageError
from fnnet.datasets import DataError
from fnnet.interop import check_onnx, to_onnx
from fnnet.summaries import summary

# keys fnnet train adds to config.json once the data is loaded (not settings: --resume ignores them)
_DERIVED = ("in_shape", "out_dim")
_SAVED_DEFAULTS = {"augment": 0, "recipe": "classic"}  # how runs saved before these were recorded trained


def _setup(config: dict):
    """(model, loss, optimizer, train, test, spec) for a saved or new configuration."""

    spec = DATASETS[config["dataset"]]
    train_data, test_data = spec.load(config["seed"])
    if config.get("limit"):
        train_data = tuple(a[:config["limit"]] for a in train_data)
    model, _ = recipes.model_from_config(dict(config, in_shape=list(train_data[0].shape[1:]),
                                              out_dim=spec.out_dim))
    steps_per_epoch = -(-len(train_data[0]) // min(config["batch_size"], len(train_data[0])))
    optimizer = build_optimizer(config["optimizer"], config["lr"], config["weight_decay"],
                                schedule=config.get("schedule", "constant"),
                                total_steps=config["epochs"] * steps_per_epoch, betas=config.get("betas"))
    return model, losses.ALL[config["loss"]], optimizer, train_data, test_data, spec


def _training_line(config: dict) -> str:
    """``training: recipe fast, adam (b1 0.7, b2 0.9), lr 0.005 onecycle, batch 128, 8 epochs, images shifted
    by up to 1 pixel``: how the run trains, in one line."""
    optimizer = config["optimizer"] + (" (b1 {}, b2 {})".format(*config["betas"]) if config.get("betas") else "")
    parts = ([f"recipe {config['recipe']}"] if config.get("recipe") else []) + [
        optimizer, f"lr {config['lr']:g} {config.get('schedule', 'constant')}", f"batch {config['batch_size']}",
        plural(config["epochs"], "epoch")]
    if config.get("weight_decay"):
        parts.append(f"weight decay {config['weight_decay']:g}")
    if config.get("augment"):
        parts.append(f"images shifted by up to {plural(config['augment'], 'pixel')}")
    return "training: " + ", ".join(parts)


def _augmentation(config: dict, spec):
    """The training images' random translation of a run (``augment`` pixels), or ``None``."""
    if not config.get("augment"):
        return None
    return train.random_translation(int(config["augment"]), image_shape=spec.image_shape)


def run_train(config: dict, out_dir, *, resume: bool = False, verbose: bool = True,
              overwrite: bool = False, checkpoint_every: float = CHECKPOINT_EVERY) -> dict:
    """Trains as ``fnnet train`` does and writes config.json (the settings, with the input
    shape and output width :func:`fnnet.load_run` needs), the checkpoint, metrics.json and
    curves.png. The output folder is checked before the data is loaded: one that holds a run
    already needs ``resume`` (continue it, same settings but ``epochs``) or ``overwrite``.
    The checkpoint is written at most every ``checkpoint_every`` seconds, and after the last
    epoch (:func:`fnnet.train.fit`)."""

    out_dir = check_output_path(out_dir, "--out", folder=True)
    replaced = jobs.prepare_run_dir(out_dir, dict({"model": "mlp"}, **config), resume=resume, overwrite=overwrite,
                                    saved_defaults=_SAVED_DEFAULTS,
                                    ignore=("epochs", "monitor") + _DERIVED)
    done_epochs = jobs.trained_so_far(out_dir, config, resume=resume, unit="epochs")
    plots.preload()  # curves.png's matplotlib loads while XLA compiles
    started = time.perf_counter()
    model, loss, optimizer, train_data, test_data, spec = _setup(config)
    data_seconds = time.perf_counter() - started
    config = dict(config, in_shape=list(train_data[0].shape[1:]), out_dim=spec.out_dim)
    with jobs.writing_run(out_dir, config, replaced):
        if verbose:
            print(summary(model, train_data[0].shape[1:]))
            print(_training_line(config))
        fit_started = time.perf_counter()
        state, history = train.fit(model, loss, optimizer, train_data, epochs=config["epochs"],
                                   batch_size=config["batch_size"], key=jax.random.PRNGKey(config["seed"]),
                                   eval_data=test_data, grad=config["grad"], verbose=verbose,
                                   checkpoint_dir=out_dir, resume=resume, monitor=config.get("monitor"),
                                   checkpoint_every=checkpoint_every, augment=_augmentation(config, spec))
    fit_seconds = time.perf_counter() - fit_started
    if len(history) and history.eval_loss[-1] is not None:  # fit evaluated these very params after the last epoch
        result = {"loss": history.eval_loss[-1], "accuracy": history.eval_accuracy[-1]}
    else:
        result = train.evaluate(model, loss, state.params, test_data, model_state=state.model_state)
    train_seconds = float(sum(history.seconds))
    n_train = int(train_data[0].shape[0])
    steady = history.seconds[1:]
    metrics = {
        "dataset": config["dataset"],
        "test_accuracy": result["accuracy"],
        "test_loss": result["loss"],
        "epochs": len(history),
        "train_seconds": train_seconds,
        "examples_per_second": n_train * len(history) / train_seconds if train_seconds else None,
        "steady_examples_per_second": n_train * len(steady) / sum(steady) if steady else None,
        "first_epoch_seconds": history.seconds[0] if history.seconds else None,
        "data_seconds": data_seconds,
        "total_seconds": data_seconds + fit_seconds,
        "train_examples": n_train,
        "grad": config["grad"],
        "history": history.to_dict(),
    }
    acc = result["accuracy"]
    resumed = f", {len(history) - done_epochs} in this session" if done_epochs else ""
    report = [f"{config['dataset']}: test loss {result['loss']:.4f}"
              + (f", test accuracy {acc:.2%}" if acc is not None else "")
              + f" ({plural(len(history), 'epoch')}{resumed}, {train_seconds:.1f} s training, "
              f"{metrics['examples_per_second']:.0f} examples/s)"] if verbose else []
    jobs.finish_run(out_dir, metrics, {jobs.CURVES_NAME: history.plot,
                                       jobs.HEALTH_NAME: history.plot_health if history.health_steps else None},
                    verbose=verbose, report=report)
    return metrics


def _cmd_train(args) -> int:
    if args.dataset == _TEXT:

        config = text_config_from_args(args)
        out = check_output_path(process.train_out(args), "--out", folder=True)
        shakespeare.run_train(config, out, resume=args.resume, verbose=not args.quiet, overwrite=args.overwrite,
                              started=process.started())
    else:
        out = process.train_out(args)
        run_train(config_from_args(args), out, resume=args.resume, verbose=not args.quiet,
                  overwrite=args.overwrite, checkpoint_every=args.checkpoint_every)
    if args.report:   # 1-5 s (a trace, the test set's predictions, samples): asked for, not by default
        print(f"report: {report.write_report(load_run(out))}")
    return 0


def _cmd_eval(args) -> int:
    run = load_run(args.dir)
    result = run.evaluate()
    if run.is_language_model:
        print(f"validation loss {result['loss']:.6f} over {result['tokens']:,} tokens")
        saved = (run.metrics or {}).get("val_loss")
        if saved is None:
            return 0
        same = abs(saved - result["loss"]) <= 1e-5 * max(1.0, abs(result["loss"]))
        print("matches metrics.json" if same else f"DIFFERS from metrics.json (val_loss {saved})")
        return 0 if same else 1
    line = f"test loss {result['loss']:.6f}"
    if result["accuracy"] is not None:
        line += f", test accuracy {result['accuracy']:.4%}"
    print(line)
    saved = run.metrics
    if saved is not None:
        same = abs(saved["test_loss"] - result["loss"]) <= 1e-6 * max(1.0, abs(result["loss"])) and \
            saved["test_accuracy"] == result["accuracy"]
        print("matches metrics.json" if same else
              f"DIFFERS from metrics.json (test_loss {saved['test_loss']}, accuracy {saved['test_accuracy']})")
        return 0 if same else 1
    return 0


def _read_npy(path: pathlib.Path):
    """The array in a ``.npy`` file; a UsageError naming the file when it is not one."""

    if not path.is_file():
        raise UsageError(f"{path}: {'is a folder' if path.is_dir() else 'no such file'}; expected a .npy "
                         f"array written by numpy.save")
    with open(path, "rb") as file:
        magic = file.read(6)
        if magic[:2] == b"PK":
            raise UsageError(f"{path}: is an .npz archive; save the one input array with numpy.save "
                             f"(a .npy file)")
        if magic != b"\x93NUMPY":
            raise UsageError(f"{path}: not a .npy file (it does not start with NumPy's header); "
                             f"write the inputs with numpy.save")
        file.seek(0)
        try:
            return np.load(file, allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:
            raise UsageError(f"{path}: not a readable .npy array ({error})") from None


def _cmd_predict(args) -> int:
    out = check_output_path(args.out, "--out", folder=False)
    input_path = pathlib.Path(args.input)
    x = _read_npy(input_path)
    run = load_run(args.run_dir)
    try:
        x = run.as_batch(x)
    except ValueError as error:
        raise UsageError(f"{input_path}: {error}") from None
    if args.proba:
        if run.task == "regression":
            raise UsageError(f"--proba: {args.run_dir} is a regression run ({run.config['dataset']}); "
                             f"its predictions are values, not probabilities")
        result, what = np.asarray(run.predict_proba(x)), "probabilities"
        if run.task == "binary" and result.shape[-1] == 1:
            result, what = result[..., 0], "probabilities of class 1"
    elif run.task == "regression":
        result, what = np.asarray(run.predict(x)), "predicted values"
    else:
        result, what = run.predict_labels(x), "class labels"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "wb") as file:
            np.save(file, result)
    except OSError as error:
        raise UsageError(f"--out {out}: cannot write it ({error.strerror or error})") from None
    print(f"wrote {out}: {what} for {x.shape[0]} examples of {input_path}, {result.dtype} of shape "
          f"{result.shape} ({run.config['dataset']} run {args.run_dir})")
    return 0


def _cmd_sample(args) -> int:
    if args.tokens < 0:
        raise UsageError(f"--tokens must be >= 0, got {args.tokens}")
    if not args.temperature > 0:
        raise UsageError(f"--temperature must be > 0, got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {args.top_k}")
    if not args.prompt:
        raise UsageError("--prompt must not be empty (nanoGPT starts from a newline: --prompt $'\\n')")
    run = load_run(args.run_dir)
    if not run.is_language_model:
        raise UsageError(f"{args.run_dir}: a {run.config.get('dataset')} classifier run, not a language "
                         f"model; sample needs the --out folder of 'fnnet train {_TEXT}'")
    if args.top_k is not None and args.top_k > len(run.config["vocab"]):
        raise UsageError(f"--top-k {args.top_k} is larger than the vocabulary ({len(run.config['vocab'])})")
    started = time.perf_counter()
    try:
        text = run.sample(args.prompt, args.tokens, temperature=args.temperature, top_k=args.top_k,
                          seed=args.seed)
    except ValueError as error:
        raise UsageError(f"--prompt: {error}") from None
    print(text)
    if args.timing:
        seconds = time.perf_counter() - started
        print(f"[{args.tokens} tokens in {seconds:.2f} s, compile included]", file=sys.stderr)
    return 0


def _cmd_convert(args) -> int:
    out = check_output_path(args.out, "--out", folder=True)
    shakespeare.convert_nanogpt(args.checkpoint, out, meta=args.meta, overwrite=args.overwrite,
                                verbose=not args.quiet)
    return 0


def _cmd_export(args) -> int:
    out = check_output_path(args.out, "output", folder=False, example="model.onnx")
    run = load_run(args.run_dir)
    path = to_onnx(run.model, run.params, run.in_shape, out, model_state=run.model_state, opset=args.opset)
    kind = "int64 token ids" if run.is_language_model else "float32"
    print(f"wrote {path}: input 'input' ({kind}) of shape (batch, {', '.join(map(str, run.in_shape))}), output "
          f"'output'; evaluation mode ({run.config.get('dataset', 'run')} run {args.run_dir})")
    try:
        x = run.examples(4)[0]
        where = "test examples" if not run.is_language_model else "validation windows"
    except (DataError, RecipeError, ValueError):  # no data here: random inputs of the right kind
        rng = np.random.default_rng(0)
        x = rng.integers(0, len(run.config.get("vocab") or "x"), (4,) + run.in_shape) if run.is_language_model \
            else rng.uniform(0, 1, (4,) + run.in_shape).astype(np.float32)
        where = "random inputs"
    try:
        difference = check_onnx(path, run.model, run.params, x, model_state=run.model_state)
    except ImportError:
        print("onnxruntime is not installed: not checked (pip install 'fnnet[interop]')")
        return 0
    same = difference <= 1e-5
    print(f"onnxruntime {'agrees with' if same else 'DIFFERS from'} fnnet on {len(x)} {where}: largest "
          f"difference {difference:.1e} of the largest output")
    return 0 if same else 1


def _cmd_demo(args) -> int:
    """XOR, then MNIST (or breast cancer when MNIST cannot be found): accuracies and plots."""

    out = pathlib.Path(args.out)
    results = {}
    print("== XOR: 2-4-1 tanh network, hand-written backward, SGD ==")
    results["xor"] = run_train(recipes.settings("xor"), out / "xor", verbose=False, overwrite=True)  # the demo's own folders
    print(f"XOR test accuracy: {results['xor']['test_accuracy']:.0%}")
    try:
        datasets.find_file("mnist", "train-images-idx3-ubyte.gz", download=not args.offline)
        name, epochs = "mnist", args.mnist_epochs
    except datasets.DataError as error:
        print(f"MNIST not found, training on breast cancer instead:\n{error}")
        name, epochs = "breast-cancer", DATASETS["breast-cancer"].epochs
    spec = DATASETS[name]
    config = recipes.settings(name, epochs=epochs)
    print(f"\n== {name}: hidden {spec.hidden}, {spec.activation}, {spec.optimizer}, {epochs} epochs ==")
    results[name] = run_train(config, out / name, verbose=True, overwrite=True)
    print("\nSummary")
    for key, metrics in results.items():
        print(f"  {key:<14} test accuracy {metrics['test_accuracy']:.2%}  "
              f"({metrics['train_seconds']:.1f} s training)  curves: {out / key / jobs.CURVES_NAME}")
    return 0


COMMANDS = {
    "train": _cmd_train,
    "sample": _cmd_sample,
    "eval": _cmd_eval,
    "predict": _cmd_predict,
    "gradcheck": inspection.gradcheck_command,
    "summary": inspection.summary_command,
    "trace": inspection.trace_command,
    "doctor": inspection.doctor_command,
    "report": report.report_command,
    "convert": _cmd_convert,
    "export": _cmd_export,
    "demo": _cmd_demo,
}
"""Each command of :func:`fnnet.app.cli.build_parser`, by name."""


def run(args) -> int:
    """Runs the parsed command ``args.command``; returns the exit status (:data:`fnnet.app.cli.EXIT_CODES`),
    each error printed as one line (:func:`fnnet.app.process.exit_status`)."""
    use_compilation_cache()
    return process.exit_status(COMMANDS[args.command], args)
