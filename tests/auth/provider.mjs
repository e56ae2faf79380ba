// The OpenID provider the sign-in tests talk to: oidc-provider (npm, OpenID Certified) with a small
// configuration and its development login and consent screens. Started by tests/auth/idp.py with:
//   OIDC_PROVIDER_ENTRY  the package's lib/index.js (scripts/install-oidc-provider.sh installs it)
//   OIDC_TEST_CONFIG     JSON: {issuer, port, clients, jwks, accounts: {login: claims}}
// Prints "PORT <n>" once it listens.
const { default: Provider } = await import(process.env.OIDC_PROVIDER_ENTRY);
const config = JSON.parse(process.env.OIDC_TEST_CONFIG);

const provider = new Provider(config.issuer, {
  clients: config.clients,
  jwks: config.jwks,
  cookies: { keys: ['dumont-tests-only'] },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], groups: ['groups'] },
  scopes: ['openid', 'email', 'groups'],
  // The ID token carries the claims itself (the proxy reads no userinfo endpoint).
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: true }, rpInitiatedLogout: { enabled: true } },
  pkce: { required: () => true },
  async findAccount(ctx, id) {
    const claims = config.accounts[id] ?? { email: `${id}@example.com`, email_verified: true };
    return { accountId: id, async claims() { return { sub: id, ...claims }; } };
  },
});
provider.listen(config.port, '127.0.0.1', () => console.log(`PORT ${config.port}`));
