-- Parquet archive ledger (compute/sinks/s3_archiver.py): one row per verified archive of one
-- partition (timeframe x IST trading date) at one location. A row is written only after the
-- object was published and read back (size, SHA-256, parquet row count). Retention deletes
-- database rows only for partitions recorded here, and then sets purged_at / purged_rows.
-- Idempotent: safe to apply on a database that already has these objects.

CREATE TABLE IF NOT EXISTS archived_ranges (
    tf                     text NOT NULL,          -- '1s' ... '60m', or 'ticks'
    trading_date           date NOT NULL,          -- IST calendar date [00:00, 24:00) IST
    location               text NOT NULL,          -- absolute local directory or s3://bucket[/prefix]
    object_key             text NOT NULL,          -- relative to location: bars/tf=1m/date=.../part-0.parquet
    row_count              bigint NOT NULL CHECK (row_count >= 0),
    size_bytes             bigint NOT NULL CHECK (size_bytes >= 0),
    sha256                 text NOT NULL,          -- hex SHA-256 of the object's bytes
    source_table           text NOT NULL,
    source_max_updated_at  timestamptz,            -- newest updated_at archived (change detection)
    min_ts                 timestamptz,
    max_ts                 timestamptz,
    archived_at            timestamptz NOT NULL DEFAULT now(),
    verified_at            timestamptz NOT NULL DEFAULT now(),
    purged_at              timestamptz,            -- when retention deleted the rows from source_table
    purged_rows            bigint,
    PRIMARY KEY (tf, trading_date, location)
);
CREATE INDEX IF NOT EXISTS archived_ranges_date_idx ON archived_ranges (trading_date);
