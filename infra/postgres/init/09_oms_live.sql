-- Execution: broker-side orders (Kite's view) and fills.

CREATE TABLE IF NOT EXISTS live_orders (
    broker_order_id    text PRIMARY KEY,
    order_id           text NOT NULL,
    exchange_order_id  text,
    parent_order_id    text,
    status             text NOT NULL,
    status_message     text,
    variety            text NOT NULL DEFAULT 'regular',
    exchange           text,
    tradingsymbol      text,
    instrument_token   bigint,
    transaction_type   text,
    order_type         text,
    product            text,
    validity           text,
    quantity           integer,
    filled_quantity    integer NOT NULL DEFAULT 0,
    pending_quantity   integer,
    cancelled_quantity integer,
    price              double precision,
    trigger_price      double precision,
    average_price      double precision,
    tag                text,
    venue              text NOT NULL DEFAULT 'live',
    order_timestamp    timestamptz,
    exchange_timestamp timestamptz,
    raw                jsonb,
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS live_orders_order_idx ON live_orders (order_id);
CREATE INDEX IF NOT EXISTS live_orders_status_idx ON live_orders (status);

CREATE TABLE IF NOT EXISTS fills (
    fill_id          text PRIMARY KEY,
    order_id         text NOT NULL,
    broker_order_id  text,
    instrument_token bigint NOT NULL,
    side             text NOT NULL CHECK (side IN ('BUY', 'SELL')),
    qty              integer NOT NULL CHECK (qty > 0),
    price            double precision NOT NULL,
    ts               timestamptz NOT NULL,
    venue            text NOT NULL CHECK (venue IN ('paper', 'dry', 'live')),
    strategy         text,
    recorded_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS fills_order_idx ON fills (order_id);
CREATE INDEX IF NOT EXISTS fills_ts_idx ON fills (ts);
