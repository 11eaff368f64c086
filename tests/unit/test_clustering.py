import pickle

import numpy as np

from detectors.clustering import ClusterPoint, OnlineClusterer, cluster_id_for

T0 = 1_790_000_000_000
DIM = 32
MINUTE = 60_000


def unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def basis(i):
    v = np.zeros(DIM)
    v[i] = 1.0
    return v


def point(n, vector, ts=None, account=None, ip="192.0.2.1", event_id=None):
    return ClusterPoint(
        event_id=event_id or f"e{n}", ts_ms=T0 + n * 1000 if ts is None else ts,
        vector=unit(vector).astype(np.float32), account_id=account or f"acct-{n % 7}",
        api_key_id=f"key-{n % 7}", ip=ip, user_agent="ua", prompt_sample=f"prompt {n}",
        text_key=f"t{n}",
    )


def noisy(rng, direction, scale=0.05):
    return unit(direction) + rng.normal(scale=scale, size=DIM)


def test_similar_points_share_a_cluster_named_after_the_founder():
    rng = np.random.default_rng(0)
    clusterer = OnlineClusterer(window_ms=3_600_000)
    ids = [clusterer.add(point(n, noisy(rng, basis(0)))) for n in range(10)]
    other = clusterer.add(point(10, basis(1)))
    assert set(ids) == {cluster_id_for("e0")}
    assert other == cluster_id_for("e10") != ids[0]
    assert len(clusterer) == 2


def test_replay_gives_the_same_ids():
    rng = np.random.default_rng(1)
    points = [point(n, noisy(rng, basis(n % 3), 0.1)) for n in range(60)]
    first, second = OnlineClusterer(3_600_000), OnlineClusterer(3_600_000)
    assert [first.add(p) for p in points] == [second.add(p) for p in points]


def test_redelivered_events_are_not_counted_twice():
    clusterer = OnlineClusterer(window_ms=3_600_000)
    p = point(0, basis(0))
    cid = clusterer.add(p)
    assert clusterer.add(p) == cid
    assert clusterer.add(point(0, basis(5))) == cid  # same event id, even with another vector
    assert clusterer.snapshot(cid).size == 1


def test_expiry_drops_old_points_and_empty_clusters():
    clusterer = OnlineClusterer(window_ms=10 * MINUTE, bin_ms=MINUTE)
    old = clusterer.add(point(0, basis(0), ts=T0))
    kept = clusterer.add(point(1, basis(1), ts=T0))
    clusterer.add(point(2, basis(1), ts=T0 + 8 * MINUTE, account="late"))
    removed = clusterer.expire(T0 + 10 * MINUTE + MINUTE)
    assert removed == (old,)
    snapshot = clusterer.snapshot(kept)
    assert snapshot.size == 1 and set(snapshot.accounts) == {"late"}
    assert [m.event_id for m in snapshot.members] == ["e2"]
    assert clusterer.add(point(3, basis(0), ts=T0 + 30_000)) is None  # older than the window
    assert clusterer.cluster_of("e0") is None


def test_snapshot_counts_exactly_beyond_the_member_sample():
    rng = np.random.default_rng(2)
    clusterer = OnlineClusterer(window_ms=3_600_000, max_members=10)
    for n in range(50):
        clusterer.add(point(n, noisy(rng, basis(0)), account=f"a{n % 5}", ip=f"192.0.2.{n % 5}"))
    [cid] = clusterer.cluster_ids()
    snapshot = clusterer.snapshot(cid)
    assert snapshot.size == 50 and len(snapshot.members) == 10
    assert snapshot.accounts == {f"a{i}": 10 for i in range(5)}
    assert snapshot.account_ips["a3"] == frozenset({"192.0.2.3"})
    assert snapshot.first_seen_ms == T0 and snapshot.last_seen_ms == T0 + 49_000
    assert abs(float(np.linalg.norm(snapshot.centroid)) - 1.0) < 1e-5
    census = clusterer.census()
    assert census.account_events["a0"] == 10
    assert census.network_accounts["192.0.2.0/24"] == 5


def test_merge_keeps_the_older_id_even_when_the_younger_cluster_is_bigger():
    u = basis(0)
    w = unit(0.85 * basis(0) + np.sqrt(1 - 0.85**2) * basis(1))
    clusterer = OnlineClusterer(window_ms=3_600_000, similarity_threshold=0.9,
                                merge_threshold=0.9)
    older = clusterer.add(point(0, u))
    younger = clusterer.add(point(1, w))
    assert older != younger
    assert clusterer.add(point(2, u + w)) == older  # pulls the older centre towards w
    for n in range(3, 8):
        assert clusterer.add(point(n, w)) == younger
    result = clusterer.refine()
    assert result.merged == ((younger, older),)
    assert len(clusterer) == 1
    assert clusterer.cluster_of("e5") == older
    assert clusterer.snapshot(older).size == 8
    assert clusterer.add(point(5, w)) == older  # a redelivery follows the merge


