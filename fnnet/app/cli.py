"""The ``fnnet`` command line: train, eval, predict, sample, gradcheck, summary, trace, doctor, report, convert,
export and the demo.

Examples::

    fnnet train mnist --hidden 512,512 --epochs 10 --out runs/mnist
    fnnet eval runs/mnist
    fnnet predict runs/mnist images.npy --out predictions.npy     # class labels; --proba
    fnnet gradcheck breast-cancer
    fnnet summary mnist
    fnnet train shakespeare --out runs/shakespeare                # a character-level GPT
    fnnet sample runs/shakespeare --prompt "ROMEO:" --tokens 500 --temperature 0.8
    fnnet train shakespeare --model lstm --out runs/lstm         # a char-rnn: 2 layers of 128 LSTM units
    fnnet trace xor                                                # one step, every layer, as tables
    fnnet trace xor --html trace.html                              # the same step drawn, to open in a browser
    fnnet trace runs/mnist --layer 2                               # a trained run from inside
    fnnet doctor mnist                                             # the checks to run before training
    fnnet report runs/mnist                                        # runs/mnist/report.html: the run as one page
    fnnet convert nanogpt out-shakespeare-char/ckpt.pt --out runs/nanogpt   # nanoGPT's model as a run
    fnnet export runs/mnist mnist.onnx                             # ONNX, checked with onnxruntime
    fnnet demo
"""

from __future__ import annotations

import argparse
import atexit
import gc
import os
import re
import sys
import threading

from fnnet.app.choices import (ACTIVATIONS, CHECKPOINT_EVERY, CNN_RECIPE_NAMES, DATASETS, MODELS, OPTIMIZERS,
                               SCHEDULES, TEXT, TEXT_MODELS, TEXT_RECIPE_NAMES, WINDOWS)
from fnnet.app.usage import UsageError

__all__ = ["ACTIVATIONS", "DATASETS", "EXIT_CODES", "OPTIMIZERS", "SCHEDULES", "UsageError", "build_parser", "entry_point", "main"]


