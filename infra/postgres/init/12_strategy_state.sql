-- Strategy runner: what each (strategy, instrument) position aims at, beside what fills say.
-- Written in the same transaction as the orders and strategy_progress, so a restart resumes the
-- decided direction, the active stop and the entry time exactly (an exit decided while its entry
-- was still unfilled leaves no order behind, only this row).

CREATE TABLE IF NOT EXISTS strategy_state (
    strategy         text NOT NULL,
    instrument_token bigint NOT NULL,
    direction        smallint NOT NULL CHECK (direction IN (-1, 0, 1)),
    stop             double precision,
    entry_ts         timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (strategy, instrument_token)
);
