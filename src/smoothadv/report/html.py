"""One self-contained HTML report: tables, plots and panels embedded as base64 PNG, no external files."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.note { color: #555; font-size: 0.9em; } pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; }
"""


@dataclass
class Section:
    """One part of the report: a heading, then paragraphs, tables, images and preformatted text."""

    heading: str
    paragraphs: Sequence[str] = ()
    tables: Sequence[tuple[Sequence[str], Sequence[Sequence[str]]]] = ()
    images: Sequence[tuple[bytes, str]] = ()
    preformatted: str | None = None
    extra: list[str] = field(default_factory=list)


def png_data_uri(data: bytes) -> str:
    """``data:image/png;base64,...`` for embedding PNG bytes in HTML."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def html_table(headers: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int = 1) -> str:
    """An escaped HTML table; the first ``text_columns`` columns are left-aligned."""

    def cls(i: int) -> str:
        return ' class="text"' if i < text_columns else ""

    head = "".join(f"<th{cls(i)}>{html.escape(str(h))}</th>" for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f"<td{cls(i)}>{html.escape(str(c))}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(title: str, sections: Sequence[Section]) -> str:
    """The report as one HTML5 string (UTF-8, inline CSS, images as data URIs)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.heading)}</h2>")
        for paragraph in section.paragraphs:
            parts.append(f"<p>{html.escape(paragraph)}</p>")
        for headers, rows in section.tables:
            parts.append(html_table(headers, rows, text_columns=2))
        for data, caption in section.images:
            if data:
                parts.append(
                    f'<figure><img src="{png_data_uri(data)}" alt="{html.escape(caption)}">'
                    f'<figcaption class="note">{html.escape(caption)}</figcaption></figure>'
                )
        if section.preformatted is not None:
            parts.append(f"<pre>{html.escape(section.preformatted)}</pre>")
        parts.extend(section.extra)
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"


def write_html(path: str | Path, title: str, sections: Sequence[Section]) -> Path:
    """Render and write the report; return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(title, sections), encoding="utf-8")
    return path


def config_text(config: dict) -> str:
    """The run configuration, pretty-printed for a ``<pre>`` block."""
    return json.dumps(config, indent=2, sort_keys=True)
