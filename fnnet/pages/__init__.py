"""Pages to look at: a traced step (:mod:`fnnet.pages.trace_page`) and the charts of a run
(:mod:`fnnet.pages.charts`), each one self-contained HTML file (inline CSS and JavaScript, the data
embedded as JSON, nothing fetched), or a fragment a notebook shows inline.

``trace.to_html("t.html")`` (``fnnet trace xor --html t.html``) writes the first; ``fnnet report
RUN_DIR`` builds a run's report from both. The drawing is done in the browser by the ``.js`` files
beside this one, the data by the Python modules.
"""
