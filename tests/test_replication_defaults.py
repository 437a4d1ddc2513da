"""``topics ensure`` sizes replication from the cluster: three copies and
``min.insync.replicas=2`` from three brokers up, one copy per broker below."""

from __future__ import annotations

import pytest

from streamtask.kafka.topics import replication_for


@pytest.mark.parametrize(("brokers", "factor", "config"), [
    (1, 1, {}), (2, 2, {}), (3, 3, {"min.insync.replicas": "2"}),
    (7, 3, {"min.insync.replicas": "2"}), (0, 1, {}),
])
def test_replication_follows_the_cluster_size(brokers: int, factor: int,
                                              config: dict[str, str]) -> None:
    assert replication_for(brokers) == (factor, config)
