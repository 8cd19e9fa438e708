-- OAuth 2.0 (module http_oauth2): grants (what a user allowed a client),
-- the tokens issued from them (SHA-256 only), server signing keys and
-- secrets. Clients are not stored: their registration is stateless.
CREATE TABLE oauth2_grants (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    username TEXT NOT NULL,
    client_hash TEXT NOT NULL,
    client_name TEXT NOT NULL,
    client_uri TEXT NOT NULL,
    scope TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL
);
CREATE INDEX oauth2_grants_by_account ON oauth2_grants (host, username);

CREATE TABLE oauth2_tokens (
    hash TEXT PRIMARY KEY,
    grant_id TEXT NOT NULL REFERENCES oauth2_grants (id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('access', 'refresh')),
    scope TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX oauth2_tokens_by_grant ON oauth2_tokens (grant_id);
CREATE INDEX oauth2_tokens_by_expiry ON oauth2_tokens (expires_at);

CREATE TABLE oauth2_signing_keys (
    kid TEXT PRIMARY KEY,
    algorithm TEXT NOT NULL,
    private_key BLOB NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE oauth2_secrets (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
