-- Several nodes on one database: which nodes are alive, which node holds
-- each charger, commands routed between nodes, live events fanned out to
-- every node, and once-per-cluster leases for the sweepers. None of these
-- rows is written by the group-commit writer.

-- One row per running node, its heartbeat written every second or so by the
-- database's clock. A node whose heartbeat is older than the node timeout
-- counts as gone, with every charger it held.
CREATE TABLE cluster_nodes (
    node_id      TEXT PRIMARY KEY,
    started_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Live-event listeners (SSE streams, stop requests waiting) on the node:
    -- the other nodes forward events only while someone listens somewhere.
    listeners    INTEGER NOT NULL DEFAULT 0
);

-- Which node holds a charger's socket. `epoch` grows by one on every
-- accepted connection, in the same statement that records the node: a node
-- holding an older epoch has lost the charger and must stop acting for it.
-- `node_id` is NULL once the connection ended.
CREATE TABLE charger_presence (
    charger_id   TEXT PRIMARY KEY,
    node_id      TEXT,
    epoch        BIGINT NOT NULL,
    connected_at TIMESTAMPTZ,
    remote_addr  TEXT,
    subprotocol  TEXT
);
CREATE INDEX charger_presence_node ON charger_presence (node_id);

-- A command for a charger held by another node. NOTIFY carries only the id
-- (payloads are limited to 8,000 bytes; a SendLocalList can exceed that).
CREATE TABLE cluster_commands (
    id          BIGSERIAL PRIMARY KEY,
    charger_id  TEXT NOT NULL,
    target_node TEXT NOT NULL,
    epoch       BIGINT NOT NULL,
    origin_node TEXT NOT NULL,
    action      TEXT NOT NULL,
    payload     TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    claimed_at  TIMESTAMPTZ,
    -- NULL while unanswered; `ok` or the error's name.
    outcome     TEXT,
    answer      TEXT
);
CREATE INDEX cluster_commands_unclaimed ON cluster_commands (target_node) WHERE claimed_at IS NULL;

-- Live events of one node, read by the others (kept a minute).
CREATE TABLE cluster_events (
    id          BIGSERIAL PRIMARY KEY,
    origin_node TEXT NOT NULL,
    name        TEXT NOT NULL,
    user_id     TEXT,
    data        TEXT NOT NULL,
    at          TIMESTAMPTZ NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Work done once per cluster (the sweepers): held by one node until it
-- expires unrenewed.
CREATE TABLE cluster_leases (
    name       TEXT PRIMARY KEY,
    node_id    TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
