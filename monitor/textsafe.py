"""Showing untrusted text on a terminal: web addresses, page titles, names, error reasons.

Text that comes from the web (or from a database that web text reached) may hold Rich markup
(``[/]`` crashes a print, ``[link=...]`` makes a clickable link) and terminal control sequences
(ESC/CSI/OSC 8 hyperlinks, BEL, backspace, CR that overwrites a line, bidi overrides that
reorder what is read). Before such text reaches the console:

* :func:`visible` replaces every control character (C0, DEL, C1), line and paragraph separators
  and bidi controls with a visible escape (``\\x1b``, ``\\u202e``), so what is shown is what is
  stored, and nothing is interpreted by the terminal;
* :func:`markup` additionally escapes Rich markup, for text interpolated into a markup string;
* :func:`text` wraps it in a :class:`rich.text.Text`, which Rich never parses (for table cells).
"""

from __future__ import annotations

from rich.markup import escape as _escape_markup
from rich.text import Text

__all__ = ["is_unsafe_char", "markup", "text", "visible"]

# Bidi controls (ALM, LRM, RLM, embeddings/overrides, isolates) and line/paragraph separators:
# invisible, yet they change how the surrounding text reads or where lines break.
_FORMAT_CONTROLS = frozenset(
    [0x061C, 0x200E, 0x200F, 0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
)


def is_unsafe_char(ch: str) -> bool:
    """Whether ``ch`` is a control character a terminal may act on, or a bidi/line control."""
    o = ord(ch)
    return o < 0x20 or 0x7F <= o <= 0x9F or o in _FORMAT_CONTROLS


def _shown(ch: str) -> str:
    o = ord(ch)
    return f"\\x{o:02x}" if o <= 0xFF else f"\\u{o:04x}"


def visible(value: object, *, keep_newlines: bool = False) -> str:
    """``value`` as text with every control character shown as an escape (``\\x1b``).

    ``keep_newlines`` keeps ``\\n`` and ``\\t`` (for multi-line text such as a drafted notice);
    a CR is always shown, since it lets a line overwrite what came before it."""
    s = value if isinstance(value, str) else str(value)
    if not any(is_unsafe_char(ch) for ch in s):
        return s
    kept = "\n\t" if keep_newlines else ""
    return "".join(_shown(ch) if is_unsafe_char(ch) and ch not in kept else ch for ch in s)


def markup(value: object, *, keep_newlines: bool = False) -> str:
    """``value`` made safe to interpolate into a Rich markup string."""
    return _escape_markup(visible(value, keep_newlines=keep_newlines))


def text(value: object, *, keep_newlines: bool = False, style: str = "") -> Text:
    """``value`` as a Rich :class:`~rich.text.Text` (never parsed as markup), controls shown."""
    return Text(visible(value, keep_newlines=keep_newlines), style=style)
