/* fnnet's trace page: every layer's forward and backward numbers of one traced step.
   Each <div class="fnnet-trace"> holds its data (a <script type="application/json">, written by
   fnnet/pages/trace_page.py); mountAll draws every one not drawn yet, so a report or a notebook
   may hold several. Parts: the header (loss, verdict), the example selector and the colour legend,
   the overview (one box per layer, combinators nested), the units of small layers (an SVG: nodes
   with the value and δ of the selected example, weights as coloured edges), the chain rule of the
   clicked unit (MathML), and the selected layer's detail (histograms, heat maps, feature maps,
   attention, gradient through time). */
(function () {
  "use strict";
  const D = window.fnnetDraw, el = D.el, svg = D.svg, fmt = D.fmt;

  function maxAbs(rows) {
    let m = 0;
    (rows || []).forEach(function (r) { (Array.isArray(r) ? r : [r]).forEach(function (v) {
      if (Number.isFinite(v)) m = Math.max(m, Math.abs(v)); }); });
    return m;
  }

  function numberSpan(v, attrs) {
    const span = el("span", attrs || {}, fmt(v));
    span.setAttribute("data-value", String(v));
    if (!Number.isFinite(v)) span.classList.add("fn-nonfinite");
    return span;
  }

  function checkText(L) {
    const f = L.forward + (L.forward_error === null ? "" : " (" + fmt(L.forward_error, 2) + ")");
    const v = L.vjp + (L.vjp_error === null ? "" : " (" + fmt(L.vjp_error, 2) + ")");
    return "vjp check " + v + " · forward " + f;
  }

  function statsText(L) {
    const s = L.stats, parts = [];
    ["mean", "std"].forEach(function (k) { if (k in s) parts.push(k + " " + fmt(s[k], 3)); });
    if ("zeros" in s) parts.push("zeros " + fmt(100 * s.zeros, 3) + "%");
    if ("dead" in s) parts.push("dead " + fmt(100 * s.dead, 3) + "%");
    if ("saturated" in s) parts.push("saturated " + fmt(100 * s.saturated, 3) + "%");
    return parts.join(" · ");
  }

  function layerBox(view, L) {
    const box = el("button", {"type": "button", "class": "ft-box" + (L.passed ? "" : " ft-not-ok"),
      "data-index": L.index, "data-path": L.path, "aria-pressed": "false",
      "aria-label": L.label + ": " + (L.passed ? "OK" : "NOT OK")});
    box.append(el("div", {"class": "ft-name"}, L.label),
      el("div", {}, L.in_shape + " → " + L.out_shape),
      el("div", {}, L.params.toLocaleString("en") + " params"));
    const check = el("div", {"class": "ft-check " + (L.passed ? "fn-ok" : "fn-bad")},
      (L.passed ? "" : "NOT OK · ") + checkText(L));
    box.append(check);
    if (L.problem || L.nonfinite) box.append(el("div", {"class": "fn-bad ft-problem"}, L.problem || L.nonfinite));
    const dy = el("div", {}, "‖dy‖ ");
    dy.append(numberSpan(L.dy_norm));
    if (L.dparams_norm !== null) { dy.append(" · ‖dθ‖ "); dy.append(numberSpan(L.dparams_norm)); }
    box.append(dy, el("div", {"class": "fn-muted"}, statsText(L)));
    box.addEventListener("click", function () { view.selectLayer(L.index); });
    return box;
  }

  /* Layers nested by path: "2/1/0" sits in group "2", then "2/1". A group whose children are the
     branches of one fan-out (their first layers all consume one layer's output) is a column. */
  function tree(layers) {
    const root = {children: [], key: ""};
    layers.forEach(function (L) {
      const parts = L.path ? L.path.split("/") : [];
      let node = root;
      for (let d = 0; d < parts.length - 1; d++) {
        const key = parts.slice(0, d + 1).join("/");
        let child = node.children.find(function (c) { return c.key === key && c.children; });
        if (!child) { child = {key: key, children: []}; node.children.push(child); }
        node = child;
      }
      node.children.push({key: L.path, layer: L});
    });
    return root;
  }

  function firstLayer(node) { return node.layer || firstLayer(node.children[0]); }

  function isParallel(node, layers) {
    if (node.children.length < 2) return false;
    const firsts = node.children.map(function (c) { return firstLayer(c).index; });
    return layers.some(function (P) {
      return firsts.every(function (i) { return P.consumers.some(function (c) { return c[0] === i; }); });
    });
  }

  function drawTree(view, node, into) {
    node.children.forEach(function (child, k) {
      if (k > 0 && !into.classList.contains("ft-parallel")) into.append(el("span", {"class": "ft-arrow", "aria-hidden": "true"}, "→"));
      if (child.layer) { into.append(layerBox(view, child.layer)); return; }
      const group = el("div", {"class": "ft-group" + (isParallel(child, view.data.layers) ? " ft-parallel" : ""),
        "role": "group", "aria-label": "layer " + child.key});
      group.append(el("span", {"class": "ft-group-name"}, "layer " + child.key +
        (isParallel(child, view.data.layers) ? " (branches)" : "")));
      drawTree(view, child, group);
      into.append(group);
    });
  }

  /* Runs of small layers where each feeds the next: each run is one SVG of units. */
  function segments(layers) {
    const out = [];
    let cur = [];
    layers.forEach(function (L) {
      if (!L.small) { if (cur.length) out.push(cur); cur = []; return; }
      const prev = cur[cur.length - 1];
      if (prev && !(prev.consumers.length === 1 && prev.consumers[0][0] === L.index && prev.consumers[0][1] === null)) {
        out.push(cur); cur = [];
      }
      cur.push(L);
    });
    if (cur.length) out.push(cur);
    return out;
  }

  function node(view, col, j, value, delta, scale, L, symbol) {
    const g = svg("g", {"class": "ft-node", "transform": "translate(" + col.x + "," + (col.y0 + j * 64) + ")"});
    g.append(svg("rect", {"width": 132, "height": 54, "rx": 8, "fill": D.color(scale ? value / scale : 0),
      "stroke": Number.isFinite(value) && Number.isFinite(delta === null ? 0 : delta) ? "#444" : "#b2182b",
      "stroke-width": 1.5}));
    const t1 = svg("text", {"x": 8, "y": 17, "font-size": 12, "class": "ft-value", "data-value": String(value)},
      symbol + "[" + j + "] = " + fmt(value));
    const t2 = svg("text", {"x": 8, "y": 37, "font-size": 12, "class": "ft-delta", "data-value": String(delta)},
      delta === null ? "" : "δ = " + fmt(delta));
    [t1, t2].forEach(function (t) {
      const v = Number(t.getAttribute("data-value"));
      if (t.textContent && !Number.isFinite(v)) t.setAttribute("fill", "#b2182b");
      g.append(t);
    });
    if (L) {
      g.setAttribute("tabindex", "0");
      g.setAttribute("role", "button");
      g.setAttribute("data-layer", L.index);
      g.setAttribute("data-unit", j);
      g.setAttribute("aria-label", L.label + " unit " + j + ": value " + fmt(value) + ", delta " + fmt(delta));
      g.addEventListener("click", function () { view.selectUnit(L.index, j); });
      g.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); view.selectUnit(L.index, j); }
      });
    }
    return g;
  }

  function drawSegment(view, seg) {
    const e = view.example, first = seg[0], cols = [], w = 200;
    const hasInput = first.units.x !== undefined;
    const heights = [hasInput ? first.units.x[e].length : 0].concat(seg.map(function (L) { return L.units.y[e].length; }));
    const tallest = Math.max.apply(null, heights);
    heights.forEach(function (n, c) { cols.push({x: 10 + c * w, y0: 34 + (tallest - n) * 32}); });
    const box = svg("svg", {"width": 20 + heights.length * w, "height": 44 + tallest * 64,
      "role": "group", "aria-label": "units of layers " + seg.map(function (L) { return L.path; }).join(", ")});
    const edges = svg("g"), nodes = svg("g");
    box.append(edges, nodes);
    if (hasInput) {
      box.append(svg("text", {"x": cols[0].x, "y": 18, "font-size": 12, "font-weight": 700}, "input x"));
      const sx = maxAbs(first.units.x);
      first.units.x[e].forEach(function (v, i) { nodes.append(node(view, cols[0], i, v, null, sx, null, "x")); });
    }
    seg.forEach(function (L, k) {
      const c = cols[k + 1], prev = cols[k], u = L.units, sy = maxAbs(u.y), symbol = L.kind === "Dense" ? "z" : "a";
      box.append(svg("text", {"x": c.x, "y": 18, "font-size": 12, "font-weight": 700,
        "fill": L.passed ? "#1a1a1a" : "#b2182b"}, L.label + (L.passed ? "" : " NOT OK")));
      u.y[e].forEach(function (v, j) {
        const sel = view.unit && view.unit[0] === L.index && view.unit[1] === j;
        const g = node(view, c, j, v, u.dy ? u.dy[e][j] : null, sy, L, symbol);
        if (sel) g.classList.add("ft-selected");
        nodes.append(g);
      });
      if (k === 0 && !hasInput) return;
      const width = heights[k];
      if (u.w) {
        const sw = maxAbs(u.w);
        u.w.forEach(function (row, i) { row.forEach(function (wij, j) {
          const line = svg("line", {"x1": prev.x + 132, "y1": prev.y0 + i * 64 + 27, "x2": c.x, "y2": c.y0 + j * 64 + 27,
            "stroke": D.color(sw ? wij / sw : 0), "stroke-width": 1 + 4 * (sw ? Math.min(1, Math.abs(wij) / sw) : 0),
            "class": "ft-edge", "data-w": String(wij), "data-dw": String(u.dw ? u.dw[i][j] : null)});
          line.append(svg("title", {}, "w[" + i + "," + j + "] = " + fmt(wij, 6) + "   dW[" + i + "," + j + "] = " +
            (u.dw ? fmt(u.dw[i][j], 6) : "–")));
          edges.append(line);
        }); });
      } else if (width === u.y[e].length) {
        for (let j = 0; j < width; j++) {
          edges.append(svg("line", {"x1": prev.x + 132, "y1": prev.y0 + j * 64 + 27, "x2": c.x, "y2": c.y0 + j * 64 + 27,
            "stroke": "#999", "stroke-width": 1.5, "stroke-dasharray": L.elementwise ? "" : "4 3"}));
        }
      }
    });
    return box;
  }

  function valueRow(table, name, v, attrs) {
    const tr = el("tr");
    tr.append(el("th", {}, name));
    const td = el("td", Object.assign({"class": "fn-num"}, attrs || {}));
    td.append(numberSpan(v));
    td.setAttribute("data-value", String(v));
    tr.append(td);
    table.append(tr);
  }

  function explainUnit(view) {
    const box = view.parts.explain, L = view.data.layers[view.unit[0]], j = view.unit[1], e = view.example, u = L.units;
    box.replaceChildren(el("h3", {}, L.label + ", unit " + j + ", example " + e));
    const table = el("table", {"class": "fn-table ft-unit-values"});
    valueRow(table, (L.kind === "Dense" ? "z" : "y") + " (forward)", u.y[e][j], {"data-field": "y"});
    if (u.dy) valueRow(table, "δ = ∂L/∂y (backward)", u.dy[e][j], {"data-field": "delta"});
    if (u.w) {
      u.w.forEach(function (row, i) {
        valueRow(table, "w[" + i + "," + j + "]", row[j], {"data-field": "w", "data-row": i});
        if (u.dw) valueRow(table, "dW[" + i + "," + j + "]", u.dw[i][j], {"data-field": "dW", "data-row": i});
      });
      if (u.b) valueRow(table, "b[" + j + "]", u.b[j], {"data-field": "b"});
      if (u.db) valueRow(table, "db[" + j + "]", u.db[j], {"data-field": "db"});
    }
    box.append(table);
    const ex = L.explain && L.explain[e] && L.explain[e][j];
    if (ex) {
      const math = el("div", {"class": "ft-math"});
      math.innerHTML = ex.html;   /* written by fnnet.pages.mathml from fnnet.explain's text, escaped there */
      const raw = el("details");
      raw.append(el("summary", {}, "as text (fnnet.explain)"), el("pre", {}, ex.text));
      box.append(math, raw);
    } else {
      box.append(el("p", {"class": "fn-muted"}, "The chain rule is embedded for the first " +
        view.data.explain_examples + " examples; `fnnet trace --explain` prints it for any."));
    }
  }

  function detail(view) {
    const box = view.parts.detail, L = view.data.layers[view.layer], e = view.example;
    box.replaceChildren(el("h2", {}, "Layer detail: " + L.label));
    const p = el("p", {"class": L.passed ? "fn-ok" : "fn-bad"}, (L.passed ? "" : "NOT OK · ") + checkText(L) +
      (L.problem ? " — " + L.problem : "") + (L.nonfinite ? " — " + L.nonfinite : ""));
    box.append(p, el("p", {}, L.in_shape + " → " + L.out_shape + " · " + L.params.toLocaleString("en") +
      " params · " + statsText(L)));
    const figs = el("div", {"class": "fn-figures"});
    if (L.hist.y) figs.append(D.histogram(L.hist.y, "output y"));
    if (L.hist.dy) figs.append(D.histogram(L.hist.dy, "gradient dy = ∂L/∂y"));
    L.heat.forEach(function (h) {
      figs.append(D.heat(h.value, h.name));
      if (h.grad) figs.append(D.heat(h.grad, "d" + h.name));
    });
    (L.kernels || []).forEach(function (k, c) { figs.append(D.heat(k, "kernel " + c + " (input channel 0)", 10)); });
    [["y", "output"], ["dy", "gradient ∂L/∂y"]].forEach(function (pair) {
      const maps = L.maps[pair[0]];
      if (!maps) return;
      if (e >= maps.length) { figs.append(el("p", {"class": "fn-muted"}, pair[1] + ": embedded for the first " + maps.length + " examples")); return; }
      maps[e].forEach(function (m, c) { figs.append(D.heat(m, pair[1] + (maps[e].length > 1 ? ", channel " + c : "") + ", example " + e)); });
    });
    if (L.attention && e < L.attention.length) {
      L.attention[e].forEach(function (m, h) { figs.append(D.heat(m, "attention, head " + h + ", example " + e + " (rows: queries)")); });
    }
    if (L.time) {
      figs.append(D.lines({"‖∂L/∂h_t‖": L.time}, L.time.map(function (_, i) { return i + 1; }),
        "gradient through time (t = 1…T)", true));
    }
    box.append(figs);
  }

  function View(root) {
    this.root = root;
    this.data = D.readData(root.querySelector("script.fnnet-trace-data"));
    this.example = 0;
    this.layer = 0;
    this.unit = null;
    this.parts = {};
  }

  View.prototype.build = function () {
    const d = this.data, self = this, root = this.root;
    const head = el("div", {"class": "ft-head"});
    const failed = d.layers.filter(function (L) { return !L.passed; });
    head.append(el("h2", {}, d.title),
      el("span", {"class": "ft-verdict " + (failed.length ? "fn-bad" : "fn-ok")}, failed.length ?
        "NOT OK: " + failed.map(function (L) { return L.label; }).join(", ") :
        "every layer OK (forward = apply, backward = jax.vjp, all finite)"));
    const loss = el("span", {}, d.loss_name + " loss ");
    loss.append(numberSpan(d.loss));
    head.append(loss, el("span", {"class": "fn-muted"}, d.examples.length + " examples, " + (d.train ? "train" : "eval") + " mode"));
    const controls = el("div", {"class": "ft-controls"});
    const label = el("label", {}, "Example ");
    const select = el("select", {"class": "ft-example", "aria-label": "example"});
    d.examples.forEach(function (text, n) { select.append(el("option", {"value": n}, text)); });
    select.addEventListener("change", function () { self.setExample(Number(select.value)); });
    label.append(select);
    controls.append(label, D.legend("−max"));
    const overview = el("section", {"class": "ft-overview", "aria-label": "layers"});
    drawTree(this, tree(d.layers), overview);
    this.parts = {select: select, overview: overview, input: el("div", {"class": "fn-figures ft-input"}),
      units: el("section", {"class": "ft-units", "aria-label": "units of the small layers"}),
      explain: el("section", {"class": "ft-explain", "aria-live": "polite"}),
      detail: el("section", {"class": "ft-detail"})};
    this.parts.explain.append(el("p", {"class": "fn-muted"}, "Click a unit (or focus it and press Enter) for its chain rule."));
    root.append(head, controls, el("h2", {}, "Layers"), overview, this.parts.input, this.parts.units,
      this.parts.explain, this.parts.detail);
    this.redraw();
  };

  View.prototype.redraw = function () {
    const self = this, d = this.data;
    this.parts.input.replaceChildren();
    if (d.input && this.example < d.input.length) {
      d.input[this.example].forEach(function (m, c) { self.parts.input.append(D.heat(m, "input, example " + self.example + (d.input[self.example].length > 1 ? ", channel " + c : ""))); });
    }
    const segs = segments(d.layers);
    this.parts.units.replaceChildren();
    if (segs.length) this.parts.units.append(el("h2", {}, "Units (value and δ = ∂L/∂y of example " + this.example + "; edges: weights, hover for w and dW)"));
    segs.forEach(function (seg) { self.parts.units.append(drawSegment(self, seg)); });
    if (this.unit) explainUnit(this);
    this.parts.overview.querySelectorAll(".ft-box").forEach(function (b) {
      b.setAttribute("aria-pressed", String(Number(b.getAttribute("data-index")) === self.layer));
    });
    detail(this);
  };

  View.prototype.setExample = function (n) { this.example = n; this.parts.select.value = String(n); this.redraw(); };
  View.prototype.selectLayer = function (i) { this.layer = i; this.redraw(); };
  View.prototype.selectUnit = function (i, j) {
    this.unit = [i, j];
    this.layer = i;
    this.redraw();
    const again = this.root.querySelector('.ft-node[data-layer="' + i + '"][data-unit="' + j + '"]');
    if (again) again.focus();
  };

  function mountAll() {
    document.querySelectorAll(".fnnet-trace:not([data-mounted])").forEach(function (root) {
      root.setAttribute("data-mounted", "true");
      const view = new View(root);
      view.build();
      root.fnnetView = view;
    });
  }

  window.fnnetTrace = {mountAll: mountAll};
  mountAll();
})();
