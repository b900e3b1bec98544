"""The ``fnnet`` command line: train, eval, gradcheck, summary and the demo.

Examples::

    fnnet train mnist --hidden 512,512 --epochs 10 --out runs/mnist
    fnnet eval runs/mnist
    fnnet gradcheck breast-cancer
    fnnet summary mnist
    fnnet demo
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time
from typing import Callable

ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu", "leaky_relu", "identity")
OPTIMIZERS = ("adam", "sgd", "momentum")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """How the command line trains on one data set: loader, output layer, loss and defaults."""

    load: Callable[[int], tuple]          # seed -> ((x_train, y_train), (x_test, y_test))
    out_dim: int
    loss: str
    hidden: str
    activation: str
    optimizer: str
    lr: float
    epochs: int
    batch_size: int
    class_names: tuple | None = None
    schedule: str = "constant"


def _load_xor(seed):
    from fnnet import datasets

    data = datasets.xor()
    return data, data


def _load_regression(seed):
    from fnnet import datasets

    return datasets.regression(noise=0.0, seed=seed)


def _load_breast_cancer(seed):
    from fnnet import datasets

    return datasets.breast_cancer(seed=seed)


def _load_digits(seed):
    from fnnet import datasets

    return datasets.digits(seed=seed)


def _load_mnist(seed):
    from fnnet import datasets

    return datasets.mnist("train", flatten=True), datasets.mnist("test", flatten=True)


def _load_fashion(seed):
    from fnnet import datasets

    return datasets.fashion_mnist("train", flatten=True), datasets.fashion_mnist("test", flatten=True)


DATASETS = {
    "xor": DatasetSpec(_load_xor, 1, "sigmoid_binary_cross_entropy", "4", "tanh", "sgd", 1.0, 1000, 4),
    "regression": DatasetSpec(_load_regression, 4, "mse", "", "identity", "sgd", 0.5, 300, 32),
    "breast-cancer": DatasetSpec(_load_breast_cancer, 1, "sigmoid_binary_cross_entropy", "30", "relu",
                                 "adam", 1e-3, 100, 32),
    "digits": DatasetSpec(_load_digits, 10, "softmax_cross_entropy", "64", "relu", "adam", 1e-3, 60, 32),
    "mnist": DatasetSpec(_load_mnist, 10, "softmax_cross_entropy", "512,512", "relu", "adam", 1e-3, 12, 128,
                         schedule="cosine"),
    "fashion-mnist": DatasetSpec(_load_fashion, 10, "softmax_cross_entropy", "512,512", "relu", "adam",
                                 1e-3, 15, 128,
                                 ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                                  "Shirt", "Sneaker", "Bag", "Ankle boot"), schedule="cosine"),
}


class UsageError(Exception):
    """A bad command-line argument: printed as one line, exit code 2."""


def parse_hidden(text: str) -> tuple[int, ...]:
    """``"512,512"`` -> ``(512, 512)``; ``""`` or ``"none"`` -> ``()`` (a single-layer model)."""
    text = text.strip()
    if text.lower() in ("", "none"):
        return ()
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"--hidden must be comma-separated positive ints like 512,512, got {text!r}") from None
    if any(w <= 0 for w in widths):
        raise UsageError(f"--hidden widths must be positive, got {text!r}")
    return widths


def build_model(hidden, activation: str, out_dim: int, in_shape):
    """``Flatten`` (for images) + (``Dense(h)``, activation) per hidden width + ``Dense(out_dim)``."""
    import fnnet

    layer_of = {"relu": fnnet.Relu, "tanh": fnnet.Tanh, "sigmoid": fnnet.Sigmoid, "gelu": fnnet.Gelu,
                "leaky_relu": fnnet.LeakyRelu(0.01), "identity": fnnet.Identity}
    if activation not in layer_of:
        raise UsageError(f"--activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    init = fnnet.initializers.he_uniform if activation in ("relu", "leaky_relu", "gelu") else \
        fnnet.initializers.glorot_uniform
    layers = [fnnet.Flatten] if len(in_shape) > 1 else []
    for width in hidden:
        layers += [fnnet.Dense(width, w_init=init), layer_of[activation]]
    layers.append(fnnet.Dense(out_dim))
    return fnnet.serial(*layers)


def build_optimizer(name: str, lr: float, weight_decay: float = 0.0, *, schedule: str = "constant",
                    total_steps: int | None = None):
    """An optax optimizer; ``weight_decay`` adds ``λ·w`` to the gradient of each weight matrix
    (``J = L + λ/2 Σ w²``), biases excluded. ``schedule="cosine"`` decays the learning rate
    from ``lr`` to ``lr/20`` over ``total_steps``."""
    import optax

    from fnnet import train

    if lr <= 0:
        raise UsageError(f"--lr must be positive, got {lr}")
    if weight_decay < 0:
        raise UsageError(f"--weight-decay must be >= 0, got {weight_decay}")
    if schedule == "cosine":
        if not total_steps:
            raise UsageError("--schedule cosine needs the number of training steps")
        rate = optax.cosine_decay_schedule(lr, decay_steps=total_steps, alpha=0.05)
    elif schedule == "constant":
        rate = lr
    else:
        raise UsageError(f"--schedule must be 'constant' or 'cosine', got {schedule!r}")
    base = {"adam": lambda: optax.adam(rate), "sgd": lambda: optax.sgd(rate),
            "momentum": lambda: optax.sgd(rate, momentum=0.9)}
    if name not in base:
        raise UsageError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
    if weight_decay:
        return optax.chain(optax.add_decayed_weights(weight_decay, mask=train.weight_decay_mask),
                           base[name]())
    return base[name]()


def _config_from_args(args) -> dict:
    spec = DATASETS[args.dataset]
    pick = lambda value, default: default if value is None else value  # noqa: E731
    config = {
        "dataset": args.dataset,
        "hidden": list(parse_hidden(pick(args.hidden, spec.hidden))),
        "activation": pick(args.activation, spec.activation),
        "epochs": pick(args.epochs, spec.epochs),
        "batch_size": pick(args.batch_size, spec.batch_size),
        "lr": pick(args.lr, spec.lr),
        "optimizer": pick(args.optimizer, spec.optimizer),
        "schedule": pick(args.schedule, spec.schedule),
        "weight_decay": args.weight_decay,
        "grad": args.grad,
        "seed": args.seed,
        "limit": args.limit,
        "loss": spec.loss,
    }
    if config["epochs"] < 1:
        raise UsageError(f"--epochs must be >= 1, got {config['epochs']}")
    if config["batch_size"] < 1:
        raise UsageError(f"--batch-size must be >= 1, got {config['batch_size']}")
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be >= 1, got {args.limit}")
    return config


def _setup(config: dict):
    """(model, loss, optimizer, train, test, spec) for a saved or new configuration."""
    from fnnet import losses

    spec = DATASETS[config["dataset"]]
    train_data, test_data = spec.load(config["seed"])
    if config.get("limit"):
        train_data = tuple(a[:config["limit"]] for a in train_data)
    model = build_model(config["hidden"], config["activation"], spec.out_dim, train_data[0].shape[1:])
    steps_per_epoch = -(-len(train_data[0]) // min(config["batch_size"], len(train_data[0])))
    optimizer = build_optimizer(config["optimizer"], config["lr"], config["weight_decay"],
                                schedule=config.get("schedule", "constant"),
                                total_steps=config["epochs"] * steps_per_epoch)
    return model, losses.ALL[config["loss"]], optimizer, train_data, test_data, spec


def run_train(config: dict, out_dir, *, resume: bool = False, verbose: bool = True) -> dict:
    """Trains as ``fnnet train`` does and writes the checkpoint, metrics.json and curves.png."""
    import jax

    from fnnet import train

    out_dir = pathlib.Path(out_dir)
    started = time.perf_counter()
    model, loss, optimizer, train_data, test_data, spec = _setup(config)
    data_seconds = time.perf_counter() - started
    out_dir.mkdir(parents=True, exist_ok=True)
    config_path = out_dir / "config.json"
    if resume and config_path.exists():
        saved = json.loads(config_path.read_text())
        if {k: v for k, v in saved.items() if k != "epochs"} != {k: v for k, v in config.items() if k != "epochs"}:
            raise UsageError(f"--resume: {config_path} was written with different settings; use "
                             f"another --out or the same arguments")
    config_path.write_text(json.dumps(config, indent=2))
    if verbose:
        import fnnet

        print(fnnet.summary(model, train_data[0].shape[1:]))
    fit_started = time.perf_counter()
    state, history = train.fit(model, loss, optimizer, train_data, epochs=config["epochs"],
                               batch_size=config["batch_size"], key=jax.random.PRNGKey(config["seed"]),
                               eval_data=test_data, grad=config["grad"], verbose=verbose,
                               checkpoint_dir=out_dir, resume=resume)
    fit_seconds = time.perf_counter() - fit_started
    result = train.evaluate(model, state.params, loss, test_data)
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
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    history.plot(out_dir / "curves.png")
    if verbose:
        acc = result["accuracy"]
        print(f"{config['dataset']}: test loss {result['loss']:.4f}"
              + (f", test accuracy {acc:.2%}" if acc is not None else "")
              + f" ({len(history)} epochs, {train_seconds:.1f} s training, "
              f"{metrics['examples_per_second']:.0f} examples/s)")
        print(f"wrote {out_dir / 'checkpoint.safetensors'}, {out_dir / 'metrics.json'}, "
              f"{out_dir / 'curves.png'}")
    return metrics


def _cmd_train(args) -> int:
    config = _config_from_args(args)
    run_train(config, args.out or f"runs/{args.dataset}", resume=args.resume, verbose=not args.quiet)
    return 0


def run_eval(out_dir) -> dict:
    """Reloads the checkpoint in ``out_dir`` and evaluates it on the test split."""
    import jax

    from fnnet import checkpoint, train

    out_dir = pathlib.Path(out_dir)
    config_path = out_dir / "config.json"
    if not config_path.exists():
        raise UsageError(f"{out_dir}: no config.json here; is it the --out folder of 'fnnet train'?")
    config = json.loads(config_path.read_text())
    model, loss, optimizer, train_data, test_data, _ = _setup(config)
    like = jax.eval_shape(lambda: train.init_state(model, optimizer, jax.random.PRNGKey(config["seed"]),
                                                   train_data[0].shape[1:]))
    state = checkpoint.load(out_dir / train.CHECKPOINT_NAME, like=like)
    return train.evaluate(model, state.params, loss, test_data)


def _cmd_eval(args) -> int:
    result = run_eval(args.dir)
    saved_path = pathlib.Path(args.dir) / "metrics.json"
    line = f"test loss {result['loss']:.6f}"
    if result["accuracy"] is not None:
        line += f", test accuracy {result['accuracy']:.4%}"
    print(line)
    if saved_path.exists():
        saved = json.loads(saved_path.read_text())
        same = abs(saved["test_loss"] - result["loss"]) <= 1e-6 * max(1.0, abs(result["loss"])) and \
            saved["test_accuracy"] == result["accuracy"]
        print("matches metrics.json" if same else
              f"DIFFERS from metrics.json (test_loss {saved['test_loss']}, accuracy {saved['test_accuracy']})")
        return 0 if same else 1
    return 0


def _cmd_gradcheck(args) -> int:
    import jax
    import numpy as np

    from fnnet import gradcheck

    ok = True
    if args.dataset is None or args.all:
        ok &= all(report.passed for _, report in gradcheck.run_builtin(verbose=True))
    names = list(DATASETS) if args.all else ([args.dataset] if args.dataset else [])
    for name in names:
        spec = DATASETS[name]
        try:
            (x, y), _ = spec.load(0)
        except OSError as error:
            print(f"\n{name}: skipped ({str(error).splitlines()[0]})")
            continue
        model = build_model(parse_hidden(spec.hidden), spec.activation, spec.out_dim, x.shape[1:])
        _, params = model.init(jax.random.PRNGKey(0), x.shape[1:])
        # random biases move ReLU pre-activations off their kink at 0 (finite differences need it)
        params = jax.tree_util.tree_map_with_path(
            lambda path, p: p + 0.05 if getattr(path[-1], "key", None) == "b" else p, params)
        from fnnet import losses

        report = gradcheck.check_model(model, losses.ALL[spec.loss], params, np.asarray(x[:16]),
                                       np.asarray(y[:16]), raise_on_failure=False)
        print(f"\n{name}: {report.subject} on 16 real examples (float64)")
        print(report)
        ok &= report.passed
    return 0 if ok else 1


def _cmd_summary(args) -> int:
    import fnnet

    spec = DATASETS[args.dataset]
    in_shapes = {"xor": (2,), "regression": (4,), "breast-cancer": (30,), "digits": (64,),
                 "mnist": (784,), "fashion-mnist": (784,)}
    hidden = parse_hidden(args.hidden if args.hidden is not None else spec.hidden)
    model = build_model(hidden, args.activation or spec.activation, spec.out_dim, in_shapes[args.dataset])
    print(fnnet.summary(model, in_shapes[args.dataset]))
    return 0


def _cmd_demo(args) -> int:
    """XOR, then MNIST (or breast cancer when MNIST cannot be found): accuracies and plots."""
    from fnnet import datasets

    out = pathlib.Path(args.out)
    base = dict(weight_decay=0.0, grad="manual", seed=0, limit=None)
    results = {}
    xor_config = dict(base, dataset="xor", hidden=[4], activation="tanh", epochs=1000, batch_size=4,
                      lr=1.0, optimizer="sgd", loss=DATASETS["xor"].loss)
    print("== XOR: 2-4-1 tanh network, hand-written backward, SGD ==")
    results["xor"] = run_train(xor_config, out / "xor", verbose=False)
    print(f"XOR test accuracy: {results['xor']['test_accuracy']:.0%}")
    try:
        datasets.find_file("mnist", "train-images-idx3-ubyte.gz", download=not args.offline)
        name, epochs = "mnist", args.mnist_epochs
    except datasets.DataError as error:
        print(f"MNIST not found, training on breast cancer instead:\n{error}")
        name, epochs = "breast-cancer", DATASETS["breast-cancer"].epochs
    spec = DATASETS[name]
    config = dict(base, dataset=name, hidden=list(parse_hidden(spec.hidden)), activation=spec.activation,
                  epochs=epochs, batch_size=spec.batch_size, lr=spec.lr, optimizer=spec.optimizer,
                  schedule=spec.schedule, loss=spec.loss)
    print(f"\n== {name}: hidden {spec.hidden}, {spec.activation}, {spec.optimizer}, {epochs} epochs ==")
    results[name] = run_train(config, out / name, verbose=True)
    print("\nSummary")
    for key, metrics in results.items():
        print(f"  {key:<14} test accuracy {metrics['test_accuracy']:.2%}  "
              f"({metrics['train_seconds']:.1f} s training)  curves: {out / key / 'curves.png'}")
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2, no usage dump
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fnnet", description="fnnet: neural networks with hand-written, "
                                              "verified backward passes")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = commands.add_parser("train", help="train on a data set and write checkpoint, metrics, curves")
    p.add_argument("dataset", choices=list(DATASETS))
    p.add_argument("--hidden", help="hidden widths, e.g. 512,512 ('' for none)")
    p.add_argument("--activation", choices=ACTIVATIONS)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--schedule", choices=("constant", "cosine"),
                   help="learning-rate schedule (default: cosine for the MNIST sets, else constant)")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--grad", choices=("manual", "autodiff"), default="manual")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, help="train on the first N training examples only")
    p.add_argument("--out", help="output folder (default runs/DATASET)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_cmd_train)

    p = commands.add_parser("eval", help="reload a checkpoint and report the test metrics")
    p.add_argument("dir")
    p.set_defaults(run=_cmd_eval)

    p = commands.add_parser("gradcheck", help="check hand-written backward passes against jax.grad")
    p.add_argument("dataset", nargs="?", choices=list(DATASETS))
    p.add_argument("--all", action="store_true", help="built-in layers and losses, and every data set's model")
    p.set_defaults(run=_cmd_gradcheck)

    p = commands.add_parser("summary", help="print the model table for a data set")
    p.add_argument("dataset", choices=list(DATASETS))
    p.add_argument("--hidden")
    p.add_argument("--activation", choices=ACTIVATIONS)
    p.set_defaults(run=_cmd_summary)

    p = commands.add_parser("demo", help="train XOR and MNIST (or breast cancer) and report")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--mnist-epochs", type=int, default=12)
    p.add_argument("--offline", action="store_true", help="do not try to download MNIST")
    p.set_defaults(run=_cmd_demo)
    return parser


def main(argv=None) -> int:
    from fnnet.checkpoint import CheckpointError
    from fnnet.datasets import DataError

    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    except UsageError as error:
        print(f"fnnet: error: {error}", file=sys.stderr)
        return 2
    except (DataError, CheckpointError) as error:
        print(f"fnnet: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fnnet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
