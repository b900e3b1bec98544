""":func:`fnnet.explain`'s chain rule written as mathematics: each line of its text as MathML.

``W[0][i,2]`` becomes W with superscript ``[0]`` (the layer) and subscript ``i,2`` (the entry),
as the tutorials write ``W^{[1]}_{i,j}``; ``Σ_i`` a sum under its index; ``∂L/∂y[1][1,0]`` a
fraction; numbers ``<mn>``, the words between them ``<mtext>``. MathML renders in every current
browser without a script or a font download. A line the notation does not cover is kept as text.

Examples:
  >>> from fnnet.pages.mathml import line_to_mathml
  >>> math = line_to_mathml("db[0][2] = Σ_n δ[0][n,2] = 0.0497197")
  >>> "<msubsup><mi>db</mi><mrow><mn>2</mn></mrow><mrow><mo>[</mo><mn>0</mn><mo>]</mo></mrow></msubsup>" in math
  True
"""

from __future__ import annotations

import html
import re

_TOKEN = re.compile(r"""
    (?P<partial>∂(?P<num>[A-Za-z]+)/∂(?P<den>[A-Za-zŷδσ]+)(?P<denidx>(?:\[[^\]]*\])*))
  | (?P<sum>Σ_(?P<sumidx>[A-Za-z]+))
  | (?P<indexed>(?P<name>[A-Za-zδσŷ]+'?)(?P<idx>(?:\[[^\]\s]*\])+))
  | (?P<number>(?<![A-Za-z_])-?\d+(?:\.\d+)?(?:e[+-]?\d+)?|\bnan\b|-?\binf\b)
  | (?P<word>[A-Za-z_][A-Za-z_']*(?:\s+[A-Za-z_][A-Za-z_']*)*)
  | (?P<op>[=+−\-·×()\[\],:;…'/<>≠^|])
  | (?P<greek>[δσŷ∂ΣΔ√])
  | (?P<space>\s+)
  | (?P<other>.)
""", re.VERBOSE)
_SINGLE = re.compile(r"^[A-Za-zδσŷ]'?$")


def _esc(text: str) -> str:
    return html.escape(text, quote=False)


def _indices(group: str) -> str:
    """``"i,2"`` as MathML: each index (``<mn>`` a number, ``<mi>`` a letter), separated by commas."""
    parts = [p.strip() for p in group.split(",")]
    return "<mo>,</mo>".join(f"<mn>{_esc(p)}</mn>" if p.lstrip("-").isdigit() else f"<mi>{_esc(p)}</mi>"
                             for p in parts)


def _indexed(name: str, idx: str) -> str:
    """``W`` with ``[0][i,2]``: the layer as a superscript, the entry as a subscript (one group
    with a comma is an entry; one without is a layer)."""
    groups = re.findall(r"\[([^\]]*)\]", idx)
    base = f"<mi>{_esc(name)}</mi>"
    if len(groups) == 1 and "," not in groups[0]:
        return f"<msup>{base}<mrow><mo>[</mo>{_indices(groups[0])}<mo>]</mo></mrow></msup>"
    if len(groups) == 1:
        return f"<msub>{base}<mrow>{_indices(groups[0])}</mrow></msub>"
    layer, entry = groups[0], ",".join(groups[1:])
    return (f"<msubsup>{base}<mrow>{_indices(entry)}</mrow>"
            f"<mrow><mo>[</mo>{_indices(layer)}<mo>]</mo></mrow></msubsup>")


def _token(match: re.Match) -> str:
    kind = match.lastgroup
    text = match.group(0)
    if match.group("partial"):
        den = _indexed("∂" + match.group("den"), match.group("denidx")) if match.group("denidx") else \
            f"<mi>∂{_esc(match.group('den'))}</mi>"
        return f"<mfrac><mi>∂{_esc(match.group('num'))}</mi><mrow>{den}</mrow></mfrac>"
    if match.group("sum"):
        return f"<munder><mo>Σ</mo><mi>{_esc(match.group('sumidx'))}</mi></munder>"
    if match.group("indexed"):
        return _indexed(match.group("name"), match.group("idx"))
    if kind == "number":
        return f"<mn>{_esc(text)}</mn>"
    if kind == "word":
        return f"<mi>{_esc(text)}</mi>" if _SINGLE.match(text) or text in ("relu", "tanh", "exp", "log") \
            else f"<mtext>\u00a0{_esc(text)}\u00a0</mtext>"
    if kind in ("op", "greek"):
        return f"<mo>{_esc(text)}</mo>" if kind == "op" else f"<mi>{_esc(text)}</mi>"
    if kind == "space":
        return "<mspace width=\"0.25em\"></mspace>" if len(text) > 1 else ""
    return f"<mtext>{_esc(text)}</mtext>"


def line_to_mathml(line: str) -> str:
    """One line of :func:`fnnet.explain`'s text as a ``<math>`` element in a ``<div>``; its
    ``(traced: …)`` tail is kept as a note beside the equation."""
    body, _, traced = line.partition("   (traced:")
    label, colon, rest = body.partition(":  ")
    prefix = f"<mtext>{_esc(label)}:</mtext><mspace width=\"1em\"></mspace>" if colon and label in ("forward",) \
        else ""
    if not prefix:
        rest = body
    inner = "".join(_token(m) for m in _TOKEN.finditer(rest.strip()))
    note = f"<mspace width=\"1em\"></mspace><mtext>(traced: {_esc(traced.strip())}</mtext>" if traced else ""
    return f'<div class="fnnet-eq"><math displaystyle="true">{prefix}{inner}{note}</math></div>'


def explanation_html(text: str) -> str:
    """The whole of :func:`fnnet.explain`'s text as HTML: its first line (what is explained) as a
    heading, the section words (``backward:``) as labels, each equation as MathML."""
    lines = text.splitlines()
    out = [f'<p class="fnnet-explain-head">{_esc(lines[0])}</p>'] if lines else []
    for line in lines[1:]:
        if not line.strip():
            continue
        if line.rstrip().endswith(":") and " = " not in line:
            out.append(f'<p class="fnnet-explain-label">{_esc(line.strip())}</p>')
        elif " = " in line:
            out.append(line_to_mathml(line))
        else:
            out.append(f'<p class="fnnet-explain-text">{_esc(line)}</p>')
    return "\n".join(out)
