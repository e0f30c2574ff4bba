// The native 1 s bar core: a C++ port of compute/bar_builder_core.py (BarBuilder) with the per-message
// decode/validation of compute/bar_service.py (BarProcessor.process) in front of it. The Python code
// is the specification; this file mirrors it statement by statement (comments name the Python
// counterpart), so any change there must be made here too (tests/unit/test_native_tick_core.py
// compares the two on generated streams).
//
// No Python objects per tick: messages go bytes -> staged tick (fixed-size struct) -> open bar.
// Object identity in the Python code is replaced by slots with generation counters:
//   * open bars live in a slab (``bars_``); a commit hold (CommitWatermark queue entry, ExtraHold)
//     stores (slot, generation) and is "done" once the slot's generation moved on (the bar was
//     handed out or discarded), which is when Python sets ``ob.done``;
//   * instruments live in a slab too; IdleSchedule heap/touched entries store (slot, generation)
//     and entries of dropped instruments are ignored (in Python they linger harmlessly).
//
// Known, deliberate differences from the Python code (none is visible on realistic input):
//   * "invalid JSON: <text>" rejects carry our own description, not orjson's message text (the
//     accept/reject decision is orjson's; see tick_json.hpp);
//   * restore() takes int64 ``last_ts``/``cum_volume`` (Python: any int) and bar volumes are summed
//     in int64, which could only overflow after restoring an absurd cum_volume below -2**62;
//   * partitions are int32 and offsets int64 (as librdkafka's);
//   * ticks reach the core only through stage(), so BarProcessor's range check always applies
//     (BarBuilder.add_many alone would take a token <= 0 or an exchange_ts before 2000);
//   * a second stage() before feed() discards the first batch's staged ticks.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "raw_batch.hpp"
#include "tick_json.hpp"

namespace tradestack {

namespace tb {
constexpr std::int64_t SECOND_MS = 1000;
constexpr std::int64_t NEVER = std::int64_t(1) << 62;
constexpr int VBITS = 40;
constexpr std::int64_t VMAX = std::int64_t(1) << VBITS;
constexpr std::uint64_t VMASK = static_cast<std::uint64_t>(VMAX) - 1;
constexpr std::uint32_t NONE = UINT32_MAX;
// compute.bar_service bounds
constexpr std::int64_t MIN_TS_MS = 946684800000LL;

// splitmix64's finalizer: every input bit reaches the low bits used by the hash tables.
inline std::uint64_t mix64(std::uint64_t x) {
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

inline std::int64_t floor_mod(std::int64_t a, std::int64_t m) {
    std::int64_t r = a % m;
    return r < 0 ? r + m : r;
}
}  // namespace tb

// A tick's duplicate identity (bar_builder_core._dedup_key): exchange_ts and volume are known ints
// (volume -1 = None); ltp and the six other fields keep their decoded kind so that == is Python's.
// Slot 0 is ltp, then last_qty, oi, bid, ask, bid_qty, ask_qty. K_CANON payloads point into an arena.
struct DedupRec {
    std::int64_t ts;
    std::int64_t vk;
    std::uint64_t pay[7];
    std::uint8_t kind[7];
    bool has_canon;
};

struct StagedTick {
    std::int64_t token;
    double ltp;  // float(ltp)
    std::int32_t partition;
    std::int64_t offset;
    DedupRec rec;
};

struct OpenBar {  // bar_builder_core._OpenBar
    std::int64_t b = 0;
    double open = 0, high = 0, low = 0, close = 0;
    std::int64_t ots = 0, ov = 0, cts = 0, cv = 0;
    std::int64_t ticks = 0;
    std::int32_t part = 0;
    std::int64_t off = 0;
    std::uint32_t gen = 0;  // bumped when the bar is done (handed out or discarded)
    std::vector<DedupRec> recs;  // dedup identities of the accepted ticks
    std::string arena;           // canonical texts of K_CANON values in recs
    std::vector<std::uint32_t> index;  // lazy open-addressing index of recs (rec + 1; 0 = empty)
    std::vector<std::uint64_t> vols;   // ((ts - b) << 40) + cumulative volume; sorted at close
    std::vector<std::int32_t> extra;   // further partitions holding offsets (_extra_parts)
};

struct Instrument {  // bar_builder_core._Instrument
    std::int64_t token = 0;
    std::int32_t part = -1;
    std::int64_t horizon = -tb::NEVER, closed_upto = -tb::NEVER, frontier = -tb::NEVER, restored = -tb::NEVER;
    bool has_baseline = false;
    std::int64_t baseline = 0;
    std::vector<std::pair<std::int64_t, std::uint32_t>> bars;  // open bars (bucket, slot), ascending
    std::uint32_t cur = tb::NONE;
    std::int64_t next_close = tb::NEVER;
    std::int64_t seen = -tb::NEVER;
    bool touched = false, in_heap = false, alive = false;
    std::uint32_t gen = 0;
};

struct ReadyBar {
    std::int64_t token, ts;
    double open, high, low, close;
    std::int64_t volume, ticks;
    bool has_cum;
    std::int64_t cum;
    std::uint32_t slot;
};

struct Reject {
    std::size_t index;
    std::string reason;
};

class TickBarCore {
   public:
    const std::int64_t grace_ms, wall_grace_ms;

