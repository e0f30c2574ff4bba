-- Per-instrument resume point of each bar producer: the last durable bar's start
-- and the cumulative day volume after it. Written in the same transaction as
-- the bars, read on partition assignment so a restarted builder skips replayed
-- ticks of buckets already emitted and continues the volume delta chain exactly.

CREATE TABLE IF NOT EXISTS bar_state (
    tf               text NOT NULL,
    instrument_token bigint NOT NULL,
    last_ts          timestamptz NOT NULL,
    cum_volume       bigint,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tf, instrument_token)
);
