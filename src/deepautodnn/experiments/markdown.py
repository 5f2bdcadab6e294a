"""Report blocks (headings, paragraphs, tables, figures) rendered to Markdown or self-contained HTML."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Figure:
    caption: str
    png: bytes


def pct(x: float | None) -> str:
    """Accuracy-style fractions as the report prints them (the tests parse this format back)."""
    return "—" if x is None else f"{x * 100:.2f}%"


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def render_markdown(blocks: list) -> str:
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + b.text)
        elif isinstance(b, Paragraph):
            out.append(b.text)
        elif isinstance(b, Table):
            lines = ["| " + " | ".join(_md_cell(h) for h in b.header) + " |", "|" + "---|" * len(b.header)]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("\n".join(lines))
        elif isinstance(b, Figure):
            data = base64.b64encode(b.png).decode()
            out.append(f"![{b.caption}](data:image/png;base64,{data})\n\n*{b.caption}*")
    return "\n\n".join(out) + "\n"


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em}"
    "th{background:#f3f3f3}td{text-align:right}td:first-child,td:last-child{text-align:left}"
    "img{max-width:100%}figcaption{font-style:italic;color:#555}"
)


def render_html(blocks: list) -> str:
    esc = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>DeepAutoDNN evaluation report</title>",
        f"<style>{_CSS}</style></head><body>",
    ]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{esc(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            out.append(f"<p>{esc(b.text)}</p>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{esc(h)}</th>" for h in b.header)
            body = "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>" for row in b.rows)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(b, Figure):
            data = base64.b64encode(b.png).decode()
            out.append(
                f'<figure><img alt="{esc(b.caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{esc(b.caption)}</figcaption></figure>"
            )
    out.append("</body></html>")
    return "\n".join(out) + "\n"


RENDERERS = {"md": render_markdown, "html": render_html}
