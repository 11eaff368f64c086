"""The Kibana pack (ops/kibana/misuse.ndjson) and `misuse kibana install`.

Kibana does not run here: the bundle is checked the way an import would fail (unparseable
lines, broken stringified JSON, references to objects that are not in it, fields the indices
do not have), and the install command talks to a stub Kibana on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import fnmatch
import json
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner

from streams.cli import main
from streams.settings import Settings, get_settings
from streams.tooling import kibana

REPO = Path(__file__).resolve().parents[2]
PACK = REPO / "ops" / "kibana" / "misuse.ndjson"
TEMPLATES = REPO / "ops" / "elasticsearch"
# Attributes Kibana stores as strings of JSON, by saved-object type.
STRINGIFIED = {
    "index-pattern": ("fields", "runtimeFieldMap", "fieldAttrs", "fieldFormatMap",
                      "sourceFilters", "typeMeta"),
    "search": ("kibanaSavedObjectMeta.searchSourceJSON",),
    "dashboard": ("panelsJSON", "optionsJSON", "kibanaSavedObjectMeta.searchSourceJSON"),
    "lens": (),
}
# A field named in a KQL query: `name :` (values and keywords never precede a colon).
KQL_FIELD = re.compile(r"([A-Za-z_@][\w.@]*)\s*:")


def pack_objects() -> list[dict[str, Any]]:
    return [json.loads(line) for line in PACK.read_text(encoding="utf-8").splitlines()]


def attribute(obj: dict[str, Any], dotted: str) -> Any:
    value: Any = obj["attributes"]
    for part in dotted.split("."):
        value = value[part]
    return value


def decoded(obj: dict[str, Any], dotted: str) -> Any:
    raw = attribute(obj, dotted)
    assert isinstance(raw, str), f"{obj['id']}: {dotted} is stored as a string"
    return json.loads(raw)


def mapped_fields(properties: dict[str, Any], prefix: str = "") -> set[str]:
    fields = set()
    for name, spec in properties.items():
        path = prefix + name
        if "properties" in spec:
            fields |= mapped_fields(spec["properties"], path + ".")
        if "type" in spec or "properties" not in spec:
            fields.add(path)
    return fields


@dataclass
class Template:
    patterns: list[str]
    fields: set[str]


def templates(prefix: str = kibana.PACK_INDEX_PREFIX) -> dict[str, Template]:
    loaded = {}
    for path in sorted(TEMPLATES.glob("*.json")):
        body = json.loads(path.read_text(encoding="utf-8").replace("{prefix}", prefix))
        if "index_patterns" in body:
            loaded[path.stem] = Template(
                body["index_patterns"], mapped_fields(body["template"]["mappings"]["properties"]))
    return loaded


def template_for(title: str) -> Template:
    """The template whose indices a data view's title covers."""
    matching = [t for t in templates().values()
                if any(title == pattern or fnmatch.fnmatch(pattern.rstrip("*") + "x", title)
                       for pattern in t.patterns)]
    assert len(matching) == 1, f"data view {title!r} matches {len(matching)} index templates"
    return matching[0]


def by_id() -> dict[tuple[str, str], dict[str, Any]]:
    return {(obj["type"], obj["id"]): obj for obj in pack_objects()}


def data_view_fields(data_view_id: str) -> set[str]:
    return template_for(by_id()[("index-pattern", data_view_id)]["attributes"]["title"]).fields


def reference(obj: dict[str, Any], name: str) -> dict[str, Any]:
    found = [ref for ref in obj["references"] if ref["name"] == name]
    assert len(found) == 1, f"{obj['id']}: reference {name!r} found {len(found)} times"
    return found[0]


def of_type(kind: str) -> list[dict[str, Any]]:
    return [obj for obj in pack_objects() if obj["type"] == kind]


# The bundle


def test_every_line_is_a_saved_object_with_a_unique_id() -> None:
    lines = PACK.read_text(encoding="utf-8").splitlines()
    assert all(line.strip() for line in lines)
    objects = [json.loads(line) for line in lines]
    assert all({"type", "id", "attributes", "references"} <= set(obj) for obj in objects)
    assert all(obj["attributes"].get("title") for obj in objects)
    assert len({(obj["type"], obj["id"]) for obj in objects}) == len(objects)
    assert {obj["type"] for obj in objects} == set(STRINGIFIED)