    std::int64_t late_ticks = 0, duplicate_ticks = 0, skipped_ticks = 0, accepted_ticks = 0, bars_emitted = 0;
    std::int64_t open_bars = 0;

    TickBarCore(std::int64_t grace, std::int64_t wall_grace)
        : grace_ms(grace), wall_grace_ms(wall_grace), lag_(tb::SECOND_MS + grace) {
        map_.assign(64, Slot{0, tb::NONE});
    }

    // ------------------------------------------------------------------ phase 1: decode + validate
    // BarProcessor.process up to the restorer call, plus BarBuilder.add_many's input checks.
    // Fills ``new_tokens`` (token, partition; first occurrence order) and ``rejects``.
    void stage(const RawBatch& batch, std::int64_t max_ts, std::vector<std::pair<std::int64_t, std::int32_t>>& new_tokens,
               std::vector<Reject>& rejects) {
        using namespace tickjson;
        staged_.clear();
        stage_arena_.clear();
        new_set_.clear();
        std::vector<Reject> schema;  // add_many's rejects come after the decode rejects (as in Python)
        const std::size_t n = batch.msgs.size();
        staged_.reserve(n);
        for (std::size_t i = 0; i < n; ++i) {
            const RawMessage& m = batch.msgs[i];
            if (i + kPrefetch < n) {  // payloads are scattered (Python bytes, Kafka buffers): fetch ahead
                const RawMessage& ahead = batch.msgs[i + kPrefetch];
                if (ahead.data != nullptr) {
                    std::size_t lines = std::min<std::size_t>((ahead.len + 63) / 64, 8);
                    for (std::size_t l = 0; l < lines; ++l) __builtin_prefetch(ahead.data + 64 * l);
                }
            }
            TickParser::Status status = parser_.parse(m.data, m.len);
            if (status == TickParser::INVALID) {
                rejects.push_back({i, std::string("invalid JSON: ") + parser_.err});
                continue;
            }
            if (status == TickParser::NOT_OBJECT) {
                rejects.push_back({i, "message is not a JSON object"});
                continue;
            }
            const Val* f = parser_.f;
            const Val& tok = f[F_TOKEN];
            const Val& ts = f[F_TS];
            const bool tok_int = tok.kind == K_INT || tok.kind == K_U64;
            const bool ts_int = ts.kind == K_INT || ts.kind == K_U64;
            if (tok_int && ts_int) {
                // 0 < tok < 2**63 and MIN_TS_MS <= ts < max_ts (a K_U64 is >= 2**63: out of range)
                if (tok.kind == K_U64 || as_i64(tok.pay) <= 0 || ts.kind == K_U64 || as_i64(ts.pay) < tb::MIN_TS_MS ||
                    as_i64(ts.pay) >= max_ts) {
                    rejects.push_back({i, "schema: instrument_token or exchange_ts out of range"});
                    continue;
                }
                if (win_ahead_ >= 0) {  // BarProcessor's plausibility window (partition watermark at batch start)
                    const std::int64_t tsv = as_i64(ts.pay);
                    std::int64_t lim = win_now_ + win_ahead_;
                    for (const auto& pw : pwm_)
                        if (pw.first == m.partition && pw.second + win_ahead_ > lim) lim = pw.second + win_ahead_;
                    if (tsv > lim) {
                        rejects.push_back({i, "implausible: exchange_ts=" + std::to_string(tsv) + " is more than " +
                                                  std::to_string(win_ahead_) + " ms ahead of max(partition " +
                                                  std::to_string(m.partition) + " watermark, wall clock)"});
                        continue;
                    }
                }
                std::int64_t token = as_i64(tok.pay);
                if (find_inst(token) == tb::NONE) {  // ``tok not in tracked and tok not in new``
                    auto it = std::lower_bound(new_set_.begin(), new_set_.end(), token);
                    if (it == new_set_.end() || *it != token) {
                        new_set_.insert(it, token);
                        new_tokens.emplace_back(token, m.partition);
                    }
                }
            }
            // BarBuilder.add_many's checks, in its order.
            const char* bad = nullptr;
            const Val& ltp = f[F_LTP];
            const Val& vol = f[F_VOLUME];
            if (tok.kind == K_MISSING)
                bad = "bad tick: KeyError('instrument_token')";
            else if (ts.kind == K_MISSING)
                bad = "bad tick: KeyError('exchange_ts')";
            else if (ltp.kind == K_MISSING)
                bad = "bad tick: KeyError('ltp')";
            else if (!tok_int || !ts_int)
                bad = "instrument_token and exchange_ts must be integers";
            else if (ltp.kind != K_DBL && ltp.kind != K_INT && ltp.kind != K_U64)
                bad = "ltp must be a number";
            else if (!(vol.kind <= K_NONE || (vol.kind == K_INT && as_i64(vol.pay) >= 0 && as_i64(vol.pay) < tb::VMAX)))
                bad = "volume must be an integer in [0, 2**40) or null";
            if (bad != nullptr) {
                schema.push_back({i, std::string("schema: ") + bad});
                continue;
            }
            StagedTick t;
            t.token = as_i64(tok.pay);
            t.ltp = ltp.kind == K_DBL ? as_dbl(ltp.pay)
                                      : (ltp.kind == K_U64 ? static_cast<double>(ltp.pay)
                                                           : static_cast<double>(as_i64(ltp.pay)));
            t.partition = m.partition;
            t.offset = m.offset;
            DedupRec& r = t.rec;
            r.ts = as_i64(ts.pay);
            r.vk = vol.kind <= K_NONE ? -1 : as_i64(vol.pay);
            r.has_canon = false;
            static constexpr int kFields[7] = {F_LTP, F_LAST_QTY, F_OI, F_BID, F_ASK, F_BID_QTY, F_ASK_QTY};
            for (int k = 0; k < 7; ++k) {
                const Val& v = f[kFields[k]];
                r.kind[k] = v.kind == K_MISSING ? K_NONE : v.kind;
                r.pay[k] = v.pay;
                if (v.kind == K_CANON) {
                    std::size_t off = stage_arena_.size();
                    const std::uint8_t* p = parser_.span_b[kFields[k]];
                    canon_value(p, parser_.span_e[kFields[k]], stage_arena_);
                    r.pay[k] = (static_cast<std::uint64_t>(off) << 32) | (stage_arena_.size() - off);
                    r.has_canon = true;
                }
            }
            staged_.push_back(t);
        }
        new_set_.clear();
        for (auto& s : schema) rejects.push_back(std::move(s));
        if (win_ahead_ >= 0) {  // the partitions' watermarks move with the accepted (staged) ticks
            for (const StagedTick& t : staged_) {
                bool found = false;
                for (auto& pw : pwm_)
                    if (pw.first == t.partition) {
                        found = true;
                        if (t.rec.ts > pw.second) pw.second = t.rec.ts;
                    }
                if (!found) pwm_.emplace_back(t.partition, t.rec.ts);
            }
        }
    }

