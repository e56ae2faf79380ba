"""``dumont_cluster_*``: this replica's standing in the cluster, for Prometheus and its alerts.

A registry of its own, like sign-in's: the cluster belongs to the proxy, not to a workspace.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

__all__ = ["ClusterMetrics"]


class ClusterMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=False)
        self.leader = Gauge("dumont_cluster_leader", "1 while this replica leads", registry=r)
        self.term = Gauge(
            "dumont_cluster_term", "The leadership term this replica knows of", registry=r
        )
        self.in_contact = Gauge(
            "dumont_cluster_in_contact", "1 while this replica reaches the store", registry=r
        )
        self.store_lost = Gauge(
            "dumont_cluster_store_lost",
            "1 while no replica reaches the store and this one routes by the last decisions",
            registry=r,
        )
        self.halted = Gauge(
            "dumont_cluster_halted",
            "1 while this replica refuses to route (it cannot confirm the decisions)",
            registry=r,
        )
        self.replicas = Gauge(
            "dumont_cluster_replicas", "Replicas present in the store", registry=r
        )
        self.round_trip = Gauge(
            "dumont_cluster_etcd_round_trip_seconds",
            "The last round trip to the store",
            registry=r,
        )
        self.decision_age = Gauge(
            "dumont_cluster_decision_age_seconds",
            "Seconds since the newest decision this replica saw",
            registry=r,
        )
        self.decisions = Counter(
            "dumont_cluster_decisions",
            "Decisions this replica wrote as leader, by outcome",
            ["outcome"],
            registry=r,
        )
        for outcome in ("written", "refused", "failed"):
            self.decisions.labels(outcome)

    def render(self) -> bytes:
        return generate_latest(self.registry)
