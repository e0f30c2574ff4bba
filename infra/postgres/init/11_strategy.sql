-- Strategy runner: how far its decisions have gone, per timeframe and instrument.
-- Written in the same transaction as the orders those bars produced, so after a
-- crash the runner warms its indicators on bars it already decided (no orders)
-- and decides the rest (orders), each bar exactly once in effect.

CREATE TABLE IF NOT EXISTS strategy_progress (
    tf               text NOT NULL,
    instrument_token bigint NOT NULL,
    last_ts          timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tf, instrument_token)
);
