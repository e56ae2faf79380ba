"""The proxy as an OpenID Connect relying party: authorization code flow with PKCE (S256).

Discovery reads ``ISSUER/.well-known/openid-configuration`` once (again after a failure). ID tokens
are checked with joserfc against the issuer's JWKS: the signature with an asymmetric algorithm only
(``alg: none`` and HS* are refused, so a token "signed" with the public key as an HMAC secret
fails), then ``iss``, ``aud``, ``exp`` and ``nonce``. A token whose ``kid`` the cached JWKS lacks
makes one refetch (the issuer rotated its keys), at most every ``JWKS_REFETCH`` seconds so that
nobody can make the proxy hammer the issuer.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from .errors import IssuerUnavailable, SignInRefused

__all__ = ["ALGORITHMS", "Issuer", "Metadata", "pkce_challenge"]

log = logging.getLogger("dumont.auth")
# Asymmetric signatures only: the JWKS holds public keys, and an HMAC "keyed" with one is forgeable.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
              "EdDSA")  # fmt: skip
JWKS_REFETCH = 10.0
# Clocks differ a little between the issuer and the proxy.
LEEWAY = 60


def pkce_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


@dataclass(frozen=True)
class Metadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None


class Issuer:
    def __init__(
        self,
        issuer: str,
        client_id: str,
        client_secret: str,
        client: httpx.AsyncClient,
        jwks_refetch: float = JWKS_REFETCH,
    ) -> None:
        self.jwks_refetch = jwks_refetch
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.client = client
        self.metadata: Metadata | None = None
        self.keys: KeySet | None = None
        self.keys_fetched = -jwks_refetch

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = await self.client.get(url)
            response.raise_for_status()
            data = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise IssuerUnavailable(f"{url}: {exc}") from exc
        if not isinstance(data, dict):
            raise IssuerUnavailable(f"{url}: not a JSON object")
        return data

    async def discover(self) -> Metadata:
        if self.metadata is None:
            data = await self._get_json(f"{self.issuer}/.well-known/openid-configuration")
            if data.get("issuer", "").rstrip("/") != self.issuer:
                # OpenID Connect Discovery 1.0, section 4.3: the document must name this issuer.
                raise IssuerUnavailable(f"discovery names issuer {data.get('issuer')!r}")
            try:
                self.metadata = Metadata(
                    data["issuer"],
                    data["authorization_endpoint"],
                    data["token_endpoint"],
                    data["jwks_uri"],
                    data.get("end_session_endpoint"),
                )
            except KeyError as exc:
                raise IssuerUnavailable(f"discovery document lacks {exc}") from None
        return self.metadata

    async def authorization_url(
        self, redirect_uri: str, scopes: tuple[str, ...], state: str, nonce: str, verifier: str
    ) -> str:
        metadata = await self.discover()
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": redirect_uri,
                "scope": " ".join(dict.fromkeys(("openid", *scopes))),
                "state": state,
                "nonce": nonce,
                "code_challenge": pkce_challenge(verifier),
                "code_challenge_method": "S256",
            }
        )
        joiner = "&" if "?" in metadata.authorization_endpoint else "?"
        return f"{metadata.authorization_endpoint}{joiner}{query}"

    async def redeem(self, code: str, redirect_uri: str, verifier: str) -> str:
        """The ID token the token endpoint gives for an authorization code."""
        metadata = await self.discover()
        # client_secret_basic: RFC 6749 section 2.3.1 form-encodes both before Basic.
        auth = (quote(self.client_id, safe=""), quote(self.client_secret, safe=""))
        try:
            response = await self.client.post(
                metadata.token_endpoint,
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": redirect_uri,
                    "code_verifier": verifier,
                },
                auth=auth,
            )
        except httpx.HTTPError as exc:
            raise IssuerUnavailable(f"token endpoint: {exc}") from exc
        if response.status_code != 200:
            raise SignInRefused("code", f"token endpoint answered {response.status_code}")
        try:
            token = response.json()["id_token"]
        except (ValueError, KeyError, TypeError):
            raise SignInRefused("code", "token endpoint gave no id_token") from None
        if not isinstance(token, str):
            raise SignInRefused("code", "id_token is not a string")
        return token

    async def _key_set(self, kid: str | None) -> KeySet:
        known = self.keys is not None and (kid is None or any(k.kid == kid for k in self.keys.keys))
        now = time.monotonic()
        if not known and now - self.keys_fetched >= self.jwks_refetch:
            metadata = await self.discover()
            data = await self._get_json(metadata.jwks_uri)
            try:
                self.keys = KeySet.import_key_set(data)  # type: ignore[arg-type]
            except (JoseError, ValueError, TypeError) as exc:
                raise IssuerUnavailable(f"the issuer's JWKS: {exc}") from exc
            self.keys_fetched = now
            log.info("auth: read %d signing keys from %s", len(self.keys.keys), metadata.jwks_uri)
        if self.keys is None:
            raise IssuerUnavailable("no JWKS yet")
        return self.keys

    async def validate(self, token: str, nonce: str, now: float | None = None) -> dict[str, Any]:
        """The ID token's claims once every check passed; SignInRefused("token", ...) else."""
        try:
            header = jws.extract_compact(token.encode()).headers()
        except (JoseError, ValueError) as exc:
            raise SignInRefused("token", f"not a signed token: {exc}") from None
        if header.get("alg") not in ALGORITHMS:
            raise SignInRefused("token", f"algorithm {header.get('alg')!r} is not accepted")
        kid = header.get("kid")
        keys = await self._key_set(kid if isinstance(kid, str) else None)
        metadata = await self.discover()
        try:
            decoded = jwt.decode(token, keys, algorithms=list(ALGORITHMS))
            registry = jwt.JWTClaimsRegistry(
                now=int(now if now is not None else time.time()),
                leeway=LEEWAY,
                iss={"essential": True, "value": metadata.issuer},
                aud={"essential": True, "value": self.client_id},
                exp={"essential": True},
                nonce={"essential": True, "value": nonce},
                sub={"essential": True},
            )
            registry.validate(decoded.claims)
        except (JoseError, ValueError) as exc:
            raise SignInRefused("token", f"ID token refused: {exc}") from None
        claims = decoded.claims
        azp = claims.get("azp")
        aud = claims.get("aud")
        if isinstance(aud, list) and len(aud) > 1 and azp != self.client_id:
            # OpenID Connect Core 3.1.3.7, 4-5: several audiences need azp naming this client.
            raise SignInRefused("token", "ID token for several audiences without our azp")
        return claims

    async def end_session_url(self, id_token_hint: str | None, after: str) -> str | None:
        try:
            metadata = await self.discover()
        except IssuerUnavailable:
            return None
        if metadata.end_session_endpoint is None:
            return None
        params = {"client_id": self.client_id, "post_logout_redirect_uri": after}
        if id_token_hint:
            params["id_token_hint"] = id_token_hint
        joiner = "&" if "?" in metadata.end_session_endpoint else "?"
        return f"{metadata.end_session_endpoint}{joiner}{urlencode(params)}"