def test_split_separates_two_groups_and_the_bigger_keeps_the_id():
    rng = np.random.default_rng(3)
    u = basis(0)
    w = unit(0.6 * basis(0) + 0.8 * basis(1))
    clusterer = OnlineClusterer(window_ms=3_600_000, split_min_members=20)
    founder = clusterer.add(point(0, unit(u + w) + 0.05 * u))
    groups = [u] * 15 + [w] * 10
    # Alternating keeps the centre between the groups, so both join before the split.
    order = [i for pair in zip(range(15, 25), range(10), strict=True) for i in pair]
    order += list(range(10, 15))
    for n, g in enumerate(order, start=1):
        assert clusterer.add(point(n, noisy(rng, groups[g], 0.02))) == founder
    result = clusterer.refine()
    assert len(result.split) == 1
    parent, child = result.split[0]
    assert parent == founder
    w_events = [f"e{n}" for n, g in enumerate(order, start=1) if g >= 15]
    assert child == cluster_id_for(w_events[0])
    assert all(clusterer.cluster_of(e) == child for e in w_events)
    assert clusterer.snapshot(parent).size + clusterer.snapshot(child).size == 26
    assert clusterer.refine().merged == ()  # a split is not undone by the next merge


def test_no_split_of_a_single_tight_group():
    rng = np.random.default_rng(4)
    clusterer = OnlineClusterer(window_ms=3_600_000, split_min_members=20)
    for n in range(40):
        clusterer.add(point(n, noisy(rng, basis(0), 0.05)))
    assert clusterer.refine().split == ()


def test_cluster_count_is_bounded():
    clusterer = OnlineClusterer(window_ms=3_600_000, max_clusters=20)
    rng = np.random.default_rng(5)
    for n in range(100):
        clusterer.add(point(n, rng.normal(size=DIM)))
    assert len(clusterer) <= 20


def test_state_pickles_and_keeps_working():
    rng = np.random.default_rng(6)
    clusterer = OnlineClusterer(window_ms=3_600_000)
    for n in range(20):
        clusterer.add(point(n, noisy(rng, basis(n % 2))))
    restored = pickle.loads(pickle.dumps(clusterer))
    assert restored.add(point(99, noisy(rng, basis(0)))) == clusterer.cluster_of("e0")


def test_a_cluster_of_one_copied_text_is_not_split_and_raises_no_warning() -> None:
    import warnings

    vector = np.ones(8, dtype=np.float32) / np.sqrt(8)
    clusterer = OnlineClusterer(window_ms=3_600_000, split_min_members=5)
    for i in range(30):
        clusterer.add(ClusterPoint(f"copy-{i}", 1_790_000_000_000 + i, vector, f"a{i}", "k",
                                   "10.0.0.1", "", "same text", "t"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert clusterer.refine().split == ()


def test_copies_a_float_noise_apart_are_not_split_and_raise_no_warning() -> None:
    import warnings

    # One text encoded in different batches: the same vector up to its last bits.
    rng = np.random.default_rng(8)
    base = unit(rng.normal(size=DIM))
    clusterer = OnlineClusterer(window_ms=3_600_000, split_min_members=5)
    for i in range(30):
        vector = (base + rng.normal(scale=1e-8, size=DIM)).astype(np.float32)
        clusterer.add(ClusterPoint(f"copy-{i}", T0 + i, vector, f"a{i}", "k", "10.0.0.1", "",
                                   "same text", "t"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert clusterer.refine().split == ()


def test_a_part_split_off_with_its_parents_founder_gets_an_id_of_its_own():
    """The minority part's earliest point can be the parent's founder: the part is named
    apart, and the parent, the bigger part, is still there under its id."""
    rng = np.random.default_rng(5)
    u = basis(0)
    w = unit(0.6 * basis(0) + 0.8 * basis(1))
    clusterer = OnlineClusterer(window_ms=3_600_000, split_min_members=20)
    # Founded between the groups, nearer the smaller one; alternating keeps the centre
    # between them, so both join before the split.
    founder = clusterer.add(point(0, unit(u + w) + 0.04 * w))
    order = [i for pair in zip(range(15, 25), range(10), strict=True) for i in pair]
    order += list(range(10, 15))
    for n, g in enumerate(order, start=1):
        assert clusterer.add(point(n, noisy(rng, u if g < 15 else w, 0.02))) == founder
    parent, child = clusterer.refine().split[0]
    assert parent == founder and child != founder
    assert {founder, child} <= set(clusterer.cluster_ids())
    assert clusterer.cluster_of("e0") == child
    assert clusterer.snapshot(parent).size + clusterer.snapshot(child).size == 26


def test_a_cluster_is_anchored_at_its_earliest_point_whatever_founded_it():
    """Points come a little out of event-time order (several partitions interleaved): the
    founder is the first to arrive, the anchor the earliest in event time."""
    clusterer = OnlineClusterer(window_ms=3_600_000)
    founder = clusterer.add(point(5, basis(0)))
    clusterer.add(point(2, basis(0)))
    clusterer.add(point(9, basis(0)))
    snapshot = clusterer.snapshot(founder)
    assert snapshot.cluster_id == cluster_id_for("e5")
    assert snapshot.anchor == (T0 + 2000, "e2")
