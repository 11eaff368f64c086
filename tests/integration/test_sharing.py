"""The STIX export and the transparency report from real documents: a small simulated mix
(benign traffic, a campaign, credential stuffing, a leaked key, a jailbreak sprayer, a sybil
farm) through every stage in one process (streams/tooling/inprocess.py: the worker's stages,
wire format and real model, without Kafka), its alerts and documents indexed into indices of
their own by the indexer's sink, then the demo's `share` writes the bundle and the report, read
back from Elasticsearch as `misuse export stix` and `misuse report` read them.

The bundle must pass stix2-validator and parse back with every active campaign; neither file
may hold a raw prompt, an e-mail address, a phone number or an address that is not an
attacker's; the report must open in headless Chromium (ops/tools install puts Debian's
chromium-headless-shell into the cache) with no console error and every chart drawn."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import stix2
from elasticsearch import AsyncElasticsearch, Elasticsearch
from stix2validator import validate_string

from detectors.network import network_range
from streams.runtime import clock
from streams.runtime.messages import AlertRecord, DocumentRecord
from streams.runtime.policy import current_policy
from streams.settings import Settings
from streams.sinks.documents import alert_document
from streams.sinks.elasticsearch import (
    Document,
    ElasticsearchSink,
    client_options,
    install_templates,
    search_sources,
)
from streams.sinks.index_documents import merge
from streams.stages import STAGES
from streams.tooling.demo import share
from streams.tooling.inprocess import Collected, InProcessPipeline
from streams.tooling.runner import free_port, isolated_environment, remove_run
from streams.tooling.sharing.report import CHARTS
from streams.tooling.simulation import Traffic, simulate

pytestmark = pytest.mark.integration

# Benign prompts carrying what must never leave: an e-mail address, a phone number, an address.
PERSONAL = [
    ("jane.doe@example.org", "+1 415 555 0199", "10.20.30.40"),
    ("k.tanaka@mail.example.jp", "020 7946 0958", "172.16.5.9"),
]


@dataclass
class Shared:
    traffic: Traffic
    settings: Settings
    campaigns: list[dict[str, Any]]
    bundle: Path
    page: Path


def with_personal_data(traffic: Traffic) -> Traffic:
    """Benign events whose prompts name a person's e-mail, phone and address."""
    benign = [e for e in traffic.events if str(e.get("account_id", "")).startswith("acct-0")
              and e.get("prompt")]
    extra = [{**event, "event_id": f"{event['event_id']}-pii",
              "prompt": f"Draft a reply to {email} (call {phone}) about the outage on {ip}"}
             for event, (email, phone, ip) in zip(benign[::500], PERSONAL, strict=False)]
    events = sorted([*traffic.events, *extra], key=lambda e: e["ts"])
    return Traffic(events, traffic.labels)


def index_collected(collected: Collected, settings: Settings) -> None:
    """What the indexer would write, in the order the stages sent it (partial updates of one
    document merged in order, as the indexer merges them within a batch)."""
    latest: dict[tuple[str, str], Document] = {}
    for topic in ("misuse.alerts", "misuse.documents"):
        for record in collected.records[topic]:
            if isinstance(record, AlertRecord):
                document = alert_document(record.alert, settings)
            else:
                assert isinstance(record, DocumentRecord)
                document = Document(settings.index(record.index), record.id, record.source,
                                    partial=True)
            key = (document.index, document.id)
            latest[key] = merge(latest[key], document) if key in latest else document

    async def write() -> None:
        sink = ElasticsearchSink(AsyncElasticsearch(**client_options(settings)))
        try:
            assert not await sink.write(list(latest.values()))
        finally:
            await sink.client.close()

    asyncio.run(write())


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    settings, _ = isolated_environment("share", tmp_path_factory.mktemp("share-data"))
    es = Elasticsearch(**client_options(settings))
    start_ms = clock.now_ms() - 3_600_000
    traffic = with_personal_data(simulate(
        5, start_ms, duration_s=3600, benign_accounts=80, stuffing_attacks=1,
        scenarios=("credential_stuffing", "campaign", "leaked_key", "jailbreak", "sybil"),
        campaigns=1, campaign_accounts=10, jailbreak_accounts=1))
    try:
        install_templates(es, settings)
        pipeline = InProcessPipeline(STAGES, current_policy(), now_ms=clock.now_ms)
        pipeline.run("api.usage", [json.dumps(e).encode() for e in traffic.events])
        index_collected(pipeline.collected, settings)
        es.indices.refresh(index=f"{settings.index_prefix}*")
        campaigns = search_sources(es, settings, "campaigns")
        bundle, page = share(es, settings, start_ms, clock.now_ms(),
                             tmp_path_factory.mktemp("shared"))
        yield Shared(traffic, settings, campaigns, bundle, page)
    finally:
        remove_run(settings)
        es.close()