    // The plausibility window for the next stage(): wall clock and window (ms); ahead < 0 disables it.
    void set_window(std::int64_t now_ms, std::int64_t ahead_ms) {
        win_now_ = now_ms;
        win_ahead_ = ahead_ms;
    }

    // --------------------------------------------------------------------- phase 2: the bar math
    // BarBuilder.add_many over the staged (valid) ticks, in order.
    void feed() {
        for (const StagedTick& t : staged_) add_one(t);
        staged_.clear();
        stage_arena_.clear();
    }

    // ----------------------------------------------------------------------------------- emission
    // BarBuilder.advance: wall-clock closing (when now_ms is given), then hand out the ready bars.
    void advance(std::optional<std::int64_t> now_ms, std::vector<ReadyBar>& out) {
        if (now_ms) {
            std::int64_t now = *now_ms;
            due(now, due_);
            for (std::uint32_t si : due_) {
                std::int64_t closed;
                if (close_through(si, now - wall_grace_ms - tb::SECOND_MS, closed)) {
                    Instrument& st = insts_[si];
                    if (closed + tb::SECOND_MS > st.frontier) st.frontier = closed + tb::SECOND_MS;
                }
                if (!insts_[si].bars.empty()) schedule(si);
            }
        }
        hand_out(out);
    }

