import zlib
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, is_dataclass

import msgpack
import numpy as np
import pytest

from detectors.credential_stuffing import _RangeState
from detectors.incidents import Incident
from detectors.state_codec import (
    STATE_TYPES,
    StateCodecError,
    decode_state,
    encode_state,
    from_plain,
    to_plain,
)
from detectors.windows import SlidingWindow


def stored(plain, version=1):
    return zlib.compress(msgpack.packb({"v": version, "state": plain}, use_bin_type=True))


def test_containers_come_back_as_they_were_in_their_order():
    value = {
        "tuple": (1, "a", None), "set": {"b", "a", "c"}, "deque": deque([1, 2], maxlen=3),
        "counter": Counter({"z": 2, "a": 1, "m": 3}), "int_keys": {3: "x", 1: "y"},
        "tuple_keys": Counter({("acct", 5): 2, ("acct", 4): 1}), "dollar": {"$": "not a tag"},
        "nested": [[(1, 2)], {"k": {1.5}}], "bytes": b"\x00\x01", "float": 0.1,
    }
    restored = decode_state(encode_state(value))
    assert restored == value
    assert list(restored["counter"]) == ["z", "a", "m"]
    assert list(restored["int_keys"]) == [3, 1]
    assert restored["deque"].maxlen == 3 and type(restored["tuple"]) is tuple
    assert type(restored["counter"]) is Counter and type(restored["set"]) is set


def test_equal_sets_encode_to_the_same_bytes():
    assert encode_state({"b", "a", "c"}) == encode_state({"c", "b", "a"})


def test_dataclasses_go_by_their_registered_name_not_their_class_name():
    state = _RangeState(SlidingWindow(1000), incident=Incident(5, 6, 7))
    plain = to_plain(state)
    assert plain["$"] == "credential_stuffing.range"
    assert plain["window"]["$"] == "sliding_window" and plain["incident"]["$"] == "incident"
    assert "_RangeState" not in repr(plain)
    assert from_plain(plain) == state


def test_every_registered_type_is_a_dataclass_under_one_name():
    assert all(is_dataclass(cls) for cls in STATE_TYPES.values())
    assert len(set(STATE_TYPES.values())) == len(STATE_TYPES)


@dataclass
class Unregistered:
    x: int = 0


def test_a_type_outside_the_registry_is_refused_both_ways():
    with pytest.raises(StateCodecError, match="not a state type"):
        encode_state({"a": Unregistered()})
    with pytest.raises(StateCodecError, match=r"unknown state type 'os\.system'"):
        decode_state(stored({"$": "os.system", "command": "rm -rf /"}))
    with pytest.raises(StateCodecError, match="not a state type"):
        encode_state(lambda: None)


def test_subclasses_of_plain_types_are_stored_as_those_types():
    """The encoder dispatches on the exact type: what only subclasses a plain type (numpy's
    float64, a bool, a str or list subclass) takes the slower path, into the same form; a
    dict or tuple subclass (its order or fields unknown to the format) is refused."""
    class Name(str):
        pass

    class Items(list):  # type: ignore[type-arg]
        pass

    value = {"score": np.float64(0.5), "flag": True, "who": Name("a"), "items": Items([1, 2])}
    assert decode_state(encode_state(value)) == {"score": 0.5, "flag": True, "who": "a",
                                                 "items": [1, 2]}
    assert type(decode_state(encode_state(value))["score"]) is float
    with pytest.raises(StateCodecError, match="not a state type"):
        encode_state(OrderedDict(a=1))


@pytest.mark.parametrize("plain, fragment", [
    ({"$": "incident", "start_ms": 1, "colour": "red"}, "unknown field"),
    ({"$": "sliding_window"}, "length_ms"),  # a required field is missing
    ({"$": "accounts.status", "status": "deleted", "set_by": "worker"}, "unknown account"),
    ({"$": "deque", "items": [1]}, "expected the keys"),
    ({"$": "counter", "items": [[1, 2, 3]]}, "counter"),
    ({"$": "set", "items": [[1]]}, "unhashable"),
    ({"$": 7}, "a type tag is a str"),
    ({"$": "frozenset", "items": []}, "unknown state type"),
])
def test_a_value_that_does_not_fit_is_refused_with_a_reason(plain, fragment):
    with pytest.raises(StateCodecError, match=fragment):
        decode_state(stored(plain))


@pytest.mark.parametrize("version", [2, 0, "1", True, None])
def test_an_unknown_format_version_is_refused(version):
    with pytest.raises(StateCodecError, match="unknown state format version"):
        decode_state(stored(1, version=version))


def test_bytes_that_are_not_state_are_refused():
    import pickle

    with pytest.raises(StateCodecError, match="pickled state"):
        decode_state(pickle.dumps(Incident()))
    with pytest.raises(StateCodecError, match="not a stored state"):
        decode_state(b"garbage")
    with pytest.raises(StateCodecError, match="expected a map"):
        decode_state(zlib.compress(msgpack.packb([1, 2])))
    assert issubclass(StateCodecError, ValueError)