def test_every_stringified_attribute_decodes() -> None:
    for obj in pack_objects():
        for dotted in STRINGIFIED[obj["type"]]:
            decoded(obj, dotted)


def test_every_reference_resolves_inside_the_bundle() -> None:
    known = set(by_id())
    for obj in pack_objects():
        for ref in obj["references"]:
            assert (ref["type"], ref["id"]) in known, f"{obj['id']} -> {ref}"


def test_the_issue_asks_for_these_objects() -> None:
    titles = {obj["type"]: set() for obj in pack_objects()}
    for obj in pack_objects():
        titles[obj["type"]].add(obj["attributes"]["title"])
    assert {"misuse-alerts-*", "misuse-accounts", "misuse-campaigns",
            "misuse-actions"} == titles["index-pattern"]
    assert {"Open high-severity alerts", "Flagged accounts awaiting review",
            "Campaigns by size"} == titles["search"]
    assert {"Alerts over time by rule", "Top entities", "Campaigns", "Account statuses",
            "Actions over time"} <= titles["lens"]


# Data views and saved searches


def test_each_data_view_covers_one_index_template_and_its_time_field() -> None:
    for view in of_type("index-pattern"):
        template = template_for(view["attributes"]["title"])
        assert view["attributes"]["timeFieldName"] in template.fields


def test_the_data_views_cover_the_indices_the_worker_writes() -> None:
    settings = Settings(index_prefix=kibana.PACK_INDEX_PREFIX)
    titles = [view["attributes"]["title"] for view in of_type("index-pattern")]
    for index in (settings.index("alerts-2026.01.01"), settings.index("accounts"),
                  settings.index("campaigns"), settings.index("actions")):
        assert sum(fnmatch.fnmatch(index, title) for title in titles) == 1, index


def test_each_saved_search_names_only_mapped_fields() -> None:
    for search in of_type("search"):
        source = decoded(search, "kibanaSavedObjectMeta.searchSourceJSON")
        view = reference(search, source["indexRefName"])
        assert view["type"] == "index-pattern"
        fields = data_view_fields(view["id"])
        named = set(search["attributes"]["columns"]) | {s[0] for s in search["attributes"]["sort"]}
        named |= set(KQL_FIELD.findall(source["query"]["query"]))
        assert source["query"]["language"] == "kuery"
        assert named <= fields, f"{search['attributes']['title']}: {named - fields} not mapped"


def test_the_kql_field_scan_finds_fields_not_values() -> None:
    query = 'misuse.severity : ("high" or "critical") and not misuse.shadow : true'
    assert KQL_FIELD.findall(query) == ["misuse.severity", "misuse.shadow"]


# Lens visualizations and the dashboard


def test_each_lens_layer_uses_a_referenced_data_view_and_mapped_fields() -> None:
    for lens in of_type("lens"):
        state = lens["attributes"]["state"]
        assert isinstance(state, dict)
        layers = state["datasourceStates"]["formBased"]["layers"]
        assert layers, lens["id"]
        for layer_id, layer in layers.items():
            view = reference(lens, f"indexpattern-datasource-layer-{layer_id}")
            fields = data_view_fields(view["id"])
            assert set(layer["columnOrder"]) == set(layer["columns"])
            for column_id, column in layer["columns"].items():
                source = column.get("sourceField")
                if column["operationType"] == "count":
                    continue
                assert source in fields, f"{lens['id']}/{column_id}: {source} not mapped"
                order_by = column.get("params", {}).get("orderBy", {})
                if order_by.get("type") == "column":
                    assert order_by["columnId"] in layer["columns"]
        assert accessors(state["visualization"]) <= {
            column for layer in layers.values() for column in layer["columns"]}


def accessors(visualization: dict[str, Any]) -> set[str]:
    """Every column id a Lens visualization shows, whatever its kind."""
    found: set[str] = set()
    layers = visualization.get("layers", [visualization])
    for layer in layers:
        for key in ("xAccessor", "splitAccessor"):
            if layer.get(key):
                found.add(layer[key])
        for key in ("accessors", "primaryGroups", "metrics"):
            found.update(layer.get(key, []))
        found.update(column["columnId"] for column in layer.get("columns", []))
    assert found, "a visualization that shows no column"
    return found