    // BarBuilder.close_all (instruments in insertion order, like the Python dict).
    void close_all(std::vector<ReadyBar>& out) {
        for (std::uint32_t si : order_) {
            Instrument& st = insts_[si];
            if (!st.alive || st.bars.empty()) continue;
            std::int64_t last = st.bars.back().first;
            std::int64_t closed;
            close_through(si, last, closed);
            Instrument& st2 = insts_[si];
            st2.frontier = std::max(st2.frontier, last + tb::SECOND_MS);
        }
        hand_out(out);
    }

    // CommitWatermark.committable (partitions in first-seen order, like the Python dict).
    void committable(std::vector<std::pair<std::int32_t, std::int64_t>>& out) {
        for (PartState& ps : parts_) {
            auto& q = ps.q;
            while (ps.head < q.size() && hold_done(q[ps.head])) ++ps.head;
            if (ps.head > 0 && ps.head * 2 >= q.size()) {  // reclaim the consumed front
                q.erase(q.begin(), q.begin() + static_cast<std::ptrdiff_t>(ps.head));
                ps.head = 0;
            }
            if (q.size() - ps.head > ps.compact_at) {  // emitted holders behind a long-open one
                std::vector<Hold> kept;
                for (std::size_t i = ps.head; i < q.size(); ++i)
                    if (!hold_done(q[i])) kept.push_back(q[i]);
                q.swap(kept);
                ps.head = 0;
                ps.compact_at = std::max<std::size_t>(4096, 2 * q.size());
            }
            out.emplace_back(ps.part, ps.head < q.size() ? q[ps.head].off : ps.last + 1);
        }
    }

    // BarBuilder.restore
    void restore(std::int64_t token, std::int64_t last_ts, std::optional<std::int64_t> cum, std::int32_t partition) {
        std::uint32_t si = find_inst(token);
        if (si == tb::NONE) si = new_inst(token, partition);
        Instrument& st = insts_[si];
        st.restored = std::max(st.restored, last_ts + tb::SECOND_MS);
        st.frontier = std::max(st.frontier, st.restored);
        st.has_baseline = cum.has_value();
        st.baseline = cum.value_or(0);
    }

    // BarBuilder.drop_partitions
    void drop_partitions(const std::vector<std::int32_t>& gone) {
        if (gone.empty()) return;
        auto in_gone = [&](std::int32_t p) { return std::find(gone.begin(), gone.end(), p) != gone.end(); };
        pwm_.erase(std::remove_if(pwm_.begin(), pwm_.end(), [&](const auto& pw) { return in_gone(pw.first); }),
                   pwm_.end());
        bool any = false;
        for (std::uint32_t si : order_) {
            Instrument& st = insts_[si];
            if (!st.alive) continue;
            bool hit = in_gone(st.part);
            for (std::size_t k = 0; !hit && k < st.bars.size(); ++k) {
                const OpenBar& ob = bars_[st.bars[k].second];
                hit = in_gone(ob.part);
                for (std::int32_t x : ob.extra) hit = hit || in_gone(x);
            }
            if (!hit) continue;
            for (auto& kv : st.bars) free_bar(kv.second);
            open_bars -= static_cast<std::int64_t>(st.bars.size());
            st.bars.clear();
            st.cur = tb::NONE;
            remove_inst(si);
            any = true;
        }
        if (any) {
            std::vector<std::uint32_t> order;
            order.reserve(order_.size());
            for (std::uint32_t si : order_)
                if (insts_[si].alive) order.push_back(si);
            order_.swap(order);
        }
        std::size_t w = 0;
        for (std::size_t r = 0; r < ready_.size(); ++r) {
            if (find_inst(ready_[r].token) != tb::NONE)
                ready_[w++] = ready_[r];
            else
                free_bar(ready_[r].slot);
        }
        ready_.resize(w);
        std::vector<PartState> parts;
        for (PartState& ps : parts_)
            if (!in_gone(ps.part)) parts.push_back(std::move(ps));
        parts_.swap(parts);
        last_part_ = 0;
    }

    bool is_tracked(std::int64_t token) const { return find_inst(token) != tb::NONE; }
    std::size_t staged_count() const { return staged_.size(); }

