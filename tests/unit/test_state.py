"""TableState against a dict standing in for a Faust table: what reaches the table is codec
bytes, and what cannot be read back starts afresh instead of stopping the stage."""

import logging
from collections import Counter

from detectors.incidents import Incident
from detectors.state_codec import decode_state, encode_state
from streams.runtime.faust_wall import make_event_current
from streams.runtime.metrics import REGISTRY
from streams.runtime.sealing import DEVELOPMENT_RING
from streams.runtime.state import TableState


class FakeTable(dict):
    """A Faust table's store (`data`) and changelog, as TableState uses them."""

    name = "state-test"

    def __init__(self, **items: bytes) -> None:
        super().__init__(**items)
        self.data = self
        self.changelog: list[tuple[int, str, bytes | None]] = []

    def send_changelog(self, partition, key, value, value_serializer=None):
        self.changelog.append((partition, key, value))
        return "delivery"


class FakeEvent:
    """What TableState needs of an event: its partition, and something to hold a weak
    reference to."""

    class message:  # shaped like Faust's event.message
        partition = 3


def test_changed_state_reaches_the_table_as_codec_bytes_and_comes_back():
    table = FakeTable()
    event = FakeEvent()
    state = TableState(table, DEVELOPMENT_RING)  # type: ignore[arg-type]
    make_event_current(event)  # type: ignore[arg-type]
    state["a"] = {"incident": Incident(1, 2, 3), "keys": Counter({"k": 2})}
    state["b"] = 7
    assert state.flush() == ["delivery", "delivery"]  # for the caller to await
    assert all(isinstance(raw, bytes) for raw in table.values())
    assert sorted(table.changelog) == sorted((3, k, v) for k, v in table.items())
    assert decode_state(DEVELOPMENT_RING.open(table["a"], state.context("a")))["incident"] \
        == Incident(1, 2, 3)  # sealed for its table and key

    restarted = TableState(table, DEVELOPMENT_RING)  # type: ignore[arg-type]
    assert restarted["a"] == {"incident": Incident(1, 2, 3), "keys": Counter({"k": 2})}
    assert restarted["b"] == 7
    make_event_current(event)  # type: ignore[arg-type]
    del restarted["b"]
    restarted.flush()
    assert list(table) == ["a"]
    assert table.changelog[-1] == (3, "b", None)  # a tombstone


def sealed(raw: bytes, key: str) -> bytes:
    return DEVELOPMENT_RING.seal(raw, f"{FakeTable.name}\0{key}".encode())


def unreadable_count() -> float:
    return REGISTRY.get_sample_value("misuse_state_unreadable_total",
                                     {"table": "state-test"}) or 0.0


def test_unreadable_state_is_logged_and_counted_once_and_the_entity_starts_afresh(caplog):
    # Both sealed by the worker (a forged value is tests/unit/test_sealing.py's): "bad" is a
    # genuine value the codec cannot read.
    table = FakeTable(good=sealed(encode_state(1), "good"),
                      bad=sealed(b"\x80\x04pickled", "bad"))
    state = TableState(table, DEVELOPMENT_RING)  # type: ignore[arg-type]
    before = unreadable_count()
    with caplog.at_level(logging.ERROR, logger="streams.runtime.state"):
        assert state.get("bad") is None
        assert list(state) == ["good"]
        assert state.get("bad") is None
    assert caplog.text.count("state_unreadable table=state-test key=bad") == 1
    assert "pickled state" in caplog.text
    assert "Traceback" not in caplog.text
    assert unreadable_count() == before + 1