def test_the_bundle_validates_and_carries_every_campaign_of_the_run(shared: Shared) -> None:
    text = shared.bundle.read_text()
    results = validate_string(text)
    assert results.is_valid, [str(e) for e in results.errors]
    bundle = stix2.parse(text, allow_custom=False)
    active = {c["misuse"]["campaign_id"] for c in shared.campaigns
              if c["misuse"]["status"] == "active"}
    assert active, "the run found no campaign: nothing to share"
    assert {o.aliases[0] for o in bundle.objects if o.type == "campaign"} == active
    techniques = {o.name for o in bundle.objects if o.type == "attack-pattern"}
    assert {"Credential Stuffing", "LLM jailbreak spraying", "Sybil account farm"} <= techniques
    indicates = {r.target_ref for r in bundle.objects
                 if r.type == "relationship" and r.relationship_type == "indicates"}
    assert all(o.id in indicates for o in bundle.objects if o.type == "campaign")


def attacker_addresses(traffic: Traffic) -> set[str]:
    """Addresses of events sent by a labelled attacker: its accounts, its address or range,
    and a leaked key once it leaked (not the addresses its owner used before)."""
    labels = {(label.entity_kind, label.entity_id): label for label in traffic.labels}
    owners: set[str] = set()
    attacking: set[str] = set()
    for event in traffic.events:
        ip, key = event["ip"], labels.get(("api_key", event["api_key_id"]))
        if key is not None and event["ts"] < key.start_ms:
            owners.add(ip)
        elif key is not None or ("account", event.get("account_id")) in labels \
                or ("ip", ip) in labels or ("network", network_range(ip)) in labels:
            attacking.add(ip)
    return attacking - owners


def occurrences(text: str, needles: set[str]) -> list[str]:
    """The needles in the text, each as a whole token (1.2.3.4 is not in 11.2.3.45)."""
    return sorted(n for n in needles
                  if re.search(rf"(?<![\w.]){re.escape(n)}(?![\w])", text))


def test_no_prompt_email_phone_or_bystander_address_is_in_either_file(shared: Shared) -> None:
    files = {path.name: path.read_text() for path in (
        shared.bundle, shared.page, shared.page.with_name("figures.json"))}
    events = shared.traffic.events
    prompts = {e["prompt"] for e in events if len(e.get("prompt") or "") >= 24}
    attackers = attacker_addresses(shared.traffic)
    bystanders = {e["ip"] for e in events} - attackers
    bystander_ranges = {network_range(ip) for ip in bystanders} - \
        {network_range(ip) for ip in attackers}
    personal = {item for row in PERSONAL for item in row}
    assert all(any(p in prompt for prompt in prompts) for p in personal)  # they went in
    for name, text in files.items():
        assert not [p for p in prompts if p in text], name
        assert not occurrences(text, personal | bystanders | bystander_ranges), name
        assert not re.search(r"[\w.+-]+@[\w-]+\.[\w.]+", text), name


