"""``dumont_auth_*``: sign-ins, refusals by reason, logouts and rate-limited attempts.

A registry of its own, not per workspace: a sign-in happens at the proxy before any workspace is
involved. The control app's /metrics appends ``AuthMetrics.render()`` to the workspaces' series.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest

__all__ = ["REFUSAL_REASONS", "AuthMetrics"]

# Every reason a refusal can carry, so the series exist (at 0) from the start.
REFUSAL_REASONS = (
    "no_session",  # a call without a valid session: 401
    "not_owner",  # signed in, but not an owner of the Host's workspace: 403
    "state",  # the callback's state is missing, mismatched, replayed or expired
    "token",  # the ID token failed a check (signature, alg, iss, aud, exp, nonce)
    "code",  # the token endpoint refused the code
    "no_email",
    "not_allowed",  # the user is not in allowed_emails, allowed_domains or allowed_groups
    "provider_error",  # the issuer sent the user back with ?error=
    "rate_limited",
)


class AuthMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.sign_ins = Counter("dumont_auth_sign_ins", "Sessions started", registry=self.registry)
        self.starts = Counter(
            "dumont_auth_sign_in_starts", "Redirects to the issuer", registry=self.registry
        )
        self.refusals = Counter(
            "dumont_auth_refusals",
            "Requests and sign-ins refused, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.logouts = Counter("dumont_auth_logouts", "Sessions ended", registry=self.registry)
        for reason in REFUSAL_REASONS:
            self.refusals.labels(reason)

    def refused(self, reason: str) -> None:
        self.refusals.labels(reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
