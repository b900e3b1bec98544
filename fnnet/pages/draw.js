/* fnnet pages: the drawing every component shares. Numbers arrive as JSON, with NaN and inf as the
   strings "NaN", "Infinity", "-Infinity" (JSON has neither); readData turns them back into numbers,
   and fmt writes them as NaN / inf, never as a number. Colours: a diverging map centred on zero
   (blue negative, white zero, red positive; black for NaN or inf). */
window.fnnetDraw = window.fnnetDraw || (function () {
  "use strict";
  const SVG = "http://www.w3.org/2000/svg";
  const STOPS = [[33, 102, 172], [103, 169, 207], [247, 247, 247], [239, 138, 98], [178, 24, 43]];

  function readData(script) {
    return JSON.parse(script.textContent, function (key, value) {
      if (value === "NaN") return NaN;
      if (value === "Infinity") return Infinity;
      if (value === "-Infinity") return -Infinity;
      return value;
    });
  }

  function fmt(v, digits) {
    if (v === null || v === undefined) return "–";
    if (Number.isNaN(v)) return "NaN";
    if (v === Infinity) return "inf";
    if (v === -Infinity) return "-inf";
    if (v === 0) return "0";
    const a = Math.abs(v);
    if (a >= 1e5 || a < 1e-3) return v.toExponential(Math.max(0, (digits || 4) - 1));
    return String(Number(v.toPrecision(digits || 4)));
  }

  /* t in [-1, 1] -> "rgb(...)": the diverging map; not finite -> black. */
  function color(t) {
    if (!Number.isFinite(t)) return "rgb(0,0,0)";
    t = Math.max(-1, Math.min(1, t));
    const x = (t + 1) / 2 * (STOPS.length - 1), i = Math.min(STOPS.length - 2, Math.floor(x)), f = x - i;
    const c = STOPS[i].map(function (v, k) { return Math.round(v + f * (STOPS[i + 1][k] - v)); });
    return "rgb(" + c.join(",") + ")";
  }

  function rgb(t) { return color(t).slice(4, -1).split(",").map(Number); }

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const k in attrs || {}) node.setAttribute(k, attrs[k]);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const k in attrs || {}) node.setAttribute(k, attrs[k]);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function legend(label) {
    const box = el("span", {"class": "fn-legend", "role": "img",
      "aria-label": "colour legend: blue negative, white zero, red positive, black NaN or inf"});
    box.append(el("span", {}, label || "−max"), el("span", {"class": "fn-bar"}), el("span", {}, "+max"),
      el("span", {"class": "fn-nan"}), el("span", {}, "NaN/inf"));
    return box;
  }

  /* A heat map {rows, cols, scale, bytes (base64, 127 = zero, 255 = NaN/inf)} on a canvas. */
  function heat(map, caption, pixels) {
    const fig = el("figure", {"class": "fn-figure"});
    const canvas = el("canvas", {"width": map.cols, "height": map.rows, "role": "img",
      "aria-label": caption + ": heat map " + map.rows + "×" + map.cols});
    const px = pixels || Math.max(2, Math.min(12, Math.floor(240 / Math.max(map.rows, map.cols))));
    canvas.style.width = map.cols * px + "px";
    canvas.style.height = map.rows * px + "px";
    const ctx = canvas.getContext("2d"), image = ctx.createImageData(map.cols, map.rows);
    const bytes = atob(map.bytes);
    for (let i = 0; i < bytes.length; i++) {
      const q = bytes.charCodeAt(i), c = q === 255 ? [0, 0, 0] : rgb((q - 127) / 127);
      image.data.set([c[0], c[1], c[2], 255], 4 * i);
    }
    ctx.putImageData(image, 0, 0);
    let text = caption + " (±" + fmt(map.scale, 3) + (map.shape ? ", shape " + JSON.stringify(map.shape) : "") + ")";
    if (map.nonfinite) text += " — " + map.nonfinite + " NaN/inf";
    const cap = el("figcaption", {}, text);
    if (map.nonfinite) cap.classList.add("fn-nonfinite");
    fig.append(canvas, cap);
    return fig;
  }

  /* A histogram {lo, hi, counts, nonfinite, size} as SVG bars. */
  function histogram(h, caption) {
    const fig = el("figure", {"class": "fn-figure"}), w = 260, hgt = 90;
    const box = svg("svg", {"width": w, "height": hgt + 18, "role": "img", "aria-label": caption + ": histogram"});
    const top = Math.max(1, Math.max.apply(null, h.counts.concat([1])));
    h.counts.forEach(function (c, i) {
      const bw = w / h.counts.length, bh = hgt * c / top;
      const mid = h.lo + (i + 0.5) * (h.hi - h.lo) / h.counts.length, t = Math.max(Math.abs(h.lo), Math.abs(h.hi));
      box.append(svg("rect", {"x": i * bw, "y": hgt - bh, "width": Math.max(1, bw - 1), "height": bh,
        "fill": color(t ? mid / t : 0), "stroke": "#777", "stroke-width": 0.3}));
    });
    box.append(svg("text", {"x": 0, "y": hgt + 14, "font-size": 11}, fmt(h.lo)),
      svg("text", {"x": w, "y": hgt + 14, "font-size": 11, "text-anchor": "end"}, fmt(h.hi)));
    const cap = el("figcaption", {}, caption + " (" + h.size + " values" +
      (h.nonfinite ? ", " + h.nonfinite + " NaN/inf" : "") + ")");
    if (h.nonfinite) cap.classList.add("fn-nonfinite");
    fig.append(box, cap);
    return fig;
  }

  /* Lines {name: [values]} against x (log10 y when log); an inline SVG with axes and a legend. */
  function lines(series, xs, caption, log) {
    const fig = el("figure", {"class": "fn-figure"}), w = 420, h = 220, L = 52, B = 28;
    const box = svg("svg", {"width": w, "height": h + 24, "role": "img", "aria-label": caption});
    const names = Object.keys(series), palette = ["#2166ac", "#b2182b", "#1b7837", "#762a83", "#e08214", "#555"];
    const tr = function (v) { return log ? Math.log10(v) : v; };
    let ys = [];
    names.forEach(function (n) { ys = ys.concat(series[n].map(tr).filter(Number.isFinite)); });
    const lo = ys.length ? Math.min.apply(null, ys) : 0, hi = ys.length ? Math.max.apply(null, ys) : 1;
    const x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs.concat([x0 + 1]));
    const X = function (x) { return L + (w - L - 8) * (x - x0) / (x1 - x0 || 1); };
    const Y = function (y) { return 8 + (h - B - 8) * (1 - (y - lo) / ((hi - lo) || 1)); };
    box.append(svg("line", {"x1": L, "y1": h - B, "x2": w - 8, "y2": h - B, "stroke": "#333"}),
      svg("line", {"x1": L, "y1": 8, "x2": L, "y2": h - B, "stroke": "#333"}));
    [lo, hi].forEach(function (v) {
      box.append(svg("text", {"x": L - 4, "y": Y(v) + 4, "font-size": 11, "text-anchor": "end"},
        fmt(log ? Math.pow(10, v) : v, 3)));
    });
    box.append(svg("text", {"x": L, "y": h - 8, "font-size": 11}, fmt(x0)),
      svg("text", {"x": w - 8, "y": h - 8, "font-size": 11, "text-anchor": "end"}, fmt(x1)));
    names.forEach(function (n, k) {
      const pts = [];
      series[n].forEach(function (v, i) { if (Number.isFinite(tr(v))) pts.push(X(xs[i]) + "," + Y(tr(v))); });
      const c = palette[k % palette.length];
      box.append(svg("polyline", {"points": pts.join(" "), "fill": "none", "stroke": c, "stroke-width": 2,
        "class": "fn-curve", "data-name": n}));
      if (pts.length === 1) {
        const p = pts[0].split(",");
        box.append(svg("circle", {"cx": p[0], "cy": p[1], "r": 3, "fill": c}));
      }
      box.append(svg("text", {"x": L + 8 + 130 * k, "y": h + 18, "font-size": 12, "fill": c}, "— " + n));
    });
    fig.append(box, el("figcaption", {}, caption));
    return fig;
  }

  return {readData: readData, fmt: fmt, color: color, el: el, svg: svg, legend: legend, heat: heat,
    histogram: histogram, lines: lines};
})();