async def browse(chromium: str, page: Path, profile: Path) -> tuple[list[str], list[dict]]:
    """Open the page in headless Chromium over the DevTools protocol: the console errors and
    uncaught exceptions of its load, and, per chart, its size and the share of its pixels
    that are not background."""
    port = free_port()
    browser = subprocess.Popen(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
         f"--remote-debugging-port={port}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/json/list") as response:
                        targets = await response.json()
                    break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.2)
            target = next(t for t in targets if t["type"] == "page")
            async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                return await load_and_inspect(ws, page)
    finally:
        browser.kill()
        browser.wait()


CHART_CHECK = """
[...document.querySelectorAll('img.chart')].map(img => {
  if (!img.complete || !img.naturalWidth) return {id: img.id, width: 0, height: 0, ink: 0};
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const context = canvas.getContext('2d');
  context.drawImage(img, 0, 0);
  const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
  let ink = 0;
  for (let i = 0; i < pixels.length; i += 4)
    if (pixels[i + 3] > 0 && (pixels[i] < 200 || pixels[i + 1] < 200 || pixels[i + 2] < 200))
      ink++;
  return {id: img.id, width: img.naturalWidth, height: img.naturalHeight,
          shown: img.getBoundingClientRect().height, ink: ink / Math.max(1, pixels.length / 4)};
})
"""


async def load_and_inspect(ws: aiohttp.ClientWebSocketResponse,
                           page: Path) -> tuple[list[str], list[dict]]:
    ids = iter(range(1, 1000))
    errors: list[str] = []

    async def call(method: str, **params: Any) -> dict[str, Any]:
        number = next(ids)
        await ws.send_json({"id": number, "method": method, "params": params})
        while True:
            message = await ws.receive_json(timeout=30)
            note(message)
            if message.get("id") == number:
                return message

    def note(message: dict[str, Any]) -> None:
        params = message.get("params", {})
        if message.get("method") == "Runtime.exceptionThrown":
            errors.append(params["exceptionDetails"].get("text", "exception"))
        elif message.get("method") == "Runtime.consoleAPICalled" \
                and params.get("type") in ("error", "assert"):
            errors.append(str(params.get("args")))
        elif message.get("method") == "Log.entryAdded" \
                and params["entry"]["level"] == "error":
            errors.append(params["entry"]["text"])

    for domain in ("Runtime", "Log", "Page"):
        await call(f"{domain}.enable")
    await call("Page.navigate", url=page.resolve().as_uri())
    while True:
        message = await ws.receive_json(timeout=30)
        note(message)
        if message.get("method") == "Page.loadEventFired":
            break
    result = (await call("Runtime.evaluate", expression=CHART_CHECK,
                         returnByValue=True))["result"]
    assert "exceptionDetails" not in result, result["exceptionDetails"]
    return errors, result["result"]["value"]


def chromium() -> str:
    """chromium on the PATH, or where `ops/tools install` (run by `make test`) put it."""
    cache = Path(os.environ.get("MISUSE_CACHE", Path.home() / ".cache" / "misuse-detector"))
    found = shutil.which("chromium") or shutil.which("chromium", path=str(cache / "bin"))
    assert found, "chromium is not installed: run ops/tools install"
    return found


def test_the_report_opens_in_a_browser_with_every_chart_drawn(shared: Shared,
                                                              tmp_path: Path) -> None:
    errors, charts = asyncio.run(browse(chromium(), shared.page, tmp_path / "profile"))
    assert not errors
    assert [c["id"] for c in charts] == [f"chart-{name}" for name in CHARTS]
    for chart in charts:
        assert chart["width"] > 400 and chart["height"] > 200 and chart["shown"] > 100, chart
        assert chart["ink"] > 0.01, chart  # axes, labels and bars, not a blank picture
    figures = json.loads(shared.page.with_name("figures.json").read_text())
    assert figures["alerts"]["total"] > 0 and figures["campaigns"]
