"""The application: what stands on the library and knows about data sets and files on disk.

* :mod:`~fnnet.app.cli`: the ``fnnet`` command line (``python -m fnnet``); :mod:`~fnnet.app.commands`:
  what each command does; :mod:`~fnnet.app.process`: the process around it (compilation cache, exit codes);
* :mod:`~fnnet.app.recipes`: the data sets the command line trains on, and how a model and an
  optimizer are built from a run's settings;
* :mod:`~fnnet.app.jobs`: run folders (what a training job writes, resume and overwrite);
* :mod:`~fnnet.app.runs`: :func:`load_run`, a trained run folder loaded back;
* :mod:`~fnnet.app.shakespeare`: the Tiny Shakespeare GPT recipe; :mod:`~fnnet.app.char_rnn`: its
  char-rnn (``--model lstm``, ``rnn``, ``gru``).

The library (``fnnet.layer``, ``layers``, ``combinators``, ``losses``, ``gradients``, ``train``,
``gradcheck``, ``gpt``...) never imports this package (``tests/test_layering.py``).
"""