def test_each_dashboard_panel_is_a_reference_in_the_bundle() -> None:
    [dashboard] = of_type("dashboard")
    panels = decoded(dashboard, "panelsJSON")
    assert len(panels) >= 5
    for panel in panels:
        ref = reference(dashboard, f"{panel['panelIndex']}:{panel['panelRefName']}")
        assert ref["type"] == panel["type"]
        assert (ref["type"], ref["id"]) in by_id()
        grid = panel["gridData"]
        assert grid["i"] == panel["panelIndex"]
        assert 0 <= grid["x"] < grid["x"] + grid["w"] <= 48
    assert len({panel["panelIndex"] for panel in panels}) == len(panels)
    shown = {ref["id"] for ref in dashboard["references"]}
    assert {obj["id"] for obj in of_type("lens")} <= shown
    source = decoded(dashboard, "kibanaSavedObjectMeta.searchSourceJSON")
    assert source["query"]["language"] == "kuery"


def test_panels_do_not_overlap() -> None:
    [dashboard] = of_type("dashboard")
    cells: set[tuple[int, int]] = set()
    for panel in decoded(dashboard, "panelsJSON"):
        grid = panel["gridData"]
        area = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not area & cells, panel["panelIndex"]
        cells |= area


# Request building


def test_data_views_follow_the_configured_index_prefix() -> None:
    objects = kibana.with_index_prefix(kibana.read_pack(PACK), "staging-misuse-")
    titles = {obj["attributes"]["title"] for obj in objects if obj["type"] == "index-pattern"}
    assert titles == {"staging-misuse-alerts-*", "staging-misuse-accounts",
                      "staging-misuse-campaigns", "staging-misuse-actions"}
    assert [obj["id"] for obj in objects] == [obj["id"] for obj in pack_objects()]
    assert kibana.with_index_prefix(pack_objects(), "misuse-") == pack_objects()


def test_auth_headers() -> None:
    assert kibana.auth_headers(api_key="abc==") == {"Authorization": "ApiKey abc=="}
    basic = kibana.auth_headers(user="elastic", password="s3cret")["Authorization"]
    assert base64.b64decode(basic.removeprefix("Basic ")) == b"elastic:s3cret"
    assert kibana.auth_headers(api_key="k", user="u", password="p") == {
        "Authorization": "ApiKey k"}
    assert kibana.auth_headers() == {}


def test_import_url() -> None:
    assert kibana.import_url("http://kibana:5601/") == \
        "http://kibana:5601/api/saved_objects/_import?overwrite=true"
    assert kibana.import_url("https://k.example/base", space="trust & safety") == \
        "https://k.example/base/s/trust%20%26%20safety/api/saved_objects/_import?overwrite=true"
    with pytest.raises(kibana.KibanaImportError, match="--user") as raised:
        kibana.import_url("http://elastic:s3cret@kibana:5601")
    assert "s3cret" not in str(raised.value)
    with pytest.raises(kibana.KibanaImportError):
        kibana.import_url("kibana:5601")


def test_import_errors_become_one_line_each() -> None:
    result = kibana.import_result({"success": False, "successCount": 12, "errors": [{
        "id": "misuse-dashboard-overview", "type": "dashboard", "meta": {"title": "Misuse"},
        "error": {"type": "missing_references",
                  "references": [{"type": "lens", "id": "gone"}]}}]})
    assert not result.success and result.success_count == 12
    assert result.errors == ["dashboard misuse-dashboard-overview (Misuse): "
                             "missing_references: lens gone"]


# The install command against a stub Kibana