   private:
    static constexpr std::size_t kPrefetch = 8;  // messages ahead
    struct Hold {
        std::int64_t off;
        std::uint32_t slot, gen;
    };
    struct PartState {
        std::int32_t part;
        std::int64_t last;
        std::vector<Hold> q;
        std::size_t head = 0;
        std::size_t compact_at = 4096;
    };
    struct HeapEntry {
        std::int64_t deadline;
        std::uint64_t seq;
        std::uint32_t inst, gen;
        bool operator>(const HeapEntry& o) const {
            return deadline != o.deadline ? deadline > o.deadline : seq > o.seq;
        }
    };
    struct Slot {
        std::int64_t key;
        std::uint32_t val;  // tb::NONE = empty
    };

    const std::int64_t lag_;
    tickjson::TickParser parser_;
    std::vector<StagedTick> staged_;
    std::int64_t win_now_ = 0, win_ahead_ = -1;                  // set_window()
    std::vector<std::pair<std::int32_t, std::int64_t>> pwm_;     // partition -> largest accepted exchange_ts
    std::string stage_arena_;
    std::vector<std::int64_t> new_set_;  // sorted: the tokens in new_tokens

    std::vector<Instrument> insts_;
    std::vector<std::uint32_t> free_insts_;
    std::vector<std::uint32_t> order_;  // live instruments in insertion order (+ dead ones until a drop compacts)
    std::vector<Slot> map_;             // token -> instrument slot (linear probing, backward-shift delete)
    std::size_t map_count_ = 0;

    std::vector<OpenBar> bars_;
    std::vector<std::uint32_t> free_bars_;
    std::vector<ReadyBar> ready_;
    std::vector<PartState> parts_;
    std::size_t last_part_ = 0;

    std::vector<std::pair<std::uint32_t, std::uint32_t>> touched_;  // IdleSchedule.touched
    std::vector<HeapEntry> heap_;                                   // IdleSchedule._heap
    std::uint64_t seq_ = 0;
    std::vector<std::uint32_t> due_;

    // ------------------------------------------------------------------------ token -> slot map
    static std::size_t hash_token(std::int64_t k) {
        return static_cast<std::size_t>(tb::mix64(static_cast<std::uint64_t>(k)));
    }
    std::uint32_t find_inst(std::int64_t token) const {
        std::size_t mask = map_.size() - 1;
        for (std::size_t i = hash_token(token) & mask;; i = (i + 1) & mask) {
            const Slot& s = map_[i];
            if (s.val == tb::NONE) return tb::NONE;
            if (s.key == token) return s.val;
        }
    }
    void map_put(std::int64_t token, std::uint32_t val) {
        if ((map_count_ + 1) * 2 > map_.size()) {
            std::vector<Slot> old(map_.size() * 2, Slot{0, tb::NONE});
            old.swap(map_);
            map_count_ = 0;
            for (const Slot& s : old)
                if (s.val != tb::NONE) map_put(s.key, s.val);
        }
        std::size_t mask = map_.size() - 1;
        std::size_t i = hash_token(token) & mask;
        while (map_[i].val != tb::NONE) i = (i + 1) & mask;
        map_[i] = Slot{token, val};
        ++map_count_;
    }
    void map_erase(std::int64_t token) {
        std::size_t mask = map_.size() - 1;
        std::size_t i = hash_token(token) & mask;
        while (map_[i].key != token || map_[i].val == tb::NONE) {
            if (map_[i].val == tb::NONE) return;
            i = (i + 1) & mask;
        }
        // backward-shift deletion
        std::size_t j = i;
        for (;;) {
            j = (j + 1) & mask;
            if (map_[j].val == tb::NONE) break;
            std::size_t home = hash_token(map_[j].key) & mask;
            // can map_[j] move to i? yes unless home lies cyclically in (i, j]
            bool between = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
            if (!between) {
                map_[i] = map_[j];
                i = j;
            }
        }
        map_[i] = Slot{0, tb::NONE};
        --map_count_;
    }

    std::uint32_t new_inst(std::int64_t token, std::int32_t partition) {
        std::uint32_t si;
        if (!free_insts_.empty()) {
            si = free_insts_.back();
            free_insts_.pop_back();
        } else {
            si = static_cast<std::uint32_t>(insts_.size());
            insts_.emplace_back();
        }
        Instrument& st = insts_[si];
        std::uint32_t gen = st.gen;
        std::vector<std::pair<std::int64_t, std::uint32_t>> bars;
        bars.swap(st.bars);
        st = Instrument();
        st.bars.swap(bars);  // keep the capacity
        st.gen = gen;
        st.token = token;
        st.part = partition;
        st.alive = true;
        map_put(token, si);
        order_.push_back(si);
        return si;
    }
    void remove_inst(std::uint32_t si) {
        Instrument& st = insts_[si];
        map_erase(st.token);
        st.alive = false;
        ++st.gen;  // heap/touched entries of this slot are stale from now on
        free_insts_.push_back(si);
    }

