"""``dumont_auth_*``: sign-ins, refusals by reason, logouts and rate-limited attempts, and the
admin surface's (/__dumont/admin/) refusals by reason and the actions admins took there.

A registry of its own, not per workspace: a sign-in happens at the proxy before any workspace is
involved. The control app's /metrics appends ``AuthMetrics.render()`` to the workspaces' series.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest

__all__ = ["ADMIN_REFUSAL_REASONS", "REFUSAL_REASONS", "AuthMetrics"]

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

# Why the admin surface refused a request: a series of their own, so that a sign-in problem and
# someone probing the dashboard do not add up to one number.
ADMIN_REFUSAL_REASONS = (
    "wrong_host",  # not [auth] admin_host, or a Host a workspace's backend also serves
    "no_session",  # no valid session at this Host: a redirect to sign in, or 401
    "not_admin",  # signed in, not one of [auth] admins: 403
    "cross_site",  # a state-changing request another origin sent (Origin, Sec-Fetch-Site): 403
    "csrf",  # a state-changing request without this session's X-CSRF-Token: 403
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
        self.admin_refusals = Counter(
            "dumont_auth_admin_refusals",
            "Requests to the admin surface from a browser refused, by reason",
            ["reason"],
            registry=self.registry,
        )
        for reason in ADMIN_REFUSAL_REASONS:
            self.admin_refusals.labels(reason)
        self.admin_actions = Counter(
            "dumont_auth_admin_actions",
            "State-changing requests admins made from a browser (each one logged with who)",
            registry=self.registry,
        )

    def refused(self, reason: str) -> None:
        self.refusals.labels(reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
