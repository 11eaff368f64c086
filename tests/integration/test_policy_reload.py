"""A policy edited while the worker runs takes effect without a restart: a campaign threshold
and a risk weight, through the real worker."""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import yaml

from streams.runtime import clock
from streams.settings import REPO_ROOT
from streams.tooling.simulation import preset_options, simulate

from .conftest import close_pipeline, open_pipeline


def test_a_policy_reload_changes_a_campaign_threshold_and_a_risk_weight(tmp_path: Path) -> None:
    shipped = yaml.safe_load((REPO_ROOT / "ops" / "policy.yaml").read_text())
    strict = copy.deepcopy(shipped)
    strict["rules"]["campaign"]["min_accounts"] = 100  # no operation here is that big
    strict["risk"]["weights"]["campaign"] = 0.0  # and a campaign would flag nobody
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(strict))
    pipeline = open_pipeline("reload", tmp_path / "data", tmp_path / "worker.log",
                             env_overrides={"MISUSE_POLICY_FILE": str(path)})
    try:
        traffic = simulate(7, clock.now_ms() - 2 * 3_600_000, **preset_options("campaign", 0.3))
        members = {label.entity_id for label in traffic.labels if label.rule == "campaign"}
        half = len(traffic.events) // 2
        pipeline.produce(traffic.events[:half])
        pipeline.wait_drained(timeout_s=600)
        assert not pipeline.search("campaigns", {"match_all": {}})

        path.write_text(yaml.safe_dump(shipped))
        later = time.time() + 2  # a new mtime, however coarse the file system's clock
        os.utime(path, (later, later))
        pipeline.produce(traffic.events[half:])
        pipeline.wait_drained(timeout_s=600)

        campaigns = pipeline.search("campaigns", {"term": {"misuse.status": "active"}})
        found = set().union(*(set(c["misuse"]["accounts"]) for c in campaigns)) if campaigns \
            else set()
        assert len(found & members) >= 0.9 * len(members), "the shipped threshold applies"
        flagged = {a["user"]["id"] for a in pipeline.search("accounts", {"match_all": {}})
                   if "campaign" in a["misuse"]["detectors"]}
        assert flagged & members, "the campaign weight is back: its members are flagged"
    finally:
        close_pipeline(pipeline)