    // --------------------------------------------------------------------------- bars and holds
    std::uint32_t new_bar() {
        if (!free_bars_.empty()) {
            std::uint32_t bi = free_bars_.back();
            free_bars_.pop_back();
            return bi;
        }
        bars_.emplace_back();
        return static_cast<std::uint32_t>(bars_.size() - 1);
    }
    void free_bar(std::uint32_t bi) {  // ``ob.done = True``
        OpenBar& ob = bars_[bi];
        ++ob.gen;
        ob.recs.clear();
        ob.arena.clear();
        ob.index.clear();
        ob.vols.clear();
        ob.extra.clear();
        if (ob.recs.capacity() > 4096) std::vector<DedupRec>().swap(ob.recs);
        if (ob.vols.capacity() > 4096) std::vector<std::uint64_t>().swap(ob.vols);
        if (ob.index.capacity() > 8192) std::vector<std::uint32_t>().swap(ob.index);
        free_bars_.push_back(bi);
    }
    bool hold_done(const Hold& h) const { return bars_[h.slot].gen != h.gen; }

    PartState& part_state(std::int32_t partition) {
        if (last_part_ < parts_.size() && parts_[last_part_].part == partition) return parts_[last_part_];
        for (std::size_t i = 0; i < parts_.size(); ++i) {
            if (parts_[i].part == partition) {
                last_part_ = i;
                return parts_[i];
            }
        }
        parts_.emplace_back();
        parts_.back().part = partition;
        last_part_ = parts_.size() - 1;
        return parts_.back();
    }

    // Append a rec to a bar, moving its canonical texts into the bar's arena.
    void store_rec(OpenBar& bar, const DedupRec& r, const std::string& src) {
        bar.recs.push_back(r);
        if (r.has_canon) {
            DedupRec& s = bar.recs.back();
            for (int k = 0; k < 7; ++k) {
                if (s.kind[k] != tickjson::K_CANON) continue;
                std::size_t off = bar.arena.size();
                std::uint32_t len = static_cast<std::uint32_t>(s.pay[k]);
                bar.arena.append(src, static_cast<std::size_t>(s.pay[k] >> 32), len);
                s.pay[k] = (static_cast<std::uint64_t>(off) << 32) | len;
            }
        }
        if (!bar.index.empty()) index_insert(bar, static_cast<std::uint32_t>(bar.recs.size() - 1));
    }

    static std::uint64_t rec_hash(const DedupRec& r) {  // of (exchange_ts, volume, float(ltp)), like _short_hash
        double d = tickjson::num_as_double(r.kind[0], r.pay[0]);
        std::uint64_t h = tb::mix64(static_cast<std::uint64_t>(r.ts));
        h = tb::mix64(h ^ static_cast<std::uint64_t>(r.vk));
        return tb::mix64(h ^ tickjson::dbl_bits(d));
    }
    void index_insert(OpenBar& bar, std::uint32_t ri) {
        if ((bar.recs.size() + 1) * 2 > bar.index.size()) {
            index_build(bar);
            return;
        }
        std::size_t mask = bar.index.size() - 1;
        std::size_t i = rec_hash(bar.recs[ri]) & mask;
        while (bar.index[i] != 0) i = (i + 1) & mask;
        bar.index[i] = ri + 1;
    }
    void index_build(OpenBar& bar) {
        std::size_t cap = 64;
        while (cap < bar.recs.size() * 4) cap *= 2;
        bar.index.assign(cap, 0);
        std::size_t mask = cap - 1;
        for (std::uint32_t ri = 0; ri < bar.recs.size(); ++ri) {
            std::size_t i = rec_hash(bar.recs[ri]) & mask;
            while (bar.index[i] != 0) i = (i + 1) & mask;
            bar.index[i] = ri + 1;
        }
    }
    static bool rec_eq(const DedupRec& a, const std::string& arena_a, const DedupRec& b, const std::string& arena_b) {
        if (a.ts != b.ts || a.vk != b.vk) return false;
        for (int k = 0; k < 7; ++k)
            if (!tickjson::val_eq(a.kind[k], a.pay[k], arena_a, b.kind[k], b.pay[k], arena_b)) return false;
        return true;
    }
    // bar_builder_core._seen_before: is it a duplicate of an accepted tick of the bar? (Records it if not.)
    bool seen_before(OpenBar& bar, const DedupRec& r) {
        if (bar.index.empty() && bar.recs.size() > 16) index_build(bar);
        if (bar.index.empty()) {
            for (const DedupRec& old : bar.recs)
                if (rec_eq(old, bar.arena, r, stage_arena_)) return true;
        } else {
            std::size_t mask = bar.index.size() - 1;
            for (std::size_t i = rec_hash(r) & mask; bar.index[i] != 0; i = (i + 1) & mask)
                if (rec_eq(bar.recs[bar.index[i] - 1], bar.arena, r, stage_arena_)) return true;
        }
        store_rec(bar, r, stage_arena_);
        return false;
    }

