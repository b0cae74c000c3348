"""Views of segment credit for one text: a coloured terminal listing, a self-contained HTML heat-map, a PNG bar chart.

Pure functions of ``(text, spans, credit)``; ``spans`` is ``(S, 2)`` character offsets ``[start, end)`` into
``text``, ``credit`` is ``(S,)`` (one value per span) and the optional ``exact`` is ``(S,)`` exact Shapley values.
Colours diverge from white (zero) to red (negative) and green (positive), the intensity being
``|credit_j| / max_k |credit_k|``. Used by ``ospo-gym credit`` (``--html``, ``--png``, ``--no-color``).
matplotlib is imported only by :func:`save_credit_png`.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import IO

import numpy as np

from ospo_gym.output_files import write_atomic

NEGATIVE_RGB = (215, 48, 39)  # ColorBrewer RdYlGn ends
POSITIVE_RGB = (26, 152, 80)
ZERO_RGB = (255, 255, 255)
LABEL_CHARS = 32  # longest segment label on the PNG before it is cut with "…"
ANSI_RESET = "\x1b[0m"


def _check(text: str, spans, credit, exact) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    spans = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    credit = np.asarray(credit, dtype=np.float64).reshape(-1)
    if len(credit) != len(spans):
        raise ValueError(f"credit has {len(credit)} values for {len(spans)} spans; give one value per span")
    if exact is not None:
        exact = np.asarray(exact, dtype=np.float64).reshape(-1)
        if len(exact) != len(spans):
            raise ValueError(f"exact has {len(exact)} values for {len(spans)} spans; give one value per span")
    if len(spans) and (spans.min() < 0 or spans.max() > len(text) or np.any(spans[:, 1] < spans[:, 0])):
        raise ValueError(f"spans must satisfy 0 <= start <= end <= len(text) = {len(text)}")
    return spans, credit, exact


def credit_scale(credit) -> float:
    """``max_j |credit_j|`` over the finite values of ``credit`` ``(S,)``, at least 1e-12 (so dividing is safe)."""
    credit = np.asarray(credit, dtype=np.float64)
    finite = np.abs(credit[np.isfinite(credit)])
    return max(float(finite.max()) if finite.size else 0.0, 1e-12)


def credit_rgb(value: float, scale: float) -> tuple[int, int, int]:
    """Colour of one credit value: white at 0, towards red below 0 and green above, full at ``|value| >= scale``.

    Non-finite values are drawn as 0 (white).
    """
    if not np.isfinite(value):
        return ZERO_RGB
    t = min(abs(float(value)) / scale, 1.0)
    end = POSITIVE_RGB if value > 0 else NEGATIVE_RGB
    r, g, b = (int(round(z + t * (e - z))) for z, e in zip(ZERO_RGB, end, strict=True))
    return r, g, b


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


_XTERM_LEVELS = np.array([0, 95, 135, 175, 215, 255])  # channel levels of the xterm 256-colour 6x6x6 cube


def _ansi(segment: str, rgb: tuple[int, int, int], truecolour: bool) -> str:
    """``segment`` on an ANSI background of colour ``rgb`` with black text (24-bit, or the nearest of the xterm
    256-colour cube); left plain where that colour is white, so zero credit does not glare on a dark terminal."""
    if truecolour:
        code = "2;{};{};{}".format(*rgb)
    else:
        r, g, b = (int(np.abs(_XTERM_LEVELS - c).argmin()) for c in rgb)
        code = f"5;{16 + 36 * r + 6 * g + b}"
    if code in ("2;255;255;255", "5;231"):
        return segment
    return f"\x1b[48;{code}m\x1b[30m{segment}{ANSI_RESET}"


def use_colour(stream: IO[str], no_color: bool = False) -> bool:
    """Whether to colour output on ``stream``: not with ``--no-color``, a non-empty ``NO_COLOR``, ``TERM=dumb``, or a
    stream that is not a terminal (https://no-color.org)."""
    if no_color or os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def credit_terminal(text: str, spans, credit, *, exact=None, colour: bool = False) -> str:
    """One line per segment: credit, exact value (if given), a +/- bar of length ``10 * |credit| / max|credit|`` and
    the segment text.

    With ``colour`` each segment's text gets an ANSI background (red negative, green positive, intensity by
    ``|credit|/max|credit|``; 24-bit when ``COLORTERM`` says so, else 256 colours) and a first line shows the whole
    text coloured in place; without it the output holds no escape codes. ``spans`` ``(S, 2)``, ``credit`` and ``exact`` ``(S,)``.
    """
    spans, credit, exact = _check(text, spans, credit, exact)
    scale = credit_scale(credit)
    truecolour = os.environ.get("COLORTERM", "") in ("truecolor", "24bit")
    lines = []
    if colour and len(spans):
        inline, pos = [], 0
        for (start, end), value in zip(spans, credit, strict=True):
            inline.append(text[pos:start])
            inline.append(_ansi(text[start:end], credit_rgb(value, scale), truecolour))
            pos = end
        inline.append(text[pos:])
        lines.append("  " + "".join(inline).replace("\n", " "))
    for j, (start, end) in enumerate(spans):
        value = credit[j]
        bar = ("+" if value >= 0 else "-") * int(round(10 * abs(value) / scale)) if np.isfinite(value) else "?"
        extra = f"  exact {exact[j]:+.4f}" if exact is not None else ""
        segment = text[start:end]
        if colour:
            segment = _ansi(segment, credit_rgb(value, scale), truecolour)
        lines.append(f"  {value:+.4f}{extra}  {bar:<10}  {segment}")
    return "\n".join(lines)


_HTML_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
h1 { font-size: 1.2em; } .note { color: #555; }
.text { font-family: ui-monospace, monospace; line-height: 2; padding: 1em; border: 1px solid #ccc;
        white-space: pre-wrap; }
.seg { padding: 0.15em 0.1em; border-radius: 3px; }
.legend { display: flex; align-items: center; gap: 0.5em; margin: 1em 0; font-size: 0.9em; }
.ramp { width: 16em; height: 1em; border: 1px solid #ccc; background: linear-gradient(to right, NEG, #ffffff, POS); }
table { border-collapse: collapse; font-size: 0.9em; } td, th { padding: 0.2em 0.6em; text-align: right; }
td.t { text-align: left; font-family: ui-monospace, monospace; }
"""


def credit_html(text: str, spans, credit, *, title: str, exact=None, note: str = "") -> str:
    """A self-contained HTML page (inline CSS, no scripts or external files) showing the text as a heat-map.

    Each segment is a ``<span>`` whose background is :func:`credit_rgb` of its credit and whose ``title`` tooltip
    gives the value (and the exact Shapley value when ``exact`` is given); text between segments is left plain. A
    legend shows the colour ramp from ``-max|credit|`` to ``+max|credit|`` and a table lists every segment. All text
    is HTML-escaped. ``spans`` ``(S, 2)``, ``credit`` and ``exact`` ``(S,)``; ``note`` is an optional line under the
    title (prompt, reward, ...).
    """
    spans, credit, exact = _check(text, spans, credit, exact)
    scale = credit_scale(credit)
    esc = html.escape
    body, rows, pos = [], [], 0
    for j, (start, end) in enumerate(spans):
        value = float(credit[j])
        tip = f"credit {value:+.4f}" + (f" | exact {exact[j]:+.4f}" if exact is not None else "")
        colour = _hex(credit_rgb(value, scale))
        body.append(esc(text[pos:start]))
        body.append(
            f'<span class="seg" style="background:{colour}" title="{esc(tip)}" data-credit="{value:.6g}">'
            f"{esc(text[start:end])}</span>"
        )
        pos = end
        exact_cell = f"<td>{exact[j]:+.4f}</td>" if exact is not None else ""
        rows.append(
            f'<tr><td>{j}</td><td style="background:{colour}">{value:+.4f}</td>{exact_cell}'
            f'<td class="t">{esc(text[start:end])}</td></tr>'
        )
    body.append(esc(text[pos:]))
    css = _HTML_CSS.replace("NEG", _hex(NEGATIVE_RGB)).replace("POS", _hex(POSITIVE_RGB))
    shown = scale if len(spans) and scale > 1e-12 else 0.0
    exact_head = "<th>exact</th>" if exact is not None else ""
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{esc(title)}</title>",
            f"<style>{css}</style>",
            "</head><body>",
            f"<h1>{esc(title)}</h1>",
            f'<p class="note">{esc(note)}</p>' if note else "",
            f'<div class="text">{"".join(body)}</div>',
            f'<div class="legend"><span>{-shown:+.4f}</span><span class="ramp"></span><span>{shown:+.4f}</span>'
            "<span>red: the segment lowers the reward, green: raises it (hover a segment for its value)</span></div>",
            f"<table><tr><th>#</th><th>credit</th>{exact_head}<th>segment</th></tr>",
            *rows,
            "</table>",
            "</body></html>",
            "",
        ]
    )


def _label(segment: str) -> str:
    """One-line tick label, cut to ``LABEL_CHARS``, with ``$`` escaped so matplotlib does not read it as maths."""
    segment = " ".join(segment.split())
    segment = segment if len(segment) <= LABEL_CHARS else segment[: LABEL_CHARS - 1] + "…"
    return segment.replace("$", r"\$")


def save_credit_png(path: str | os.PathLike, text: str, spans, credit, exact=None, *, title: str = "") -> Path:
    """Write a horizontal bar chart of segment credit to ``path`` (PNG) and return it.

    One row per segment, top to bottom in text order, labelled with the segment text (cut to ``LABEL_CHARS``);
    bars are red below zero and green above. With ``exact`` ``(S,)`` the exact Shapley value is drawn as a grey
    bar beside each estimate. ``spans`` ``(S, 2)``, ``credit`` ``(S,)``. Needs matplotlib (Agg canvas, no pyplot
    state is touched); the file is written to a temporary name and renamed (:func:`write_atomic`: an existing
    ``path`` that is not a regular file — a link, a pipe, a device — is refused with ``OutputPathError``).
    """
    spans, credit, exact = _check(text, spans, credit, exact)
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ModuleNotFoundError(
            "the PNG view needs matplotlib: pip install matplotlib (or pip install 'ospo-gym[bench]')"
        ) from None
    n = len(spans)
    fig = Figure(figsize=(7.5, max(2.4, 0.32 * n * (2 if exact is not None else 1) + 1.4)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    y = np.arange(n, dtype=np.float64)
    height = 0.4 if exact is not None else 0.7
    offset = height / 2 if exact is not None else 0.0
    colours = [_hex(POSITIVE_RGB if v > 0 else NEGATIVE_RGB) for v in credit]
    ax.barh(y - offset, np.nan_to_num(credit), height=height, color=colours, label="estimate")
    if exact is not None:
        ax.barh(y + offset, np.nan_to_num(exact), height=height, color="#9e9e9e", label="exact Shapley")
        ax.legend(loc="best", fontsize="small")
    ax.axvline(0.0, color="#444", linewidth=0.8)
    ax.set_yticks(y, [_label(text[s:e]) for s, e in spans], fontsize="small")
    if n:
        ax.set_ylim(n - 0.5, -0.5)  # first segment at the top
    else:
        ax.text(0.5, 0.5, "no segments", ha="center", transform=ax.transAxes)
    ax.set_xlabel("segment credit")
    ax.set_title((title or "segment credit").replace("$", r"\$"), fontsize="medium")
    path = Path(path)
    return write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


__all__ = [
    "credit_html",
    "credit_rgb",
    "credit_scale",
    "credit_terminal",
    "save_credit_png",
    "use_colour",
]
