-- Base trading schema: instrument master and bars per timeframe.
-- Idempotent: safe to apply on a database that already has these objects.

CREATE TABLE IF NOT EXISTS instruments (
    instrument_token  bigint PRIMARY KEY,
    exchange_token    bigint,
    tradingsymbol     text NOT NULL,
    name              text,
    last_price        double precision,
    expiry            date,
    strike            double precision,
    tick_size         double precision NOT NULL DEFAULT 0.05,
    lot_size          integer NOT NULL DEFAULT 1,
    instrument_type   text,
    segment           text,
    exchange          text NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS instruments_symbol_idx ON instruments (exchange, tradingsymbol);

DO $$
DECLARE
    tf text;
BEGIN
    FOREACH tf IN ARRAY ARRAY['1s', '1m', '3m', '5m', '15m', '30m', '60m'] LOOP
        EXECUTE format($f$
            CREATE TABLE IF NOT EXISTS bars_%s (
                instrument_token bigint NOT NULL,
                ts               timestamptz NOT NULL,
                open             double precision NOT NULL,
                high             double precision NOT NULL,
                low              double precision NOT NULL,
                close            double precision NOT NULL,
                volume           bigint NOT NULL DEFAULT 0,
                ticks            integer NOT NULL DEFAULT 0,
                cum_volume       bigint,
                updated_at       timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (instrument_token, ts)
            )$f$, tf);
        EXECUTE format('CREATE INDEX IF NOT EXISTS bars_%s_ts_idx ON bars_%s (ts)', tf, tf);
    END LOOP;
END
$$;