    // ---------------------------------------------------------------------------- add_many body
    void add_one(const StagedTick& t) {
        const std::int32_t partition = t.partition;
        const std::int64_t offset = t.offset;
        const std::int64_t ts = t.rec.ts;
        const std::int64_t vk = t.rec.vk;
        const double ltp = t.ltp;

        PartState& ps = part_state(partition);
        ps.last = offset;  // last[partition] = offset
        std::uint32_t si = find_inst(t.token);
        if (si == tb::NONE) si = new_inst(t.token, partition);
        Instrument& st = insts_[si];
        if (!st.touched) {
            st.touched = true;
            touched_.emplace_back(si, st.gen);
        }
        const std::int64_t b = ts - tb::floor_mod(ts, tb::SECOND_MS);
        if (b <= st.closed_upto || b < st.frontier) {
            if (b < st.restored)
                ++skipped_ticks;
            else
                ++late_ticks;
            if (ts > st.horizon) {  // only possible below a wall-clock frontier: nothing to close
                st.horizon = ts;
                st.closed_upto = ts - lag_;
            }
            return;
        }

        std::uint32_t bi = st.cur;
        if (bi == tb::NONE || bars_[bi].b != b) {
            bi = tb::NONE;
            auto it = st.bars.end();
            while (it != st.bars.begin()) {  // few open bars; usually the newest
                auto prev = it - 1;
                if (prev->first == b) {
                    bi = prev->second;
                    break;
                }
                if (prev->first < b) break;
                it = prev;
            }
            if (bi == tb::NONE) {
                bi = new_bar();
                OpenBar& nb = bars_[bi];
                nb.b = b;
                nb.open = nb.high = nb.low = nb.close = ltp;
                nb.ots = ts;
                nb.ov = vk;
                nb.cts = -tb::NEVER;
                nb.cv = -1;
                nb.ticks = 0;
                nb.part = partition;
                nb.off = offset;
                st.bars.insert(it, {b, bi});
                ++open_bars;
                ps.q.push_back(Hold{offset, bi, nb.gen});  // self._wm.hold(partition, bar)
                st.part = partition;
                if (b + lag_ < st.next_close) st.next_close = b + lag_;
            }
            st.cur = bi;
        }
        OpenBar& bar = bars_[bi];
        if (partition != bar.part) {  // _extra_partition: rare (repartitioning)
            st.part = partition;
            if (std::find(bar.extra.begin(), bar.extra.end(), partition) == bar.extra.end()) {
                bar.extra.push_back(partition);
                ps.q.push_back(Hold{offset, bi, bar.gen});
            }
        }

        const std::int64_t cts = bar.cts;
        if (ts > cts) {
            store_rec(bar, t.rec, stage_arena_);
            bar.close = ltp;
            bar.cts = ts;
            bar.cv = vk;
        } else {
            if (seen_before(bar, t.rec)) {
                ++duplicate_ticks;
                return;
            }
            if (ts == cts && (vk > bar.cv || (vk == bar.cv && ltp >= bar.close))) {
                bar.close = ltp;
                bar.cv = vk;
            } else if (ts < bar.ots || (ts == bar.ots && (vk < bar.ov || (vk == bar.ov && ltp < bar.open)))) {
                bar.open = ltp;
                bar.ots = ts;
                bar.ov = vk;
            }
        }
        ++bar.ticks;
        if (ltp > bar.high)
            bar.high = ltp;
        else if (ltp < bar.low)
            bar.low = ltp;
        if (vk >= 0) bar.vols.push_back((static_cast<std::uint64_t>(ts - b) << tb::VBITS) + static_cast<std::uint64_t>(vk));

        if (ts > st.horizon) {
            st.horizon = ts;
            st.closed_upto = ts - lag_;
            if (ts >= st.next_close) {
                std::int64_t closed;
                close_through(si, ts - lag_, closed);
            }
        }
    }

