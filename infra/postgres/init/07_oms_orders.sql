-- OMS core: orders (one row per order_id, current state) and an audit row per transition.

CREATE TABLE IF NOT EXISTS orders (
    order_id         text PRIMARY KEY,
    strategy         text NOT NULL,
    instrument_token bigint NOT NULL,
    symbol           text NOT NULL,
    exchange         text NOT NULL,
    side             text NOT NULL CHECK (side IN ('BUY', 'SELL')),
    order_type       text NOT NULL CHECK (order_type IN ('MARKET', 'LIMIT', 'SL', 'SL-M')),
    product          text NOT NULL CHECK (product IN ('MIS', 'CNC', 'NRML')),
    price            double precision,
    trigger_price    double precision,
    stop_loss        double precision,
    qty              integer,
    filled_qty       integer NOT NULL DEFAULT 0,
    avg_price        double precision,
    tf               text,
    status           text NOT NULL DEFAULT 'NEW',
    status_detail    text,
    broker_order_id  text,
    venue            text,
    signal_ts        timestamptz,
    created_ts       timestamptz,
    risk             jsonb,
    budget           jsonb,
    extra            jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS orders_status_idx ON orders (status);
CREATE INDEX IF NOT EXISTS orders_strategy_idx ON orders (strategy, created_ts);
CREATE INDEX IF NOT EXISTS orders_token_idx ON orders (instrument_token, created_ts);

CREATE TABLE IF NOT EXISTS order_audit (
    id           bigserial PRIMARY KEY,
    order_id     text NOT NULL,
    from_status  text,
    to_status    text NOT NULL,
    ts           timestamptz NOT NULL,
    source       text NOT NULL,
    detail       text,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    -- A replayed transition (same order, same states, same time, same source) is stored once.
    UNIQUE (order_id, from_status, to_status, ts, source)
);
CREATE INDEX IF NOT EXISTS order_audit_order_idx ON order_audit (order_id, ts);
