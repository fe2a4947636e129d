-- Weir control plane: the segment index, compaction leases and the fleet view.
CREATE TABLE weir_segments (
    id              uuid PRIMARY KEY,
    tenant          text    NOT NULL,
    signal          text    NOT NULL,
    object_key      text    NOT NULL,
    partition       text    NOT NULL,
    min_timestamp   bigint  NOT NULL,
    max_timestamp   bigint  NOT NULL,
    row_count       bigint  NOT NULL,
    bytes           bigint  NOT NULL,
    services        text[]  NOT NULL,
    schema_version  integer NOT NULL,
    agent_id        text    NOT NULL,
    created_at      bigint  NOT NULL,
    state           text    NOT NULL CHECK (state IN ('active', 'compacted', 'deleted')),
    replaced_by     uuid,
    retired_at      bigint,
    purged_at       bigint,
    lease_id        uuid,
    lease_expires_at bigint
);

-- Listing: active segments of a tenant (and signal) in max_timestamp order.
CREATE INDEX weir_segments_list ON weir_segments (tenant, signal, max_timestamp, id)
    WHERE state = 'active';
-- Planning: active segments of a partition.
CREATE INDEX weir_segments_plan ON weir_segments (tenant, signal, partition, schema_version, min_timestamp)
    WHERE state = 'active';
-- Service filter.
CREATE INDEX weir_segments_services ON weir_segments USING gin (services);
-- Garbage queue: retired segments whose objects are not deleted yet.
CREATE INDEX weir_segments_garbage ON weir_segments (retired_at)
    WHERE state <> 'active' AND purged_at IS NULL;

CREATE TABLE weir_compaction_leases (
    id              uuid PRIMARY KEY,
    agent_id        text    NOT NULL,
    tenant          text    NOT NULL,
    signal          text    NOT NULL,
    partition       text    NOT NULL,
    schema_version  integer NOT NULL,
    inputs          uuid[]  NOT NULL,
    expires_at      bigint  NOT NULL,
    created_at      bigint  NOT NULL,
    committed_at    bigint
);

CREATE TABLE weir_agents (
    agent_id    text PRIMARY KEY,
    status      jsonb  NOT NULL,
    last_seen   bigint NOT NULL
);
