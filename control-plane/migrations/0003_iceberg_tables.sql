-- The current Iceberg metadata of each table (tenant, signal): the pointer an Iceberg catalog
-- swaps on commit. The metadata itself is in the lake, under metadata/.
CREATE TABLE weir_iceberg_tables (
    tenant text NOT NULL,
    signal text NOT NULL,
    version bigint NOT NULL,
    metadata_key text NOT NULL,
    updated_at bigint NOT NULL,
    PRIMARY KEY (tenant, signal)
);