@dataclass
class StubKibana:
    """A real HTTP server on 127.0.0.1 that answers like Kibana's import API and keeps what
    it was sent."""
    answer: dict[str, Any] | None = None
    status: int = 200
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form.get("file")
        objects = []
        if isinstance(upload, web.FileField):
            objects = [json.loads(line) for line in upload.file.read().decode().splitlines()]
        self.requests.append({
            "path": request.path, "query": dict(request.query),
            "headers": {name.lower(): value for name, value in request.headers.items()},
            "content_type": request.content_type,
            "filename": upload.filename if isinstance(upload, web.FileField) else None,
            "objects": objects})
        if self.status != 200:
            return web.json_response({"statusCode": self.status, "error": "Unauthorized",
                                      "message": "[security_exception] unable to authenticate"},
                                     status=self.status)
        body = self.answer or {"success": True, "successCount": len(objects),
                               "successResults": [{"type": o["type"], "id": o["id"]}
                                                  for o in objects]}
        return web.json_response(body)


@pytest.fixture
def stub_kibana() -> Iterator[StubKibana]:
    stub = StubKibana()
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/api/saved_objects/_import", stub.handle)
    app.router.add_post("/s/{space}/api/saved_objects/_import", stub.handle)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    stub.url = f"http://127.0.0.1:{port}"
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.run_until_complete(runner.cleanup())
        loop.close()


def run_install(*args: str, env: dict[str, str] | None = None) -> Any:
    # The settings are cached per process: read them again under this run's environment.
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(main, ["kibana", "install", *args], env=env or {},
                                  catch_exceptions=False)
    finally:
        get_settings.cache_clear()


def test_install_posts_the_pack_with_an_api_key(stub_kibana: StubKibana) -> None:
    result = run_install("--url", stub_kibana.url, "--timeout", "10",
                         env={"MISUSE_KIBANA_API_KEY": "c2VjcmV0LWtleQ=="})
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"imported 13 objects into Kibana at {stub_kibana.url}"
    assert "c2VjcmV0LWtleQ" not in result.output
    [sent] = stub_kibana.requests
    assert sent["path"] == "/api/saved_objects/_import"
    assert sent["query"] == {"overwrite": "true"}
    assert sent["content_type"] == "multipart/form-data"
    assert sent["filename"] == "misuse.ndjson"
    assert sent["headers"]["kbn-xsrf"]
    assert sent["headers"]["authorization"] == "ApiKey c2VjcmV0LWtleQ=="
    assert sent["objects"] == pack_objects()


def test_install_uses_basic_auth_a_space_and_the_index_prefix(stub_kibana: StubKibana) -> None:
    result = run_install("--url", stub_kibana.url, "--space", "tns", "--user", "analyst",
                         env={"MISUSE_KIBANA_PASSWORD": "pw-never-printed",
                              "MISUSE_INDEX_PREFIX": "prod-"})
    assert result.exit_code == 0, result.output
    assert "pw-never-printed" not in result.output
    [sent] = stub_kibana.requests
    assert sent["path"] == "/s/tns/api/saved_objects/_import"
    assert sent["headers"]["authorization"] == "Basic " + base64.b64encode(
        b"analyst:pw-never-printed").decode()
    assert "prod-alerts-*" in {o["attributes"]["title"] for o in sent["objects"]}


def test_install_reports_what_kibana_refused(stub_kibana: StubKibana) -> None:
    stub_kibana.answer = {"success": False, "successCount": 12, "errors": [{
        "id": "misuse-lens-campaigns", "type": "lens", "meta": {"title": "Campaigns"},
        "error": {"type": "unknown", "message": "field misuse.size is not aggregatable"}}]}
    result = run_install("--url", stub_kibana.url)
    assert result.exit_code == 1
    assert "not imported: lens misuse-lens-campaigns (Campaigns): unknown: field misuse.size" \
        in result.output
    assert "error: import incomplete: 12 objects imported, 1 refused" in result.output


def test_install_reports_kibanas_refusal_in_one_line(stub_kibana: StubKibana) -> None:
    stub_kibana.status = 401
    result = run_install("--url", stub_kibana.url, "--api-key", "wrong")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: Kibana at {stub_kibana.url} answered 401: "
        "[security_exception] unable to authenticate"]


def test_install_says_when_kibana_is_unreachable() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_install("--url", f"http://127.0.0.1:{port}", "--timeout", "5")
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert line.startswith(f"error: cannot reach Kibana at http://127.0.0.1:{port}")
    assert "Traceback" not in result.output
