"""ops/elasticsearch/roles.json against the code: the worker's role covers every index the
worker writes and nothing else, analysts write only alert documents, the reader writes nothing.
Offline: the integ-test Elasticsearch has no security module to load the roles into."""

from __future__ import annotations

import fnmatch
import json
from typing import Any

import pytest

from detectors.alerts import Alert, Entity
from streams.runtime.messages import DocumentRecord
from streams.settings import REPO_ROOT, Settings
from streams.sinks.documents import alert_document
from streams.sinks.elasticsearch import index_templates
from streams.sinks.index_documents import INDEXES

ROLES = REPO_ROOT / "ops" / "elasticsearch" / "roles.json"
# What a role descriptor may hold (PUT /_security/role), and the index privileges used here.
DESCRIPTOR_KEYS = {"description", "cluster", "indices", "applications", "run_as", "metadata",
                   "global", "remote_indices", "remote_cluster"}
READ = {"read", "view_index_metadata"}
WRITE = {"create_index", "index", "create", "create_doc", "write", "delete", "delete_index",
         "manage", "all", "auto_configure", "maintenance"}
DAYS_MS = [1_700_000_000_000 + day * 86_400_000 for day in (0, 40, 400)]


def roles(settings: Settings) -> dict[str, dict[str, Any]]:
    """The descriptors as `misuse setup` would install them: {prefix} is the index prefix."""
    text = ROLES.read_text(encoding="utf-8").replace("{prefix}", settings.index_prefix)
    return dict(json.loads(text))


def written_indices(settings: Settings) -> set[str]:
    """Every index the worker writes, from the code that names them: the indexer turns alert
    records into dated alert documents and document records into the indices it accepts."""
    alerts = {alert_document(Alert("credential_stuffing.ip", "high", 0.9, Entity("ip", "ip-1"),
                                   start, start, start, ("why",)), settings).index
              for start in DAYS_MS}
    documents = {settings.index(DocumentRecord(name, "id", {}).index) for name in INDEXES}
    return alerts | documents


def covering(role: dict[str, Any], index: str) -> set[str]:
    """The privileges a role grants on one index."""
    return {privilege for grant in role["indices"]
            if any(fnmatch.fnmatchcase(index, name) for name in grant["names"])
            for privilege in grant["privileges"]}


@pytest.fixture(params=["misuse-", "staging-misuse-"])
def settings(request: pytest.FixtureRequest) -> Settings:
    return Settings(index_prefix=request.param)


def test_each_role_is_a_role_descriptor_with_wildcards_only(settings: Settings) -> None:
    found = roles(settings)
    assert set(found) == {"misuse-worker", "misuse-setup", "misuse-analyst", "misuse-reader"}
    for role in found.values():
        assert set(role) <= DESCRIPTOR_KEYS and role["description"]
        for grant in role["indices"]:
            assert set(grant) <= {"names", "privileges", "field_security", "query"}
            for name in grant["names"]:
                # No regular expression (/…/) nor a grant beyond the prefix.
                assert not name.startswith("/") and name.startswith(settings.index_prefix)


def test_the_worker_role_covers_every_index_the_worker_writes(settings: Settings) -> None:
    worker = roles(settings)["misuse-worker"]
    for index in written_indices(settings):
        assert {"create_index", "index"} <= covering(worker, index), index
    # The templates that shape those indices: an index they govern is one the worker may write.
    for template in index_templates(settings).values():
        for pattern in template["index_patterns"]:
            assert {"create_index", "index"} <= covering(worker, pattern), pattern


def test_the_worker_role_grants_nothing_beyond_its_writes(settings: Settings) -> None:
    worker = roles(settings)["misuse-worker"]
    written = written_indices(settings)
    for grant in worker["indices"]:
        assert set(grant["privileges"]) == {"create_index", "index"}  # no read, no delete
        for name in grant["names"]:
            assert any(fnmatch.fnmatchcase(index, name) for index in written), name
    # Reading its templates at start needs `monitor`; installing them is misuse-setup's.
    assert worker["cluster"] == ["monitor"]
    assert covering(worker, f"{settings.index_prefix}secrets") == set()
    assert covering(worker, "kibana_sample_data_logs") == set()


def test_analysts_read_everything_and_write_only_alert_documents(settings: Settings) -> None:
    analyst = roles(settings)["misuse-analyst"]
    alias = settings.index("alerts")  # what `misuse review --alert` searches
    for index in written_indices(settings) | {alias}:
        assert covering(analyst, index) >= READ, index
        writes = covering(analyst, index) & WRITE
        if index.startswith(f"{alias}-"):
            assert writes == {"index"}, index  # misuse.workflow, by `misuse review`
        else:
            assert writes == set(), index
    assert analyst["cluster"] == []


def test_the_report_reader_writes_nothing(settings: Settings) -> None:
    reader = roles(settings)["misuse-reader"]
    for index in written_indices(settings) | {settings.index("alerts")}:
        assert covering(reader, index) == READ, index
    assert reader["cluster"] == []
