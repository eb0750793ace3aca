"""Query results as a terminal table and as a self-contained results.html (thumbnails inlined)."""

from __future__ import annotations

import base64
import html

from ..core.records import Hit, ImageRecord


def caption_of(record: ImageRecord) -> str:
    """The caption, or what its state says while there is none."""
    return record.caption or {"pending": "(caption pending)", "failed": "(caption failed)"}.get(record.caption_state, "")


def results_html(title: str, hits: list[Hit], thumbnails: dict[str, bytes | None]) -> str:
    """A self-contained gallery (thumbnails inlined, by image id): opens from disk, no server needed."""
    cards = []
    for rank, hit in enumerate(hits, 1):
        jpeg = thumbnails.get(hit.record.id)
        uri = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode() if jpeg else None
        image = f'<img src="{uri}" alt="">' if uri else '<div class="missing">no thumbnail</div>'
        cards.append(f'<figure>{image}<figcaption><b>#{rank}</b> score {hit.score:.4f}<br>{html.escape(caption_of(hit.record))}'
                     f'<br><small>{html.escape(hit.record.source)}</small></figcaption></figure>')
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>
body{{font-family:system-ui,sans-serif;margin:1.5rem}}
main{{display:grid;grid-template-columns:repeat(auto-fill,minmax(210px,1fr));gap:1rem}}
figure{{margin:0;border:1px solid #ddd;border-radius:8px;padding:.5rem}}
img{{width:100%;height:192px;object-fit:contain;background:#f4f4f4}}
.missing{{height:192px;display:flex;align-items:center;justify-content:center;background:#f4f4f4;color:#888}}
figcaption{{font-size:.85rem;margin-top:.4rem;word-break:break-word}}</style></head>
<body><h1>{html.escape(title)}</h1><main>{''.join(cards)}</main></body></html>"""


def print_table(hits: list[Hit]) -> None:
    print(f"{'#':>3}  {'score':>7}  {'caption':<50}  source")
    for rank, hit in enumerate(hits, 1):
        print(f"{rank:>3}  {hit.score:>7.4f}  {caption_of(hit.record)[:50]:<50}  {hit.record.source}")
