"""The export and the report as files, from a range of the indices: what `misuse export stix`,
`misuse report` and the demo write."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from elasticsearch import Elasticsearch

from streams.settings import Settings
from streams.tooling.sharing.figures import report_figures
from streams.tooling.sharing.indexed import read_indexed
from streams.tooling.sharing.report import write_report
from streams.tooling.sharing.stix import ExportOptions, build_bundle


def write_bundle(es: Elasticsearch, settings: Settings, start_ms: int, end_ms: int,
                 path: Path, options: ExportOptions) -> Counter[str]:
    """The bundle at `path`; returns how many objects of each type it holds."""
    indexed = read_indexed(es, settings, start_ms, end_ms)
    bundle = build_bundle(indexed.campaigns, indexed.alerts, options)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(bundle.serialize(pretty=True) + "\n", encoding="utf-8")
    return Counter(obj.type for obj in bundle.objects)


def write_transparency_report(es: Elasticsearch, settings: Settings, start_ms: int,
                              end_ms: int, out_dir: Path) -> Path:
    """report.html and figures.json in `out_dir`; returns the page's path."""
    return write_report(report_figures(read_indexed(es, settings, start_ms, end_ms)), out_dir)