EXIT_CODES = {
    0: "success",
    1: "a check failed (gradcheck, a trace's forward or vjp check or a NaN in it, a doctor check, or eval found "
       "results that differ from metrics.json)",
    2: "a usage error: a bad argument, data set, run folder or checkpoint (one line on stderr)",
    3: "training diverged (the loss became NaN or infinite); the last good checkpoint is kept",
    4: "a checkpoint or output could not be written (disk full...); the previous checkpoint is kept",
    130: "interrupted (Ctrl-C); the checkpoint of the last finished epoch is kept",
    141: "the output's reader closed the pipe (fnnet trace xor | head); nothing else went wrong",
}
"""What ``fnnet``'s exit status means (``fnnet --help`` lists it too)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2, no usage dump
        raise UsageError(message)


def _add_model_flags(p) -> None:
    """The flags that choose and train a model: ``fnnet train``, ``gradcheck`` and ``summary`` share them,
    so every model the CLI trains can be summarised and gradient-checked with the same arguments."""
    p.add_argument("--model", choices=MODELS + TEXT_MODELS, default="mlp",
                   help="mlp (Dense layers, --hidden), or for images a cnn or resnet (fnnet.app.recipes.build_cnn); "
                        f"for {TEXT} gpt (the default) or a char-rnn: rnn, lstm or gru (fnnet.app.char_rnn)")
    p.add_argument("--recipe", choices=CNN_RECIPE_NAMES + TEXT_RECIPE_NAMES,
                   help="how --model cnn trains (fnnet.app.recipes.CNN_RECIPES): fast (a small network, one-cycle "
                        "Adam, shifted images, 8 epochs; MNIST's default) or classic (BatchNorm network, cosine "
                        f"decay; Fashion-MNIST's default); how {TEXT}'s GPT trains (fnnet.app.shakespeare.RECIPES): "
                        "nanogpt (its CPU recipe; the default) or speedrun (RoPE, QK-norm, ReLU², soft-capped "
                        "logits, Muon: validation loss 1.88 in about 20 s)")
    p.add_argument("--augment", type=int, metavar="PIXELS",
                   help="shift each training image by up to PIXELS pixels, on the device (default: the recipe's; "
                        "0 for none)")
    p.add_argument("--hidden", help="hidden widths, e.g. 512,512 ('' for none); a char-rnn's: one width (128)")
    p.add_argument("--activation", choices=ACTIVATIONS)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--schedule", choices=SCHEDULES,
                   help="learning-rate schedule (default: cosine for the MNIST sets, onecycle for the fast CNN "
                        "recipe, else constant)")
    p.add_argument("--weight-decay", type=float, help="decoupled weight decay (default 0; 0.1 for the GPT)")
    p.add_argument("--grad", choices=("manual", "autodiff"), default="manual")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, help="train on the first N training examples only")
    p.add_argument("--monitor", type=int, metavar="N",
                   help="every N steps record each layer's health (activations, dead/saturated units, gradient "
                        "norm, update/weight ratio) inside the compiled step: warnings, metrics.json, health.png")
    gpt_flags = p.add_argument_group(f"GPT and char-rnn ({TEXT}; defaults: nanoGPT's CPU recipe, "
                                     f"fnnet.app.shakespeare.DEFAULTS; char-rnn's, fnnet.app.char_rnn.DEFAULTS)")
    gpt_flags.add_argument("--layers", type=int, help="transformer blocks (4); a char-rnn's recurrent layers (2)")
    gpt_flags.add_argument("--heads", type=int, help="attention heads (4)")
    gpt_flags.add_argument("--features", type=int, help="embedding width (128)")
    gpt_flags.add_argument("--block-size", type=int, help="context length in characters (64)")
    gpt_flags.add_argument("--dropout", type=float, help="dropout rate (0)")
    gpt_flags.add_argument("--steps", type=int, help="optimizer steps (2000)")
    gpt_flags.add_argument("--eval-interval", type=int, help="steps between validation estimates (250)")
    gpt_flags.add_argument("--eval-batches", type=int, help="batches per validation estimate (20)")
    gpt_flags.add_argument("--seq-len", type=int, help="a char-rnn's training windows, in characters (50)")
    gpt_flags.add_argument("--windows", choices=WINDOWS,
                           help="a char-rnn's training windows: at random starts, or streams that keep each "
                                "layer's carry from step to step (truncated backprop through time); default: random")


_FORM_FLAGS = ("model", "recipe", "hidden", "activation", "layers", "heads", "features", "block_size", "dropout",
               "windows")
"""The flags of :func:`_add_model_flags` that shape the model itself: what gradcheck, summary and doctor build."""
_TRAINING_FLAGS = ("epochs", "batch_size", "lr", "optimizer", "schedule", "weight_decay", "grad", "limit", "monitor",
                   "augment", "steps", "eval_interval", "eval_batches", "seq_len")
"""The flags of :func:`_add_model_flags` that only training uses."""
_DEFAULTS = {"model": "mlp", "grad": "manual"}  # the flags above whose default is not None


def _given(args, names) -> list[str]:
    """The flags among ``names`` given a value other than their default, as ``--flag``."""
    return ["--" + name.replace("_", "-") for name in names
            if getattr(args, name, None) not in (None, _DEFAULTS.get(name))]


def _check_args(args) -> None:
    """The checks that need only the command line (no JAX, no data, no run folder): each bad
    argument a :class:`UsageError`, so that it is refused at once, before any work."""
    if args.command == "trace":
        if args.examples < 1:
            raise UsageError(f"--examples must be >= 1, got {args.examples}")
        if args.explain is not None and args.explain < 0:
            raise UsageError(f"--explain must be >= 0 (a unit of the layer's output), got {args.explain}")
        if args.max_units < 1:
            raise UsageError(f"--max-units must be >= 1, got {args.max_units}")
        if args.layer is not None and not re.fullmatch(r"-?\d+|\d+(/\d+)+", args.layer):
            raise UsageError(f"--layer must be a layer's index (2; -1 counts from the end) or path (3/1/0), "
                             f"got {args.layer!r}")
    elif args.command == "report" and args.examples < 1:
        raise UsageError(f"--examples must be >= 1, got {args.examples}")
    elif args.command == "doctor":
        training = _given(args, _TRAINING_FLAGS)
        if training:
            raise UsageError(f"{', '.join(training)}: {'training flags' if len(training) > 1 else 'a training flag'}, "
                             f"which doctor does not use (it checks a fresh model or a run's saved parameters; its "
                             f"overfit check takes its own Adam steps): drop {'them' if len(training) > 1 else 'it'}")
        form = _given(args, _FORM_FLAGS)
        if form and args.target not in DATASETS and args.target != TEXT:
            raise UsageError(f"{form[0]}: a run folder's model is fixed by its config.json; model flags are for "
                             f"'fnnet doctor DATASET'")
    elif args.command == "gradcheck":
        given = _given(args, _FORM_FLAGS + _TRAINING_FLAGS)
        if args.all and args.dataset is not None:
            raise UsageError(f"--all checks every data set; drop {args.dataset}, or drop --all to check "
                             f"{args.dataset}'s model alone")
        if args.all and given:
            raise UsageError(f"--all checks each data set's own model, as 'fnnet train DATASET' builds it by "
                             f"default: drop {given[0]}, or name one data set (fnnet gradcheck mnist {given[0]} ...)")
        if given and args.dataset is None:
            raise UsageError(f"{given[0]} is for a data set's model: name the data set whose model to check "
                             f"(fnnet gradcheck mnist {given[0]} ...)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fnnet", description="fnnet: neural networks with hand-written, "
                                              "verified backward passes",
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog="exit status:\n" + "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_CODES.items()))
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    _add_training_commands(commands)
    _add_inspection_commands(commands)
    _add_exchange_commands(commands)
    return parser


def _add_training_commands(commands) -> None:
    """train, sample, eval, predict: make a run and use it."""
    p = commands.add_parser("train", help="train on a data set and write checkpoint, metrics, curves",
                            description="Trains the model the flags describe on DATASET and writes the run folder "
                                        "--out (default runs/DATASET): config.json, checkpoint.safetensors, "
                                        "metrics.json and curves.png. A folder that holds a run already needs "
                                        "--resume (continue it) or --overwrite (replace it).")
    p.add_argument("dataset", choices=list(DATASETS) + [TEXT],
                   help=f"a data set; {TEXT} trains a character-level GPT (fnnet.app.shakespeare), or with "
                        f"--model lstm (rnn, gru) a char-rnn (fnnet.app.char_rnn)")
    _add_model_flags(p)
    p.add_argument("--out", help="output folder (default runs/DATASET)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--checkpoint-every", type=float, default=CHECKPOINT_EVERY, metavar="SECONDS",
                   help=f"seconds between checkpoints ({CHECKPOINT_EVERY:g}; 0: after every epoch); one is always "
                        f"written after the last epoch and on Ctrl-C")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out (its checkpoint, config, metrics and plots)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--report", action="store_true",
                   help="at the end, also write RUN_DIR/report.html (what 'fnnet report RUN_DIR' writes; a few "
                        "seconds, so off by default) and print its path")

    p = commands.add_parser("sample", help="generate text with a trained GPT or char-rnn run",
                            description="Loads RUN_DIR (the --out folder of 'fnnet train shakespeare') and "
                                        "prints PROMPT followed by --tokens sampled characters.")
    p.add_argument("run_dir", help="the --out folder of 'fnnet train shakespeare'")
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--tokens", type=int, default=500, help="characters to generate (500)")
    p.add_argument("--temperature", type=float, default=0.8, help="softmax temperature (0.8)")
    p.add_argument("--top-k", type=int, help="sample only among the k likeliest characters")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timing", action="store_true", help="print the time taken to stderr")

    p = commands.add_parser("eval", help="reload a checkpoint and report the test metrics",
                            description="Reloads the run in DIR (the --out folder of 'fnnet train', or of 'fnnet "
                                        "convert') and evaluates it on the test split (a GPT: the exact "
                                        "validation loss); exit status 1 when the result differs from the run's "
                                        "metrics.json.")
    p.add_argument("dir", help="a run folder (the --out of 'fnnet train')")

    p = commands.add_parser(
        "predict", help="predict with a trained run on the examples in a .npy file",
        description="Loads RUN_DIR (the --out folder of 'fnnet train') and writes its predictions for "
                    "the examples in INPUT.npy: class labels (int32, shape (N,)) for a classifier, "
                    "the predicted values for regression, or with --proba the class probabilities "
                    "(softmax, shape (N, classes); for a binary classifier the probability of class 1, "
                    "shape (N,)). INPUT.npy holds N "
                    "examples prepared as fnnet.datasets returns them (MNIST: float pixels in [0, 1], "
                    "shape (N, 784) or (N, 28, 28); breast cancer: standardised features).")
    p.add_argument("run_dir", help="the --out folder of 'fnnet train'")
    p.add_argument("input", help="a .npy file of N examples (numpy.save)")
    p.add_argument("--out", default="predictions.npy", help="where to write the predictions "
                                                            "(default predictions.npy)")
    p.add_argument("--proba", action="store_true", help="write probabilities instead of class labels")


def _add_inspection_commands(commands) -> None:
    """gradcheck, summary, trace, doctor, report: look inside a model before and after training."""
    p = commands.add_parser("gradcheck", help="check hand-written backward passes against jax.grad",
                            description="Without a data set: every built-in layer, loss and model. With one: "
                                        "the model 'fnnet train' builds from the same flags, on real examples.")
    p.add_argument("dataset", nargs="?", choices=list(DATASETS) + [TEXT])
    p.add_argument("--all", action="store_true", help="built-in layers and losses, and every data set's model")
    _add_model_flags(p)

    p = commands.add_parser("summary", help="print the model table for a data set (the flags of fnnet train)",
                            description="Prints the model 'fnnet train DATASET' builds from the same flags, layer "
                                        "by layer: output shapes and parameter counts, and the totals. Nothing "
                                        "is trained or computed.")
    p.add_argument("dataset", choices=list(DATASETS) + [TEXT])
    _add_model_flags(p)

    p = commands.add_parser(
        "trace", help="one step seen from inside: every layer's values, gradients and a check against jax.vjp",
        description="'fnnet trace xor' prints the tutorials' XOR network step as tables (inputs, weights, z, "
                    "activations, deltas, dW, db). 'fnnet trace RUN_DIR' runs a trained run on --examples test "
                    "examples and prints one row per layer; --layer K prints that layer's tables. Exit "
                    "status 1 when a layer's forward disagrees with its apply, its hand-written backward with "
                    "jax.vjp, or it computed a NaN or inf.")
    p.add_argument("target", help="xor, or a run folder (the --out of 'fnnet train')")
    p.add_argument("--examples", type=int, default=8, help="test examples to trace (8; at least 1)")
    p.add_argument("--layer", help="a layer's index (or path such as 3/1/0): print its tables")
    p.add_argument("--explain", type=int, metavar="UNIT",
                   help="explain this unit's gradient in --layer (default layer 0), term by term")
    p.add_argument("--max-units", type=int, default=16, help="rows and columns shown per table (16)")
    p.add_argument("--json", help="also write the trace as JSON to this file")
    p.add_argument("--arrays", action="store_true", help="with --json: include every array")
    p.add_argument("--html", metavar="FILE", help="also write the step as one self-contained page to look at in a "
                                                  "browser: every layer's numbers drawn, each unit's chain rule")
    p.add_argument("--through-time", nargs="?", const="", metavar="PNG",
                   help="for a model with RNN, LSTM or GRU layers: print how the gradient ‖∂L/∂h_t‖ fares from "
                        "t = T back to 1 and draw it into PNG (default RUN_DIR/through_time.png)")

    p = commands.add_parser(
        "doctor", help="the checks to run before trusting training: loss at init, overfit a batch, ...",
        description="Karpathy's checklist with numbers: the loss at initialisation against log K, overfitting "
                    "16 examples, the independence of a batch's examples (through the hand-written backward), "
                    "gradcheck at the current parameters, dead or saturated units at initialisation. TARGET "
                    "is a data set (the model 'fnnet train' builds from the same flags, freshly initialised) "
                    "or a run folder (its trained parameters). Exit status 1 when a check fails.")
    p.add_argument("target", help="a data set (" + ", ".join(list(DATASETS) + [TEXT]) + ") or a run folder")
    _add_model_flags(p)

    p = commands.add_parser(
        "report", help="a trained run as one page: settings, curves, health, a trace, what the model does",
        description="Writes RUN_DIR/report.html, one self-contained page to open in a browser: the settings and "
                    "the command that made the run, its results and model summary, the learning curves, the "
                    "per-layer health when it was monitored, the trace of a few test examples (every layer's "
                    "numbers), and what the model does (labelled test images and the confusion matrix; for Tiny "
                    "Shakespeare, samples at a few temperatures).")
    p.add_argument("dir", help="a run folder (the --out of 'fnnet train')")
    p.add_argument("--out", help="write the page here instead (default RUN_DIR/report.html)")
    p.add_argument("--examples", type=int, default=4, help="test examples (for Tiny Shakespeare: validation windows) to trace (4; at least 1)")


def _add_exchange_commands(commands) -> None:
    """convert, export, demo: models in from elsewhere and out to ONNX, and the two-minute demo."""
    p = commands.add_parser(
        "convert", help="bring a model trained elsewhere in as a run folder (nanoGPT's ckpt.pt)",
        description="Converts nanoGPT's ckpt.pt (as its train.py writes it) into a run folder that 'fnnet sample', "
                    "'eval', 'trace' and 'train shakespeare --resume --steps N' (fine-tuning) accept; the "
                    "conversion is exact (fnnet.interop.from_nanogpt: the same logits and gradients).")
    p.add_argument("source", choices=("nanogpt",), help="where the model comes from")
    p.add_argument("checkpoint", help="nanoGPT's ckpt.pt (keys with torch.compile's _orig_mod. prefix are fine)")
    p.add_argument("--meta", help="nanoGPT's meta.pkl (data/shakespeare_char/meta.pkl): the character vocabulary; "
                                  "without it the model's vocabulary must be Tiny Shakespeare's 65 characters")
    p.add_argument("--out", required=True, help="the run folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    p.add_argument("--quiet", action="store_true")

    p = commands.add_parser(
        "export", help="write a trained run as an ONNX model (checked with onnxruntime)",
        description="Writes RUN_DIR's model in evaluation mode as an ONNX graph with a dynamic batch axis "
                    "(fnnet.interop.to_onnx), then runs it with onnxruntime on a few test examples and compares "
                    "with fnnet (exit status 1 if they differ by more than 1e-5 of the largest output).")
    p.add_argument("run_dir", help="a run folder (the --out of 'fnnet train', or of 'fnnet convert')")
    p.add_argument("out", help="the .onnx file to write")
    p.add_argument("--opset", type=int, help="ONNX opset (default 18; 17 and up)")

    p = commands.add_parser("demo", help="train XOR and MNIST (or breast cancer) and report",
                            description="Trains the XOR network, then an MLP on MNIST (on breast cancer when "
                                        "MNIST cannot be found), into --out/xor and --out/DATASET (replacing "
                                        "what an earlier demo wrote there), and reports their test accuracies.")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--mnist-epochs", type=int, default=5,
                   help="MNIST epochs (5: about 98.4%% in 13 s on 2 cores; fnnet train mnist's 12 reach 98.5%%)")
    p.add_argument("--offline", action="store_true", help="do not try to download MNIST")


def main(argv=None) -> int:
    """``fnnet ARGS``: parses the command line, then runs the command (:func:`fnnet.app.commands.run`);
    returns the exit status (:data:`EXIT_CODES`)."""
    return _main(argv, whole_process=False)


def _main(argv, *, whole_process: bool) -> int:
    try:
        args = build_parser().parse_args(argv)
        _check_args(args)
    except UsageError as error:
        print(f"fnnet: error: {error}", file=sys.stderr)
        return 2
    if whole_process:  # the imports build ~10^6 objects that live as long as the process: Python's
        gc.disable()   # collector would scan them again and again, while they are built and after
    try:
        from fnnet.app import commands, process  # only now: `fnnet --help` and a bad flag answer without JAX
    finally:
        if whole_process:
            gc.freeze()  # what the imports made: never scanned again (a process of its own only)
            gc.enable()
    if whole_process and args.command == "train" and args.dataset == TEXT:
        process.use_every_core()  # before JAX starts: a char-rnn trains with one CPU device a core
    return commands.run(args)


def entry_point() -> None:
    """The ``fnnet`` script and ``python -m fnnet``: :func:`main`, then the process ends at once.

    Two things only a process of its own may do, each worth ~0.15-0.35 s of a small job such as
    ``fnnet train xor`` (about 2 s in all): Python's garbage collector is paused while JAX and fnnet
    import and what they built is then frozen out of later collections (``gc.freeze``); and once
    the command has returned, the output is flushed, the ``atexit`` functions run and the process
    ends (``os._exit``) without tearing down its modules, compiled programs and the XLA client.
    Errors that escape :func:`main` take Python's usual way out, traceback and all."""
    code = _main(None, whole_process=True)
    for thread in threading.enumerate():  # non-daemon threads would be joined at a normal exit
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):  # last: what the threads and atexit functions wrote too
        try:
            if stream is not None:  # `fnnet ... >&-`: no stdout at all
                stream.flush()
        except BrokenPipeError:  # the reader has gone (`fnnet trace xor | head`): nothing more to say
            code = code or 141
        except OSError as error:  # `> /dev/full`
            code = code or 4
            os.write(2, f"fnnet: error: the output could not be written ({error.strerror or error})\n".encode())
    os._exit(code)


if __name__ == "__main__":
    entry_point()