    // _close_through: close open bars with bucket start <= last_b, ascending. Returns whether any
    // closed (``closed`` = the last start).
    bool close_through(std::uint32_t si, std::int64_t last_b, std::int64_t& closed) {
        Instrument& st = insts_[si];
        bool any = false;
        std::size_t k = 0;
        const std::size_t n = st.bars.size();
        for (; k < n; ++k) {
            const std::int64_t b = st.bars[k].first;
            if (b > last_b) break;
            const std::uint32_t bi = st.bars[k].second;
            OpenBar& ob = bars_[bi];
            std::int64_t volume = 0;
            auto& vols = ob.vols;
            if (!vols.empty()) {
                if (vols.size() > 1 && !std::is_sorted(vols.begin(), vols.end())) std::sort(vols.begin(), vols.end());
                std::int64_t prev = st.has_baseline ? st.baseline : static_cast<std::int64_t>(vols[0] & tb::VMASK);
                for (std::uint64_t packed : vols) {
                    std::int64_t v = static_cast<std::int64_t>(packed & tb::VMASK);
                    if (v > prev) volume += v - prev;
                    prev = v;  // a drop (reset) contributes 0 and becomes the new baseline
                }
                st.baseline = prev;
                st.has_baseline = true;
            }
            accepted_ticks += ob.ticks;
            ready_.push_back(ReadyBar{st.token, b, ob.open, ob.high, ob.low, ob.close, volume, ob.ticks,
                                      st.has_baseline, st.baseline, bi});
            if (st.cur == bi) st.cur = tb::NONE;
            closed = b;
            any = true;
        }
        if (k > 0) {
            st.bars.erase(st.bars.begin(), st.bars.begin() + static_cast<std::ptrdiff_t>(k));
            open_bars -= static_cast<std::int64_t>(k);
        }
        st.next_close = st.bars.empty() ? tb::NEVER : st.bars.front().first + lag_;
        return any;
    }

    void hand_out(std::vector<ReadyBar>& out) {
        for (const ReadyBar& r : ready_) free_bar(r.slot);  // ob.done = True
        bars_emitted += static_cast<std::int64_t>(ready_.size());
        out.insert(out.end(), ready_.begin(), ready_.end());
        ready_.clear();
    }

    // ----------------------------------------------------------------------------- IdleSchedule
    bool live(std::uint32_t si, std::uint32_t gen) const { return insts_[si].alive && insts_[si].gen == gen; }
    void heap_push(std::int64_t deadline, std::uint32_t si) {
        heap_.push_back(HeapEntry{deadline, ++seq_, si, insts_[si].gen});
        std::push_heap(heap_.begin(), heap_.end(), std::greater<HeapEntry>());
    }
    void schedule(std::uint32_t si) {
        Instrument& st = insts_[si];
        if (st.in_heap) return;
        if (!st.bars.empty()) {
            std::int64_t first_end = st.bars.front().first + tb::SECOND_MS;
            heap_push(std::max(first_end, st.seen) + wall_grace_ms, si);
            st.in_heap = true;
        }
    }
    void due(std::int64_t now, std::vector<std::uint32_t>& out) {
        out.clear();
        for (const auto& tg : touched_) {
            if (!live(tg.first, tg.second)) continue;  // dropped since: its Python twin is inert
            Instrument& st = insts_[tg.first];
            st.seen = now;
            st.touched = false;
            if (!st.in_heap) {
                heap_push(now + wall_grace_ms, tg.first);
                st.in_heap = true;
            }
        }
        touched_.clear();
        while (!heap_.empty() && heap_.front().deadline <= now) {
            std::pop_heap(heap_.begin(), heap_.end(), std::greater<HeapEntry>());
            HeapEntry top = heap_.back();
            heap_.pop_back();
            if (!live(top.inst, top.gen)) continue;
            Instrument& st = insts_[top.inst];
            st.in_heap = false;
            if (st.bars.empty()) continue;
            std::int64_t first_end = st.bars.front().first + tb::SECOND_MS;
            if (std::max(first_end, st.seen) + wall_grace_ms <= now)
                out.push_back(top.inst);
            else
                schedule(top.inst);
        }
    }
};

}  // namespace tradestack
